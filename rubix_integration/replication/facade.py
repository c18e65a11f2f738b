"""``Manager.replication``: one object a host app configures, mounts and starts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs.hlc import MAX_DRIFT_MS, HybridClock, wall_ms
from rubix_integration.replication.auth import Authenticator, Credential
from rubix_integration.replication.engine import DEFAULT_RETENTION_S, Replicator
from rubix_integration.replication.service import ReplicationService, SyncConfig
from rubix_integration.replication.tables import ReplicatedTables

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

    from rubix_integration.stores.base import Store

__all__ = ["CLOCK_OFFSET_ENV", "Replication"]

#: Fault injection for tests of clock skew: milliseconds added to this node's wall clock.
CLOCK_OFFSET_ENV = "RUBIX_REPLICATION_CLOCK_OFFSET_MS"


class Replication:
    """Replication of one store: the tables, the merge engine, peers and the ``/p2p`` routes.

    Configure with :meth:`configure` (before :meth:`start`), register host tables with
    :meth:`register_table`, mount :meth:`routes` in an ASGI app (or serve :meth:`app`), call
    :meth:`start` / :meth:`stop`, and :meth:`changed` after writing replicated rows.
    """

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self.tables = ReplicatedTables()
        self.name: str | None = None
        self.priority = 0
        self.config = SyncConfig()
        self.max_drift_ms = MAX_DRIFT_MS
        self.retention_s = DEFAULT_RETENTION_S
        self.auth = Authenticator()
        self._peers: list[dict[str, Any]] = []
        self._offset_ms = int(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0)
        self._replicator: Replicator | None = None
        self._service: ReplicationService | None = None

    # --- configuration -------------------------------------------------------------------------

    def configure(self, *, name: str | None = None, priority: int | None = None,
                  peers: Iterable[str | Mapping[str, Any]] = (),
                  credentials: Iterable[Credential] = (), config: SyncConfig | None = None,
                  max_drift_ms: int | None = None, retention_s: float | None = None,
                  clock_offset_ms: int | None = None) -> Replication:
        """Set what :meth:`start` uses. ``peers`` are URLs or mappings of
        :meth:`ReplicationService.add_peer` arguments (``url``, ``peer_id``, ``token``, …)."""
        if self._service is not None and self._service.running:
            raise RuntimeError("configure replication before starting it")
        if name is not None:
            self.name = name
        if priority is not None:
            self.priority = priority
        if config is not None:
            self.config = config
        if max_drift_ms is not None:
            self.max_drift_ms = max_drift_ms
        if retention_s is not None:
            self.retention_s = retention_s
        if clock_offset_ms is not None:
            self._offset_ms = clock_offset_ms
        for cred in credentials:
            self.auth.add(cred)
        for peer in peers:
            self._peers.append({"url": peer} if isinstance(peer, str) else dict(peer))
        self._replicator = None
        self._service = None
        return self

    def register_table(self, table: sa.Table | type[Any]) -> sa.Table:
        """Replicate a host app's table (it carries the columns of ``ReplicatedMixin``)."""
        return self.tables.register(table)

    def set_node_id(self, node_id: str) -> None:
        """Name this store's node ``node_id`` (at most 36 characters) from now on."""
        from rubix_integration.stores.models import META_TABLE

        if not 0 < len(node_id) <= 36:
            raise ValueError(f"a node id has 1 to 36 characters: {node_id!r}")
        store = self._store()
        store.node_id  # noqa: B018  (creates the schema and the row when missing)
        with store.transaction() as conn:
            conn.execute(sa.update(META_TABLE).where(META_TABLE.c.key == "node_id")
                         .values(value=node_id))
        store._node_id_cache = node_id

    # --- parts ---------------------------------------------------------------------------------

    def _wall(self) -> int:
        return wall_ms() + self._offset_ms

    @property
    def replicator(self) -> Replicator:
        """The merge engine on the store."""
        if self._replicator is None:
            store = self._store()
            if self._offset_ms:
                from rubix_integration.stores.replicated import StoreClock

                store._store_clock = StoreClock(HybridClock(self._wall))
            self._replicator = Replicator(
                store, self.tables, priority=self.priority, max_drift_ms=self.max_drift_ms,
                retention_s=self.retention_s, wall=self._wall)
        return self._replicator

    @property
    def service(self) -> ReplicationService:
        """The peers and the sync loop."""
        if self._service is None:
            self._service = ReplicationService(self.replicator, name=self.name,
                                               config=self.config)
        return self._service

    # --- lifetime ------------------------------------------------------------------------------

    def start(self, *, announce: bool = True) -> None:
        """Start syncing: the configured peers are added and pulled from; with ``announce``,
        they are told to pull from this node at once (else call :meth:`changed` once the
        routes answer)."""
        svc = self.service
        if svc.running:
            return
        # the peers are all recorded before any pull starts: pulls keep the threads busy
        svc.start(workers=False)
        for peer in self._peers:
            args = dict(peer)
            svc.call(svc.add_peer(str(args.pop("url")), pull=False, **args), timeout=30)
        svc.call(svc.start_workers(), timeout=30)
        # peers pull what changed here while this node was away at once, not at their next
        # periodic sync
        if announce:
            svc.local_change()

    def stop(self) -> None:
        """Stop syncing (idempotent)."""
        if self._service is not None:
            self._service.stop()

    @property
    def running(self) -> bool:
        """Whether syncing runs."""
        return self._service is not None and self._service.running

    def changed(self, tables: Iterable[str] | None = None) -> None:
        """Tell the peers this node's replicated rows changed, so they pull at once."""
        if self.running:
            self.service.local_change(tables)

    def sync_now(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Pull from every peer now; the history records."""
        svc = self.service
        return svc.call(svc.sync_all(reason="manual"), timeout=timeout)

    def add_peer(self, url: str, **options: Any) -> dict[str, Any]:
        """Add a peer to the running service; its public view."""
        svc = self.service
        peer = svc.call(svc.add_peer(url, **options), timeout=60)
        return peer.as_dict(svc._active_window)

    def status(self) -> dict[str, Any]:
        """The ``/p2p/status`` fields."""
        return self.service.status()

    # --- HTTP ----------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The ``/p2p`` routes, for a host app to mount."""
        from rubix_integration.replication.app import build_routes

        return build_routes(lambda: self.service, lambda: self.auth)

    def app(self, *, extra_routes: Iterable[BaseRoute] = ()) -> Starlette:
        """A Starlette app serving the routes (and ``extra_routes``), syncing while it runs."""
        from starlette.applications import Starlette

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            import asyncio

            await asyncio.to_thread(self.start)
            try:
                yield
            finally:
                await asyncio.to_thread(self.stop)

        return Starlette(routes=[*self.routes(), *extra_routes], lifespan=lifespan)
