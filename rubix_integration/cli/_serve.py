"""``rubix-integration serve``: run this node's replication endpoints and sync loop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from rubix_integration.cli._common import make_manager, store_option
from rubix_integration.errors import ConfigError

__all__ = ["serve"]


def _read_peers_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--peers-file {path}: cannot read it as JSON ({type(exc).__name__})",
                          name="--peers-file", value=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"--peers-file {path}: expected an object with 'peers' and "
                          "'credentials'", name="--peers-file", value=str(path))
    return data


@click.command("serve")
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--node-id", default=None, help="Name this store's node (at most 36 characters).")
@click.option("--peer", "peers", multiple=True, metavar="URL",
              help="A peer's base URL, e.g. http://127.0.0.1:8002 (repeatable).")
@click.option("--discovery", type=click.Choice(["manual", "mdns"]), default="manual",
              show_default=True, help="Find peers by zeroconf too (mdns), or only as given.")
@click.option("--priority", type=int, default=0, show_default=True,
              help="This node's priority: breaks ties between equal clock stamps.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=30.0, show_default=True,
              help="Seconds between periodic syncs.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(1, 10_000), default=5000,
              show_default=True,
              help="While a peer's feed has more pages, pages grow up to this many rows.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds a request to a peer may take.")
@click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True)
@click.option("--max-drift", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Refuse changes stamped more than this many seconds ahead of our clock.")
@click.option("--retention", type=click.FloatRange(min=0), default=7 * 86400.0,
              show_default=True,
              help="Seconds a silent peer holds back tombstone collection; after that it must "
                   "resync fully.")
@click.option("--peers-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON: {'peers': [{url, peer_id, token|secret, priority}], "
                                 "'credentials': [{peer_id, role, token|secret}]}.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM) ...")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="... and this private key (PEM).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Verify HTTPS peers against this CA bundle (default: the system's).")
def serve(store_url: str | None, host: str, port: int, node_id: str | None,
          peers: tuple[str, ...], discovery: str, priority: int, interval: float,
          batch_size: int, max_batch_size: int, timeout: float, retries: int, max_drift: float,
          retention: float, peers_file: Path | None, tls_cert: str | None, tls_key: str | None,
          ca_file: str | None) -> None:
    """Serve the /p2p replication endpoints of this node's store and sync with its peers."""
    import asyncio
    import contextlib

    import uvicorn
    from starlette.applications import Starlette

    from rubix_integration.replication import Credential, SyncConfig
    from rubix_integration.replication.discovery import Discovery

    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together", name="--tls-cert",
                          value=None)
    extra = _read_peers_file(peers_file) if peers_file else {}
    credentials = [Credential(**c) for c in extra.get("credentials", [])]
    peer_specs: list[str | dict[str, Any]] = [*peers, *extra.get("peers", [])]
    manager = make_manager(store_url=store_url)
    replication = manager.replication
    if node_id:
        replication.set_node_id(node_id)
    replication.configure(
        name=node_id, priority=priority, peers=peer_specs, credentials=credentials,
        config=SyncConfig(interval_s=interval, batch_size=batch_size,
                          max_batch_size=max_batch_size, max_retries=retries,
                          timeout_s=timeout, verify=ca_file or True),
        max_drift_ms=int(max_drift * 1000), retention_s=retention)
    node = replication.replicator.node_id
    scheme = "https" if tls_cert else "http"
    finder: list[Discovery] = []

    def found(announcement: Any) -> None:
        replication.add_peer(announcement.url, peer_id=announcement.node_id)

    async def announce_when_listening() -> None:
        # the server listens only once the start-up below is done: tell the peers to pull
        # from this node then, not before (they would find the port closed and back off)
        loop = asyncio.get_running_loop()
        target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        deadline = loop.time() + 30
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(target, port), 1)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.01)
                continue
            writer.close()
            break
        replication.changed()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(replication.start, announce=False)
        announcing = asyncio.ensure_future(announce_when_listening())
        if discovery == "mdns":
            # announce on the bound address only (all interfaces when bound to all)
            only = None if host in ("0.0.0.0", "::") else [host]
            finder.append(Discovery(node, host, port, found, scheme=scheme, interfaces=only))
            await asyncio.to_thread(finder[0].start)
        try:
            yield
        finally:
            announcing.cancel()
            for f in finder:
                await asyncio.to_thread(f.stop)
            await asyncio.to_thread(replication.stop)
            await asyncio.to_thread(manager.close)

    app = Starlette(routes=manager.plugins.routes(manager), lifespan=lifespan)
    click.echo(f"node {node} serving {scheme}://{host}:{port}/p2p "
               f"({len(peer_specs)} peer(s), discovery {discovery})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=tls_cert,
                ssl_keyfile=tls_key, timeout_graceful_shutdown=5)

