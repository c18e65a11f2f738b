"""The rule every replicated table follows, in one place.

A replicated row has:

- a **stable primary key** made of what names the row everywhere (never an autoincrement id,
  which two stores would hand out twice);
- ``origin_node``: the ``node_id`` (``rubix_meta``) of the store that last wrote the row. Rows
  written locally carry this store's id; rows received from a peer keep the peer's;
- ``change_version``: a hybrid logical clock stamp (:mod:`rubix_integration.codecs.hlc`), set by
  the store layer on every write (``Store.stamp``), never by a capability. Of two versions of
  one row the one with the greater :func:`~rubix_integration.codecs.hlc.merge_key` (stamp, then
  node priority, then node id) wins;
- ``deleted_at``: a tombstone. Deleting sets it (with a new stamp) instead of removing the row,
  so that the deletion travels like any other change; readers filter ``deleted_at IS NULL``.

A table model opts in by mixing in :class:`ReplicatedMixin`; :func:`is_replicated` and
:func:`replicated_tables` are how the rest of the package asks.

How the stamps are issued, per store:

- **SQLite**: one writer at a time (the transaction's write lock). Each store object keeps a
  :class:`~rubix_integration.codecs.hlc.HybridClock` seeded from ``rubix_meta.hlc``; a stamp for
  several rows reads the table's greatest version under the write lock, issues stamps above it
  and writes the last one back to ``rubix_meta.hlc`` in the same transaction, so the clock
  survives restarts and never goes backwards. A single-row stamp is an SQL expression (the
  greater of the clock's stamp and the table's greatest version + 1) evaluated under the lock.
- **PostgreSQL**: several processes write at once, so a per-process clock cannot guarantee
  distinct values. The table's sequence stays the issuer (``nextval`` is atomic across sessions,
  never taken twice and never goes back, and survives restarts: it is the persisted clock), and
  the store keeps it on the hybrid clock: at most once a second a process moves the sequence up to
  its own clock's stamp when the sequence lags it by more than a second, under an advisory lock so
  that two such moves never cross. Values therefore stay within about two seconds of the wall
  clock, only grow, and order and resolve conflicts exactly like stamps (``nextval`` counts up
  the logical part). Taking ``max + 1`` under a table lock instead would serialise every writer.

Tables outside the rule, and why:

- ``rubix_meta`` describes one store and is never replicated.
- ``provenance_records`` are immutable and named by their CID: the CID is the stable key, a
  record never changes (so it needs no version to resolve conflicts) and is never deleted (so it
  needs no tombstone); a peer copies the records it lacks. Its ``origin_node`` says who made it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from rubix_integration.codecs.hlc import HybridClock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "HLC_KEY",
    "REPLICATED_COLUMNS",
    "ReplicatedMixin",
    "StoreClock",
    "is_replicated",
    "live",
    "replicated_tables",
]

#: The columns every replicated table carries.
REPLICATED_COLUMNS = ("origin_node", "change_version", "deleted_at")
#: The ``rubix_meta`` key holding the last stamp a SQLite store issued.
HLC_KEY = "hlc"


class ReplicatedMixin(SQLModel):
    """Columns of a replicated row: who wrote it, its change version, its tombstone.

    Mix it into a table model (``class Pin(ReplicatedMixin, table=True)``) whose primary key is
    stable; see the module docstring for the rules.
    """

    origin_node: str = Field(index=True, max_length=36)
    change_version: int = Field(default=0, index=True, sa_type=sa.BigInteger)
    deleted_at: datetime | None = Field(default=None)


def is_replicated(table: sa.Table) -> bool:
    """Whether rows of ``table`` are stamped: it has ``origin_node`` and ``change_version``."""
    return "origin_node" in table.c and "change_version" in table.c


def replicated_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The tables of ``metadata`` that carry every column of the rule, sorted by name."""
    return sorted((t for t in metadata.tables.values()
                   if all(c in t.c for c in REPLICATED_COLUMNS)), key=lambda t: t.name)


def live(table: sa.Table) -> sa.ColumnElement[bool]:
    """The condition selecting the rows of ``table`` that are not tombstones."""
    return table.c.deleted_at.is_(None)


