"""``rubix-integration pins …``: the pin state (ipfs-cluster's pinset) and its export format."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from rubix_integration.cli._common import Group, json_option, make_manager, store_option

if TYPE_CHECKING:
    from rubix_integration.pins import PinStateBackend

__all__ = ["pins"]


def _state_option(func: Any) -> Any:
    return click.option(
        "--state", "state_url", metavar="URL", default=None,
        help="Pin state URL: sqlite:///…, postgresql://…, or a plugin's (scylla://host/keyspace"
             "?config=FILE). Default: the pin state in the store (--store).")(func)


@contextmanager
def _opened(store_url: str | None, state_url: str | None) -> Iterator[PinStateBackend]:
    ctx = click.get_current_context()
    log_json = bool(ctx.find_root().meta.get("pins.log_json"))
    if state_url is None:
        manager = make_manager(store_url=store_url)
        try:
            state = manager.pins
            state.log_json = log_json
            yield state
        finally:
            manager.close()
        return
    yield_from = _open_url(state_url, log_json=log_json)
    try:
        yield yield_from
    finally:
        yield_from.close()


def _open_url(url: str, *, log_json: bool = False) -> PinStateBackend:
    from rubix_integration._plugins import Plugins
    from rubix_integration._settings import resolve_settings
    from rubix_integration.pins import open_pin_state

    plugins = Plugins(load_plugins=resolve_settings().load_plugins)
    return open_pin_state(url, plugins=plugins, log_json=log_json)


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Log one line per operation on stderr.")
@click.option("--log-json", is_flag=True, help="Log operations as JSON (implies --debug).")
@click.pass_context
def pins(ctx: click.Context, debug: bool, log_json: bool) -> None:
    """The pin state: ipfs-cluster's pinset (add, ls, rm, export, import, migrate, apply)."""
    ctx.find_root().meta["pins.log_json"] = log_json
    if debug or log_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("rubix_integration.pins")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


@pins.command("export")
@store_option
@_state_option
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write to FILE instead of standard output.")
def export(store_url: str | None, state_url: str | None, path: Path | None) -> None:
    """Write the state as `ipfs-cluster-service state export` does: one JSON pin per line."""
    from rubix_integration.pins import export_pins

    with _opened(store_url, state_url) as state:
        if path is None:
            export_pins(state, sys.stdout)
            return
        temp = path.with_name(path.name + ".partial")
        with temp.open("w", encoding="utf-8", newline="\n") as fp:
            count = export_pins(state, fp)
        temp.replace(path)
        click.echo(f"exported {count} pins to {path}", err=True)


