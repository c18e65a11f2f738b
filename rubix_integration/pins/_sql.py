"""The pin state kept in a store's ``pins`` table: the embedded (SQLite) and PostgreSQL backends.

Writes go through the store layer: added pins, as row tuples, go to
:meth:`~rubix_integration.stores.base.Store.upsert_stamped`, which gives each row its origin
node and change version and upserts the batch (one ``executemany`` of a prepared
``INSERT … ON CONFLICT`` on SQLite, COPY to a staging table on PostgreSQL); removals are
tombstones, stamped by :meth:`~rubix_integration.stores.base.Store.stamp`. ``list`` streams
(``stream_results``: a server-side cursor on PostgreSQL, SQLite's own lazy cursor), its buffer
capped at a page, ordered by CID.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.pins._pin import _TYPE_NAMES, PIN_TYPES, Pin
from rubix_integration.pins._state import PinStateBackend
from rubix_integration.pins.models import PIN_COLUMNS, PIN_TABLE

if TYPE_CHECKING:
    from rubix_integration.stores.base import Store

__all__ = ["PinState", "PostgreSQLPinState", "SQLitePinState"]

_NEEDS = ("upsert", "change_version")


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _to_pin(row: Sequence[Any]) -> Pin:
    (cid, kind, allocations, depth, reference, timestamp, rmin, rmax, name, shard, user,
     expire, meta, update, origins) = row
    return Pin(cid, _TYPE_NAMES[kind], tuple(allocations.split(",")) if allocations else (),
               depth, reference, timestamp, rmin, rmax, name, shard,
               tuple(user.split(",")) if user else (), expire,
               json.loads(meta) if meta else {}, update,
               tuple(origins.split(",")) if origins else ())


def _to_row(pin: Pin) -> tuple[Any, ...]:
    """The values of :data:`PIN_COLUMNS` for ``pin`` (a validated pin)."""
    meta = pin.metadata
    return (pin.cid, PIN_TYPES[pin.type], ",".join(pin.allocations), pin.max_depth,
            pin.reference, pin.timestamp, pin.replication_factor_min,
            pin.replication_factor_max, pin.name, pin.shard_size,
            ",".join(pin.user_allocations), pin.expire_at,
            json.dumps(meta, sort_keys=True, separators=(",", ":")) if meta else None,
            pin.pin_update, ",".join(pin.origins))


#: What every added row sets besides its pin: a re-added pin is no longer a tombstone.
_LIVE = {"deleted_at": None}


class PinState(PinStateBackend):
    """The pin state in a store's ``pins`` table (any store with the ``upsert`` and
    ``change_version`` primitives).

    ``store`` is a :class:`~rubix_integration.Store` (or a callable returning one, called on
    first use); :meth:`open` builds one from a store URL. The store must have its schema
    created (``Manager.store`` does that; :meth:`open` too).
    """

    name = "sql"

    def __init__(self, store: Store | Callable[[], Store], *, log_json: bool = False,
                 owner: Any = None) -> None:
        self._source = store
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.log_json = log_json
        self._owner = owner  # what open() built the store with, closed with the state

    @classmethod
    def open(cls, url: str, **options: Any) -> PinState:
        """The pin state of the store at ``url`` (its schema created when missing).

        ``plugins`` (a :class:`~rubix_integration.Plugins`) supplies the store classes and
        tables; ``log_json`` is the state's; the other ``options`` are settings
        (``data_dir``, ...)."""
        from rubix_integration._plugins import Plugins
        from rubix_integration._settings import resolve_settings
        from rubix_integration.errors import UnknownStoreError
        from rubix_integration.stores.base import url_scheme

        log_json = bool(options.pop("log_json", False))
        plugins = options.pop("plugins", None) or Plugins(load_plugins=())
        settings = resolve_settings(store_url=url, **options)
        plugins.tables()
        scheme = url_scheme(settings.store_url)
        found = [c for c in plugins.stores().values() if scheme in c.schemes]
        if not found:
            raise UnknownStoreError(f"no store handles URL scheme {scheme!r}", url=scheme)
        store = found[0](settings.store_url, settings=settings)
        try:
            store.create_schema()
        except BaseException:
            store.close()
            raise
        backend = _class_for(store.name) if cls is PinState else cls
        return backend(store, log_json=log_json, owner=store)

    @property
    def store(self) -> Store:
        """The store, checked for the primitives this state writes through."""
        source = self._source
        # a callable (Manager.store) is asked each time: the host may reopen its store
        store = source() if callable(source) else source
        if self._store is not store:
            store.require(*_NEEDS, by="pin state")
            _count_connections(store, self.name)
            self._store = store
        return store

    def describe(self) -> str:
        return f"{self.name} pin state in {self.store.masked_url}"

    def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()

    # --- reads ---------------------------------------------------------------------------------

    def _iter(self, after: str | None, page_size: int) -> Iterator[Pin]:
        t = PIN_TABLE
        query = sa.select(*(t.c[c] for c in PIN_COLUMNS)).where(t.c.deleted_at.is_(None))
        if after is not None:
            query = query.where(t.c.cid > after)
        query = query.order_by(t.c.cid)
        with self.store.connect() as conn:
            # a server-side cursor where the driver has one, its buffer capped at a page (much
            # cheaper per row than yield_per's partitions)
            result = conn.execution_options(stream_results=True,
                                            max_row_buffer=page_size).execute(query)
            for row in result:
                yield _to_pin(row)

    def _get(self, cid: str) -> Pin | None:
        with self.store.connect() as conn:
            row = conn.execute(_GET, {"cid": cid}).first()
        return None if row is None else _to_pin(row)

    def _has(self, cid: str) -> bool:
        with self.store.connect() as conn:
            return conn.execute(_HAS, {"cid": cid}).first() is not None

    def _count(self) -> int:
        t = PIN_TABLE
        with self.store.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                    .where(t.c.deleted_at.is_(None))).scalar_one())

    # --- writes --------------------------------------------------------------------------------

    def _apply(self, adds: Sequence[Pin], removes: Sequence[str]) -> None:
        store = self.store
        t = PIN_TABLE
        with store.transaction() as conn:
            if adds:
                # tuples, stamped and written by the store (one executemany on SQLite)
                store.upsert_stamped(t, PIN_COLUMNS, [_to_row(p) for p in adds],
                                     connection=conn, values=_LIVE)
            if removes:
                from datetime import datetime, timezone

                now = datetime.now(timezone.utc)
                stamped = store.stamp(t, [{"deleted_at": now} for _ in removes],
                                      connection=conn)
                conn.execute(_TOMBSTONE, [
                    {"b_cid": cid, "deleted_at": s["deleted_at"], "origin_node": s["origin_node"],
                     "change_version": s["change_version"]}
                    for cid, s in zip(removes, stamped, strict=True)])


_GET = (sa.select(*(PIN_TABLE.c[c] for c in PIN_COLUMNS))
        .where(PIN_TABLE.c.cid == sa.bindparam("cid"), PIN_TABLE.c.deleted_at.is_(None)))
_HAS = (sa.select(sa.literal(1)).select_from(PIN_TABLE)
        .where(PIN_TABLE.c.cid == sa.bindparam("cid"), PIN_TABLE.c.deleted_at.is_(None)))
# only live rows become tombstones: removing a missing pin writes nothing
_TOMBSTONE = (sa.update(PIN_TABLE)
              .where(PIN_TABLE.c.cid == sa.bindparam("b_cid"), PIN_TABLE.c.deleted_at.is_(None))
              .values(deleted_at=sa.bindparam("deleted_at"),
                      origin_node=sa.bindparam("origin_node"),
                      change_version=sa.bindparam("change_version")))


class SQLitePinState(PinState):
    """The embedded pin state: the ``pins`` table of a SQLite store (the default)."""

    name = "sqlite"
    schemes = ("sqlite",)


class PostgreSQLPinState(PinState):
    """The pin state in the ``pins`` table of a PostgreSQL store."""

    name = "postgresql"
    schemes = ("postgresql", "postgres")
    consistency = "read committed"


_COUNTED: set[int] = set()


def _count_connections(store: Store, backend: str) -> None:
    """Keep the active connection gauge of ``backend`` on the store's pool checkouts."""
    from rubix_integration.pins._metrics import connections

    connections(backend, 0)  # the gauge exists from the start
    pool = store.engine.pool
    if id(pool) in _COUNTED:
        return
    _COUNTED.add(id(pool))
    sa.event.listen(pool, "checkout", lambda *_: connections(backend, 1))
    sa.event.listen(pool, "checkin", lambda *_: connections(backend, -1))


def _class_for(store_name: str) -> type[PinState]:
    for cls in (SQLitePinState, PostgreSQLPinState):
        if cls.name == store_name:
            return cls
    return PinState