class StoreClock:
    """One store's hybrid clock, and what it needs to stay monotonic across restarts."""

    #: How often a PostgreSQL store moves a sequence up to its clock (seconds).
    SYNC_EVERY_S = 1.0
    #: How far a sequence may lag the clock before it is moved (one second of stamps).
    LAG = 1000 << 16

    def __init__(self, clock: HybridClock | None = None) -> None:
        self.clock = clock or HybridClock()
        self.lock = threading.Lock()
        self._synced: dict[str, float] = {}

    # --- SQLite: the clock, persisted in rubix_meta ---------------------------------------------

    def stamps(self, conn: Connection, table: sa.Table, count: int) -> list[int]:
        """``count`` stamps above the table's greatest version and the persisted clock, the
        last of them written back to ``rubix_meta`` (in ``conn``'s transaction, which must hold
        the write lock)."""
        from rubix_integration.stores.models import META_TABLE

        meta = META_TABLE
        largest, persisted = conn.execute(sa.select(
            sa.func.max(table.c.change_version),
            sa.select(meta.c.value).where(meta.c.key == HLC_KEY).scalar_subquery())).one()
        with self.lock:
            self.clock.observe(max(int(largest or 0), _int(persisted)))
            out = [self.clock.now() for _ in range(count)]
        self._persist(conn, out[-1], persisted is not None)
        return out

    def reserve(self, conn: Connection, table: sa.Table, count: int) -> int:
        """The first of ``count`` consecutive stamps (``first`` to ``first + count - 1``), all
        above the table's greatest version and the persisted clock; persisted like
        :meth:`stamps`."""
        first = self.stamps(conn, table, 1)[0]
        if count > 1:
            with self.lock:
                self.clock.observe(first + count - 1)
            self._persist(conn, first + count - 1, True)
        return first

    def stamp_expression(self, table: sa.Table) -> sa.ColumnElement[Any]:
        """One stamp as an SQL expression: the clock's, or the table's greatest + 1 when that is
        greater (another process wrote since); evaluated under the write lock."""
        with self.lock:
            mine = self.clock.now()
        above = sa.select(sa.func.coalesce(sa.func.max(table.c.change_version), 0) + 1
                          ).scalar_subquery()
        return sa.case((above > mine, above), else_=sa.literal(mine, sa.BigInteger()))

    @staticmethod
    def _persist(conn: Connection, stamp: int, present: bool) -> None:
        from rubix_integration.stores.models import META_TABLE

        meta = META_TABLE
        if present:
            # only ever forward: another process may have written a greater one
            conn.execute(sa.update(meta).where(
                meta.c.key == HLC_KEY,
                sa.cast(meta.c.value, sa.BigInteger) < stamp).values(value=str(stamp)))
        else:
            conn.execute(sa.insert(meta).values(key=HLC_KEY, value=str(stamp)))

    # --- PostgreSQL: the sequence kept on the clock --------------------------------------------

    def due(self, sequence: str) -> bool:
        """Whether ``sequence`` should be moved up to the clock now (at most once a second)."""
        last = self._synced.get(sequence)
        return last is None or time.monotonic() - last >= self.SYNC_EVERY_S

    def sync_sequence(self, conn: Connection, sequence: str) -> None:
        """Move ``sequence`` up to the clock's stamp when it lags by more than :attr:`LAG`.

        ``conn`` is in a transaction of its own: the advisory lock it takes keeps two moves from
        crossing until it ends. A process that does not get the lock leaves the move to the one
        that has it.
        """
        with self.lock:
            mine = self.clock.now()
        self._synced[sequence] = time.monotonic()
        got = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(
            sa.func.hashtext(f"rubix_integration.hlc:{sequence}")))).scalar()
        if not got:
            return
        current = conn.execute(sa.text(
            "SELECT coalesce(pg_sequence_last_value(CAST(:s AS regclass)), 0)"),
            {"s": sequence}).scalar_one()
        if int(current) < mine - self.LAG:
            conn.execute(sa.text("SELECT setval(CAST(:s AS regclass), :v)"),
                         {"s": sequence, "v": mine})
        else:
            with self.lock:
                self.clock.observe(int(current))


def _int(value: object) -> int:
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0