def _peers(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _input(source: str) -> AbstractContextManager[IO[str]]:
    """Standard input for ``-`` (left open), else the file ``source``, opened for reading."""
    if source == "-":
        return nullcontext(sys.stdin)
    try:
        return open(source, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror}") from exc


@pins.command("import")
@store_option
@_state_option
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option("--replace", is_flag=True, help="Remove the pins the file does not hold.")
@click.option("--rmin", type=int, default=None, help="Set every pin's replication_factor_min.")
@click.option("--rmax", type=int, default=None, help="Set every pin's replication_factor_max.")
@click.option("--allocations", default=None, metavar="PEER,PEER",
              help="Set every pin's allocations.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=1000,
              show_default=True, help="Pins per atomic write.")
@click.option("--skip-bad", is_flag=True,
              help="Report bad lines and go on, exit status 2 (default: stop at the first "
                   "with status 1, writing nothing from a file, nothing of the batch holding "
                   "it from standard input).")
def import_(store_url: str | None, state_url: str | None, source: str, replace: bool,
            rmin: int | None, rmax: int | None, allocations: str | None, batch_size: int,
            skip_bad: bool) -> None:
    """Read `state export` NDJSON (current or 2021 shape) into the state."""
    from rubix_integration.pins import import_pins

    with _opened(store_url, state_url) as state, _input(source) as fp:
        result = import_pins(state, fp, replace_all=replace, rmin=rmin, rmax=rmax,
                             allocations=_peers(allocations), batch_size=batch_size,
                             skip_bad=skip_bad)
    for line, why in result.skipped:
        click.echo(f"skipped line {line}: {why}", err=True)
    click.echo(f"imported {result.added} pins"
               + (f", removed {result.removed}" if replace else "")
               + (f", skipped {len(result.skipped)} lines" if result.skipped else ""), err=True)
    if result.skipped:
        sys.exit(2)


@pins.command("add")
@store_option
@_state_option
@click.argument("cid")
@click.option("--name", default="", help="The pin's name.")
@click.option("--rmin", type=int, default=0, help="replication_factor_min (-1: everywhere).")
@click.option("--rmax", type=int, default=0, help="replication_factor_max (-1: everywhere).")
@click.option("--allocations", default=None, metavar="PEER,PEER", help="Peers to pin it on.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE",
              help="A metadata entry (repeatable).")
@click.option("--expire-at", default=None, metavar="TIME",
              help="When the pin expires (RFC 3339, e.g. 2030-01-01T00:00:00Z).")
@click.option("--direct", is_flag=True, help="Pin the block only (max_depth 0).")
def add(store_url: str | None, state_url: str | None, cid: str, name: str, rmin: int, rmax: int,
        allocations: str | None, metadata: tuple[str, ...], expire_at: str | None,
        direct: bool) -> None:
    """Add (or replace) the pin of CID."""
    from rubix_integration.pins import new_pin

    meta: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        meta[key] = value
    pin = new_pin(cid, name=name, rmin=rmin, rmax=rmax, allocations=_peers(allocations) or (),
                  metadata=meta, expire_at=expire_at, direct=direct)
    with _opened(store_url, state_url) as state:
        state.add(pin)
    click.echo(pin.cid)


@pins.command("ls")
@store_option
@_state_option
@json_option
def ls(store_url: str | None, state_url: str | None, as_json: bool) -> None:
    """List every pin (streamed): CID, mode and name, or one JSON pin per line."""
    with _opened(store_url, state_url) as state:
        for pin in state.list():
            if as_json:
                click.echo(pin.to_ndjson())
            else:
                click.echo(f"{pin.cid}  {pin.mode:<9}  {pin.name}")


@pins.command("get")
@store_option
@_state_option
@click.argument("cid")
def get(store_url: str | None, state_url: str | None, cid: str) -> None:
    """Print the pin of CID as JSON (exit 1 when it is not part of the pinset)."""
    with _opened(store_url, state_url) as state:
        click.echo(json.dumps(state.get(cid).to_json(), indent=2, ensure_ascii=False))


@pins.command("rm")
@store_option
@_state_option
@click.argument("cid")
def rm(store_url: str | None, state_url: str | None, cid: str) -> None:
    """Remove the pin of CID (no error when there is none)."""
    with _opened(store_url, state_url) as state:
        state.rm(cid)


@pins.command("health")
@store_option
@_state_option
def health(store_url: str | None, state_url: str | None) -> None:
    """Write, read and remove a test pin; exit 1 with the cause when that fails."""
    with _opened(store_url, state_url) as state:
        took = state.health()
        click.echo(f"ok: {state.describe()} answered in {took * 1000:.1f} ms")


@pins.command("migrate")
@click.option("--from", "source_url", required=True, metavar="URL", help="State to read.")
@click.option("--to", "dest_url", required=True, metavar="URL", help="State to write.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=1000,
              show_default=True, help="Pins per atomic write.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where progress is kept for a resumed run (default: in the data dir).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def migrate(source_url: str, dest_url: str, batch_size: int, checkpoint: Path | None,
            no_progress: bool) -> None:
    """Copy every pin from one state to another in atomic batches; re-running after a crash
    resumes; the final count and checksum of both are compared."""
    import hashlib

    from rubix_integration._settings import resolve_settings
    from rubix_integration.pins._migrate import migrate_state

    if checkpoint is None:
        digest = hashlib.sha256(f"{source_url}\n{dest_url}".encode()).hexdigest()[:16]
        checkpoint = resolve_settings().data_dir / "pin-migrations" / f"{digest}.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    source = _open_url(source_url)
    try:
        dest = _open_url(dest_url)
        try:
            total = source.count()
            with click.progressbar(length=total, label="migrating pins", file=sys.stderr,
                                   hidden=no_progress or not sys.stderr.isatty()) as bar:
                result = migrate_state(source, dest, batch_size=batch_size,
                                       checkpoint=checkpoint, progress=bar.update)
        finally:
            dest.close()
    finally:
        source.close()
    resumed = f" (resumed after {result.resumed_after})" if result.resumed_after else ""
    click.echo(f"copied {result.copied} pins in {result.batches} batches{resumed}; both states "
               f"hold {result.destination.count} pins, checksum {result.destination.checksum}")


@pins.command("apply")
@store_option
@_state_option
@click.option("--ipfs", "ipfs_mode", metavar="MODE", default=None,
              help="IPFS backend to pin on (default: RUBIX_IPFS, else auto).")
@click.option("--peer", default=None, metavar="PEER_ID",
              help="Pin what is allocated to this peer (and unallocated pins); default: all.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds allowed per CID.")
@click.option("--dry-run", is_flag=True, help="Only say what would be pinned.")
@json_option
def apply(store_url: str | None, state_url: str | None, ipfs_mode: str | None,
          peer: str | None, timeout: float, dry_run: bool, as_json: bool) -> None:
    """Make the IPFS backend pin what the state lists (exit 1 when some cannot be fetched)."""
    from rubix_integration.pins._apply import apply_state

    manager = make_manager(store_url=store_url, ipfs_mode=ipfs_mode)
    try:
        ipfs = manager.ipfs()
        if state_url is None:
            result = apply_state(manager.pins, ipfs, peer=peer, timeout=timeout, dry_run=dry_run)
        else:
            with _opened(store_url, state_url) as state:
                result = apply_state(state, ipfs, peer=peer, timeout=timeout, dry_run=dry_run)
    finally:
        manager.close()
    if as_json:
        click.echo(json.dumps({"pinned": result.pinned, "present": result.present,
                               "failed": [{"cid": c, "error": e} for c, e in result.failed]},
                              indent=2))
    else:
        verb = "would pin" if dry_run else "pinned"
        click.echo(f"{verb} {len(result.pinned)}, already held {len(result.present)}, "
                   f"failed {len(result.failed)}")
        for cid, why in result.failed:
            click.echo(f"cannot pin {cid}: {why}", err=True)
    if result.failed:
        sys.exit(1)


@pins.command("metrics")
@store_option
@_state_option
def metrics(store_url: str | None, state_url: str | None) -> None:
    """Count the pins and print the pin state metrics in Prometheus' text format."""
    from rubix_integration.pins._metrics import exposition, set_pin_count

    with _opened(store_url, state_url) as state:
        set_pin_count(state.name, state.count())
        click.echo(exposition(), nl=False)
