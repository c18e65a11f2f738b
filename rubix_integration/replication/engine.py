"""The merge engine: change feeds, idempotent batch apply, checkpoints, tombstone collection.

No network here: :class:`Replicator` works on one store and is driven by the HTTP layer
(:mod:`rubix_integration.replication.service`) or by a test directly.

The feed of a table is its rows ordered by ``change_version``; a reader pages through it with an
opaque cursor. On PostgreSQL several writers take versions from a sequence and may commit out of
order, so a caught-up cursor stays :attr:`Replicator.feed_lag_ms` behind the wall clock: rows of
that window are sent again on the next pull (applying them twice changes nothing) instead of being
skipped when a slower transaction commits a smaller version after a faster one.

The merge rule: of two versions of a row, the one with the greater
:func:`~rubix_integration.codecs.hlc.merge_key` (stamp, then node priority, then node id) is
kept, so every node keeps the same one whatever order changes arrive in. A change whose stamp
runs more than ``max_drift_ms`` ahead of the local clock is refused and reported; the cursor
stops before it so it is offered again later.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rubix_integration.codecs.hlc import MAX_DRIFT_MS, merge_key, pack, physical_ms, wall_ms
from rubix_integration.errors import ChangeRejectedError, ResyncRequiredError
from rubix_integration.replication import _json
from rubix_integration.replication.models import CHECKPOINT_TABLE, HORIZON_TABLE, PEER_TABLE
from rubix_integration.replication.tables import ReplicatedTables, TableCodec
from rubix_integration.stores.base import Store

__all__ = [
    "ApplyResult",
    "Conflict",
    "Feed",
    "Replicator",
    "decode_cursor",
    "encode_cursor",
    "since_version",
]

log = logging.getLogger("rubix_integration.replication")

#: Rows per INSERT statement (below SQLite's bound-parameter limit).
_CHUNK = 400
#: Keys per SELECT ... IN (SQLAlchemy names each expanded parameter: long lists cost more
#: per key than several short statements).
_IN_CHUNK = 100
#: Rows from which a PostgreSQL batch is written by COPY (fewer: one multi-row upsert, which
#: takes one round trip instead of four).
_COPY_FROM = 500
#: Keys per SELECT ... IN on a single-column key (one expanding parameter).
_IN_CHUNK_ONE = 500
#: How long a peer may stay away before tombstones stop waiting for it (seven days).
DEFAULT_RETENTION_S = 7 * 86400.0
_CURSOR_PREFIX = "c1."
#: Milliseconds a batch's transaction is held open after its rows are written (crash tests).
FAULT_PAUSE_ENV = "RUBIX_REPLICATION_FAULT_PAUSE_MS"


def encode_cursor(version: int) -> str:
    """The opaque cursor standing for ``version``."""
    raw = version.to_bytes(8, "big", signed=False)
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The version a cursor from :func:`encode_cursor` stands for (``0`` for none)."""
    if not cursor:
        return 0
    if not cursor.startswith(_CURSOR_PREFIX):
        raise ChangeRejectedError(f"not a change feed cursor: {cursor[:40]!r}")
    body = cursor[len(_CURSOR_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ChangeRejectedError(f"not a change feed cursor: {cursor[:40]!r}") from None
    if len(raw) != 8:
        raise ChangeRejectedError(f"not a change feed cursor: {cursor[:40]!r}")
    return int.from_bytes(raw, "big")


def since_version(since: str) -> int:
    """The cursor version for the sync API's ``since=<ISO 8601 timestamp>``: every change stamped at
    or after that instant."""
    try:
        when = dt.datetime.fromisoformat(since.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ChangeRejectedError(f"since is not an ISO 8601 timestamp: {since[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    ms = int(when.timestamp() * 1000)
    return max(pack(max(ms, 0)) - 1, 0)


@dataclass(frozen=True)
class Feed:
    """One page of a table's change feed."""

    node_id: str
    table: str
    changes: list[dict[str, Any]]
    cursor: str
    has_more: bool
    horizon: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON body served for this page."""
        return {"node_id": self.node_id, "table": self.table, "changes": self.changes,
                "cursor": self.cursor, "has_more": self.has_more, "horizon": self.horizon,
                "count": len(self.changes)}


@dataclass(frozen=True)
class Conflict:
    """Two nodes wrote one row concurrently; ``kept`` is the version the rule keeps."""

    table: str
    key: list[Any]
    local: dict[str, Any]
    incoming: dict[str, Any]
    kept: str  # "local" or "incoming"

    def as_dict(self) -> dict[str, Any]:
        """A JSON form (both versions, encoded)."""
        return {"table": self.table, "key": self.key, "local": self.local,
                "incoming": self.incoming, "kept": self.kept}


@dataclass
class ApplyResult:
    """What applying one batch did."""

    table: str
    received: int = 0
    applied: int = 0
    unchanged: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON summary."""
        return {"table": self.table, "received": self.received, "applied": self.applied,
                "unchanged": self.unchanged, "conflicts": len(self.conflicts),
                "refused": self.refused, "cursor": self.cursor}


class Replicator:
    """Feeds, merges, checkpoints and collects tombstones for one store.

    ``priorities`` maps node ids to their priority (default 0; this node's is ``priority``).
    ``wall`` reads the local wall clock in milliseconds (injectable for skew). ``on_event``
    receives ``(event, data)`` for conflicts and refusals.
    """

    def __init__(
        self,
        store: Store,
        tables: ReplicatedTables | None = None,
        *,
        priority: int = 0,
        priorities: Mapping[str, int] | None = None,
        max_drift_ms: int = MAX_DRIFT_MS,
        retention_s: float = DEFAULT_RETENTION_S,
        feed_lag_ms: int | None = None,
        wall: Callable[[], int] = wall_ms,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.tables = tables or ReplicatedTables()
        self.priority = priority
        self.priorities: dict[str, int] = dict(priorities or {})
        self.max_drift_ms = max_drift_ms
        self.retention_s = retention_s
        self.feed_lag_ms = (feed_lag_ms if feed_lag_ms is not None
                            else (5000 if store.name == "postgresql" else 0))
        self.wall = wall
        self.on_event = on_event
        self._lock = threading.Lock()
        self.conflicts_resolved = 0
        self.rows_applied = 0
        self.rows_refused = 0
        self._acks: dict[tuple[str, str], int] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._upserts: dict[str, tuple[sa.Table, str, list[tuple[str, Any]]]] = {}
        # fault injection for tests of a crash in the middle of a batch: hold each batch's
        # transaction open this long after its rows are written, before the checkpoint
        self._pause_s = float(os.environ.get(FAULT_PAUSE_ENV, "0") or 0) / 1000

    @property
    def node_id(self) -> str:
        """This store's node id."""
        return self.store.node_id

    def _priority(self, node: str) -> int:
        if node == self.node_id:
            return self.priority
        return self.priorities.get(node, 0)

    def _key(self, row: Mapping[str, Any]) -> tuple[int, int, str]:
        node = str(row["origin_node"])
        return merge_key(int(row["change_version"]), self._priority(node), node)

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, data)
            except Exception:  # a listener must not break a merge
                log.exception("replication event listener failed on %s", event)

    # --- feed ----------------------------------------------------------------------------------

    def horizon(self, table: str) -> int:
        """The greatest tombstone version collected from ``table`` (0 when none)."""
        with self.store.connect() as conn:
            value = conn.execute(sa.select(HORIZON_TABLE.c.horizon).where(
                HORIZON_TABLE.c.table_name == table)).scalar()
        return int(value or 0)

    def changes(self, table: str, *, cursor: str | None = None, since: str | None = None,
                limit: int = 100, exclude_origin: str | None = None,
                reader: str | None = None) -> Feed:
        """The rows of ``table`` changed after ``cursor`` (or at/after ``since``), at most
        ``limit``, ordered by version; rows whose ``origin_node`` is ``exclude_origin`` are left
        out (the reader wrote them). ``reader`` (a node id) acknowledges ``cursor``.

        Raises :class:`ResyncRequiredError` when tombstones newer than ``cursor`` were collected.
        """
        return self._changes(table, cursor=cursor, since=since, limit=limit,
                             exclude_origin=exclude_origin, reader=reader, raw=False)

    def changes_json(self, table: str, *, cursor: str | None = None, since: str | None = None,
                     limit: int = 100, exclude_origin: str | None = None,
                     reader: str | None = None) -> bytes:
        """:meth:`changes` as the JSON body served for it (``Feed.as_dict``), built without
        parsing the JSON columns SQLite holds as text."""
        raw = _json.HAVE_ORJSON
        with _json.paused_gc():
            feed = self._changes(table, cursor=cursor, since=since, limit=limit,
                                 exclude_origin=exclude_origin, reader=reader, raw=raw)
            codec = self.tables.codec(table)
            return _json.feed_body(feed.as_dict(), codec.floats if raw else None)

    def _changes(self, table: str, *, cursor: str | None, since: str | None, limit: int,
                 exclude_origin: str | None, reader: str | None, raw: bool) -> Feed:
        codec = self.tables.codec(table)
        limit = max(1, min(int(limit), 10_000))
        after = since_version(since) if since and not cursor else decode_cursor(cursor)
        horizon = self.horizon(table)
        if 0 < after < horizon:
            raise ResyncRequiredError(
                f"tombstones of {table!r} up to version {horizon} were collected after your "
                f"checkpoint {after}: resync fully", peer=reader)
        if reader and cursor is not None:
            self._acknowledge(reader, table, after)
        t = codec.table
        spec = self.tables.append_only(table)
        order = spec.order if spec is not None else "change_version"
        sqlite = self.store.name == "sqlite"
        text = [c.name for c in t.columns
                if raw and self.store.name in ("sqlite", "postgresql") and _is_json(c)]
        # for a served feed, JSON columns are read as their text and sent as it is
        as_text = sa.type_coerce if sqlite else sa.cast
        query = (sa.select(*(as_text(c, sa.Text).label(c.name) if c.name in text else c
                             for c in t.columns))
                 .where(t.c[order] > after).order_by(t.c[order]).limit(limit))
        with self.store.connect() as conn:
            found = conn.execute(query)
            names = list(found.keys())
            rows = found.all()
        if text and rows:
            at_text = [names.index(n) for n in text]
            parse = _json.fragment
            fixed: list[Any] = []
            for r in rows:
                items = list(r)
                for i in at_text:
                    items[i] = parse(items[i])
                fixed.append(items)
            rows = fixed
        pos = {n: i for i, n in enumerate(names)}
        at = pos[order]
        has_more = len(rows) == limit
        nxt = int(rows[-1][at]) if rows else after
        if not has_more and self.feed_lag_ms:
            if spec is None:
                safe = pack(max(self.wall() - self.feed_lag_ms, 0))
                nxt = max(after, min(nxt, safe))
            else:
                # ids are not stamps: stop before the first row written within the lag
                cutoff_us = (self.wall() - self.feed_lag_ms) * 1000
                ts = pos.get("timestamp_us")
                nxt = after
                for r in rows:
                    if ts is not None and int(r[ts] or 0) >= cutoff_us:
                        break
                    nxt = int(r[at])
        if exclude_origin is not None:
            origin = pos["origin_node"]
            rows = [r for r in rows if r[origin] != exclude_origin]
        out = codec.encode_many(rows, names)
        return Feed(self.node_id, table, out, encode_cursor(nxt), has_more, horizon)

    def _acknowledge(self, reader: str, table: str, version: int) -> None:
        key = (reader, table)
        with self._lock:
            if self._acks.get(key) == version:
                return
            self._acks[key] = version
        now = _now()
        self.store.upsert(CHECKPOINT_TABLE, [{
            "peer_id": reader[:64], "table_name": table, "cursor": 0, "acked": version,
            "acked_at": now, "updated_at": None}],
            update=["acked", "acked_at"])

    # --- apply ---------------------------------------------------------------------------------

    def decode(self, table: str, rows: Iterable[object], *, peer: str | None = None,
               copy: bool = True) -> list[dict[str, Any]]:
        """Check and decode incoming JSON rows of ``table``; refuse the whole batch on a bad row.
        ``copy=False``: the rows (just parsed, used for nothing else) are decoded in place."""
        codec = self.tables.codec(table, peer=peer)
        with _json.paused_gc():
            return codec.decode_many(rows if isinstance(rows, list) else list(rows), peer=peer,
                                     copy=copy)

    def apply(self, table: str, rows: Sequence[Mapping[str, Any]], *, peer: str | None = None,
              cursor: int | None = None) -> ApplyResult:
        """Merge decoded ``rows`` of ``table`` from ``peer`` (a node id) in one transaction,
        together with the checkpoint ``cursor`` of that peer's feed; idempotent."""
        with _json.paused_gc():  # a batch makes many short-lived objects, none in a cycle
            return self._apply(table, rows, peer, cursor)

    def _apply(self, table: str, rows: Sequence[Mapping[str, Any]], peer: str | None,
               cursor: int | None) -> ApplyResult:
        codec = self.tables.codec(table, peer=peer)
        t = codec.table
        result = ApplyResult(table, received=len(rows))
        if self.tables.append_only(table) is not None:
            return self._apply_append(codec, rows, peer, cursor, result)
        if not rows and peer is not None and cursor is not None \
                and self._cursors.get((peer, table)) == cursor:
            result.cursor = cursor
            return result  # nothing new and the checkpoint already says so
        now_ms = self.wall()
        best: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        for row in rows:
            ahead = physical_ms(int(row["change_version"])) - now_ms
            key = tuple(row[k] for k in codec.key)
            if ahead > self.max_drift_ms:
                result.refused.append({"key": list(key), "version": int(row["change_version"]),
                                       "origin_node": row["origin_node"], "ahead_ms": ahead})
                continue
            held = best.get(key)
            if held is None or self._key(row) > self._key(held):
                best[key] = row
        if result.refused:
            self.rows_refused += len(result.refused)
            first = min(r["version"] for r in result.refused)
            if cursor is not None:
                # offer the refused change again later instead of skipping it for good
                cursor = min(cursor, first - 1)
            log.warning("refused %d change(s) to %s from %s: clock more than %d ms ahead",
                        len(result.refused), table, peer, self.max_drift_ms)
            self._emit("clock_drift_refused", {"table": table, "peer": peer,
                                               "refused": result.refused,
                                               "max_drift_ms": self.max_drift_ms})
        acked = self._acked_by(peer, table) if peer else 0
        with self.store.transaction() as conn:
            winners = self._decide(conn, codec, best, peer, acked, result)
            if winners:
                self._write(conn, t, codec, winners)
                self._advance_clock(conn, t, max(int(r["change_version"]) for r in winners))
                if self._pause_s:
                    time.sleep(self._pause_s)
            if peer is not None and cursor is not None:
                prior = conn.execute(sa.select(CHECKPOINT_TABLE.c.cursor).where(
                    CHECKPOINT_TABLE.c.peer_id == peer[:64],
                    CHECKPOINT_TABLE.c.table_name == table)).scalar()
                result.cursor = max(int(prior or 0), cursor) if not result.refused else cursor
                self._save_cursor(conn, peer, table, result.cursor)
        result.applied = len(winners)
        with self._lock:
            self.rows_applied += result.applied
            self.conflicts_resolved += len(result.conflicts)
        for conflict in result.conflicts:
            log.info("conflict on %s %s: local %s, incoming %s, kept %s", table, conflict.key,
                     json.dumps(conflict.local, default=str),
                     json.dumps(conflict.incoming, default=str), conflict.kept)
            self._emit("conflict", conflict.as_dict())
        return result

    def _apply_append(self, codec: TableCodec, rows: Sequence[Mapping[str, Any]],
                      peer: str | None, cursor: int | None,
                      result: ApplyResult) -> ApplyResult:
        """Copy the rows of an append-only table that are missing here; a row whose content
        does not hash to its CID is refused, and one that differs from the row held under the
        same key (a forked chain) is kept out and reported as a conflict."""
        from rubix_integration.codecs import dagjson

        t = codec.table
        for row in rows:
            block, cid = row.get("block"), row.get("cid")
            if not isinstance(block, str) or dagjson.cid_text_for_block(block.encode()) != cid:
                raise ChangeRejectedError(
                    f"a record of {t.name!r} does not hash to its CID {str(cid)[:80]!r}",
                    peer=peer, table=t.name)
        cols = [t.c[k] for k in codec.key]
        best = {tuple(r[k] for k in codec.key): r for r in rows}
        with self.store.transaction() as conn:
            held: dict[tuple[Any, ...], str] = {}
            keys = list(best)
            for start in range(0, len(keys), _IN_CHUNK):
                chunk = keys[start:start + _IN_CHUNK]
                for r in conn.execute(sa.select(*cols, t.c.cid).where(
                        sa.tuple_(*cols).in_(chunk))):
                    held[tuple(r[:-1])] = str(r[-1])
            missing = [dict(r, published=False) for k, r in best.items() if k not in held]
            for key, row in best.items():
                if key in held and held[key] != row["cid"]:
                    result.conflicts.append(Conflict(t.name, list(key), {"cid": held[key]},
                                                     {"cid": row["cid"]}, "local"))
            result.unchanged = len(best) - len(missing)
            if missing:
                stmt = self.store._dialect_insert(t).on_conflict_do_nothing(
                    index_elements=codec.key)
                per = max(1, min(_CHUNK, 30_000 // max(len(codec.columns) + 1, 1)))
                for start in range(0, len(missing), per):
                    conn.execute(stmt, missing[start:start + per])
            if peer is not None and cursor is not None:
                result.cursor = cursor
                self._save_cursor(conn, peer, t.name, cursor)
        result.applied = len(missing)
        with self._lock:
            self.rows_applied += result.applied
            self.conflicts_resolved += len(result.conflicts)
        for conflict in result.conflicts:
            log.warning("forked record on %s %s: local %s, incoming %s (kept local)", t.name,
                        conflict.key, conflict.local["cid"], conflict.incoming["cid"])
            self._emit("conflict", conflict.as_dict())
        return result

    def _save_cursor(self, conn: Connection, peer: str, table: str, cursor: int) -> None:
        """Remember and persist how far ``peer``'s feed of ``table`` has been applied."""
        self._cursors[(peer, table)] = cursor
        self.store.upsert(CHECKPOINT_TABLE, [{
            "peer_id": peer[:64], "table_name": table, "cursor": cursor, "acked": 0,
            "acked_at": None, "updated_at": _now()}],
            update=["cursor", "updated_at"], connection=conn)

    def _acked_by(self, peer: str, table: str) -> int:
        with self._lock:
            known = self._acks.get((peer, table))
        if known is not None:
            return known
        with self.store.connect() as conn:
            value = conn.execute(sa.select(CHECKPOINT_TABLE.c.acked).where(
                CHECKPOINT_TABLE.c.peer_id == peer[:64],
                CHECKPOINT_TABLE.c.table_name == table)).scalar()
        return int(value or 0)

    def _decide(self, conn: Connection, codec: TableCodec,
                best: dict[tuple[Any, ...], Mapping[str, Any]], peer: str | None, acked: int,
                result: ApplyResult) -> list[Mapping[str, Any]]:
        t = codec.table
        nkey = len(codec.key)
        # the version and origin of the rows held under these keys (whole rows only for the
        # few that conflict, below)
        held: dict[tuple[Any, ...], Mapping[str, Any]] = {
            tuple(r[:nkey]): {"change_version": r[nkey], "origin_node": r[nkey + 1]}
            for r in self._held(conn, codec, list(best),
                                [*codec.key, "change_version", "origin_node"])}
        me = self.node_id
        winners: list[Mapping[str, Any]] = []
        clashes: list[tuple[tuple[Any, ...], Mapping[str, Any], bool]] = []
        for key, row in best.items():
            local = held.get(key)
            if local is None:
                winners.append(row)
                continue
            mine, theirs = self._key(local), self._key(row)
            if theirs == mine:
                result.unchanged += 1
                continue
            wins = theirs > mine
            concurrent = ((not wins and row["origin_node"] == peer)
                          or (wins and local["origin_node"] == me
                              and int(local["change_version"]) > acked))
            if concurrent:
                clashes.append((key, row, wins))
            if wins:
                winners.append(row)
            else:
                result.unchanged += 1
        if clashes:
            names = [c.name for c in t.columns]
            whole = {tuple(r[names.index(k)] for k in codec.key): dict(zip(names, r, strict=True))
                     for r in self._held(conn, codec, [k for k, _, _ in clashes], names)}
            for key, row, wins in clashes:
                # (a row removed since it was read, on PostgreSQL: what was read of it)
                local = whole.get(key) or {**dict.fromkeys(codec.columns), **held[key],
                                           **dict(zip(codec.key, key, strict=True))}
                result.conflicts.append(Conflict(
                    t.name, list(key), codec.encode(local), codec.encode(row),
                    "incoming" if wins else "local"))
        return winners

    def _held(self, conn: Connection, codec: TableCodec, keys: list[tuple[Any, ...]],
              columns: Sequence[str]) -> list[Sequence[Any]]:
        """``columns`` of the rows held under ``keys`` (tuples in ``columns`` order)."""
        t = codec.table
        cols = [t.c[k] for k in codec.key]
        out: list[Sequence[Any]] = []
        if len(cols) == 1 and conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            # one array parameter, whatever the number of keys
            stmt = sa.select(*(t.c[c] for c in columns)).where(
                cols[0] == sa.any_(sa.bindparam("keys", type_=ARRAY(cols[0].type))))
            for start in range(0, len(keys), 10_000):
                chunk = [k[0] for k in keys[start:start + 10_000]]
                out.extend(conn.execute(stmt, {"keys": chunk}).all())
            return out
        if len(cols) == 1:
            stmt = sa.select(*(t.c[c] for c in columns)).where(
                cols[0].in_(sa.bindparam("keys", expanding=True)))
            for start in range(0, len(keys), _IN_CHUNK_ONE):
                chunk = [k[0] for k in keys[start:start + _IN_CHUNK_ONE]]
                out.extend(conn.execute(stmt, {"keys": chunk}).all())
            return out
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start:start + _IN_CHUNK]
            out.extend(conn.execute(sa.select(*(t.c[c] for c in columns)).where(
                sa.tuple_(*cols).in_(chunk))).all())
        return out

    def _write(self, conn: Connection, t: sa.Table, codec: TableCodec,
               rows: list[Mapping[str, Any]]) -> None:
        if conn.dialect.name == "sqlite" and conn.dialect.paramstyle == "qmark":
            # one prepared upsert run over every row by the driver: the values are converted
            # a column at a time by the dialect's own bind processors
            sql, procs = self._sqlite_upsert(conn, t, codec)
            columns: list[list[Any]] = []
            for name, proc in procs:
                values = [r[name] for r in rows]
                columns.append(values if proc is None else [proc(v) for v in values])
            conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))
            return
        if (conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
                and len(rows) >= _COPY_FROM):
            self._copy_upsert(conn, t, codec, rows)
            return
        ins = self.store._dialect_insert(t)
        stmt = ins.on_conflict_do_update(
            index_elements=codec.key,
            set_={c: ins.excluded[c] for c in codec.columns if c not in codec.key},
            # a local write that slipped in since the rows were read keeps its newer version
            where=t.c.change_version <= ins.excluded.change_version)
        per = max(1, min(_CHUNK, 30_000 // max(len(codec.columns), 1)))
        for start in range(0, len(rows), per):
            conn.execute(stmt, [dict(r) for r in rows[start:start + per]])

    def _copy_upsert(self, conn: Connection, t: sa.Table, codec: TableCodec,
                     rows: list[Mapping[str, Any]]) -> None:
        """:meth:`_write` on PostgreSQL: the rows are copied (``COPY``) into a temporary table
        emptied at commit, then merged by one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` with
        the same guard."""
        dialect = conn.dialect
        q = dialect.identifier_preparer
        cols = list(codec.columns)
        name = q.format_table(t)
        sig = zlib.crc32(",".join(cols).encode())
        tmp = q.quote(f"rubix_in_{t.name}_{sig:08x}"[:63])
        rest = [c for c in cols if c not in codec.key]
        listed = ", ".join(q.quote(c) for c in cols)
        merge = (f"INSERT INTO {name} ({listed}) SELECT {listed} FROM {tmp} "
                 f"ON CONFLICT ({', '.join(q.quote(k) for k in codec.key)}) ")
        merge += ("DO UPDATE SET " + ", ".join(f"{q.quote(c)} = excluded.{q.quote(c)}"
                                               for c in rest)
                  + f" WHERE {name}.change_version <= excluded.change_version"
                  if rest else "DO NOTHING")
        columns: list[list[Any]] = []
        for c in cols:
            proc: Callable[[Any], Any] | None = t.c[c].type._cached_bind_processor(dialect)
            if proc is not None and _is_json(t.c[c]):
                proc = _json.column_text(proc)  # COPY takes the JSON text for json(b)
            values = [r[c] for r in rows]
            columns.append(values if proc is None else [proc(v) for v in values])
        # a temporary table of the same columns (no defaults), once per session
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {tmp} "
            f"(LIKE {name} EXCLUDING ALL) ON COMMIT DELETE ROWS")
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            cur.execute(f"DELETE FROM {tmp}")
            with cur.copy(f"COPY {tmp} ({listed}) FROM STDIN") as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
            cur.execute(merge)

    def _sqlite_upsert(self, conn: Connection, t: sa.Table, codec: TableCodec
                       ) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]:
        """The SQL of :meth:`_write` on SQLite (the same statement SQLAlchemy would issue, with
        the same guard) and the bind processor of each column."""
        cached = self._upserts.get(t.name)
        if cached is not None and cached[0] is t:
            return cached[1], cached[2]
        dialect = conn.dialect
        q = dialect.identifier_preparer
        name = q.format_table(t)
        cols = list(codec.columns)
        rest = [c for c in cols if c not in codec.key]
        sql = (f"INSERT INTO {name} ({', '.join(q.quote(c) for c in cols)}) "
               f"VALUES ({', '.join('?' for _ in cols)}) "
               f"ON CONFLICT ({', '.join(q.quote(k) for k in codec.key)}) DO UPDATE SET "
               + ", ".join(f"{q.quote(c)} = excluded.{q.quote(c)}" for c in rest)
               + f" WHERE {name}.change_version <= excluded.change_version")
        if not rest:
            sql = (f"INSERT INTO {name} ({', '.join(q.quote(c) for c in cols)}) "
                   f"VALUES ({', '.join('?' for _ in cols)}) ON CONFLICT DO NOTHING")
        procs: list[tuple[str, Callable[[Any], Any] | None]] = []
        for c in cols:
            proc: Callable[[Any], Any] | None = t.c[c].type._cached_bind_processor(dialect)
            if proc is not None and _is_json(t.c[c]):
                proc = _json.column_text(proc)
            procs.append((c, proc))
        self._upserts[t.name] = (t, sql, procs)
        return sql, procs

    def _advance_clock(self, conn: Connection, t: sa.Table, top: int) -> None:
        """Keep local stamps above every version received (the hybrid clock's receive rule)."""
        clock = self.store.store_clock
        with clock.lock:
            clock.clock.observe(top)
        if self.store.name != "postgresql":
            return  # SQLite stamps above the table's greatest version already
        seq = f"{t.name}_change_version_seq"
        if conn.execute(sa.text("SELECT to_regclass(:s)"), {"s": seq}).scalar() is None:
            return
        current = conn.execute(sa.text(
            "SELECT coalesce(pg_sequence_last_value(CAST(:s AS regclass)), 0)"),
            {"s": seq}).scalar_one()
        if int(current) < top:
            conn.execute(sa.text("SELECT setval(CAST(:s AS regclass), :v)"),
                         {"s": seq, "v": top})

    # --- checkpoints, acknowledgements, tombstones ---------------------------------------------

    def checkpoint(self, peer: str, table: str) -> int:
        """How far this node pulled ``peer``'s feed of ``table``."""
        with self.store.connect() as conn:
            value = conn.execute(sa.select(CHECKPOINT_TABLE.c.cursor).where(
                CHECKPOINT_TABLE.c.peer_id == peer[:64],
                CHECKPOINT_TABLE.c.table_name == table)).scalar()
        return int(value or 0)

    def reset_checkpoint(self, peer: str, table: str) -> None:
        """Forget how far ``peer``'s feed of ``table`` was pulled (before a full resync)."""
        self._cursors.pop((peer, table), None)
        with self.store.transaction() as conn:
            conn.execute(sa.update(CHECKPOINT_TABLE).where(
                CHECKPOINT_TABLE.c.peer_id == peer[:64],
                CHECKPOINT_TABLE.c.table_name == table).values(cursor=0))

    def prune_unseen(self, table: str, seen: set[tuple[Any, ...]], horizon: int) -> int:
        """After a full resync from a peer whose tombstones up to ``horizon`` are collected:
        remove rows of other nodes at or below ``horizon`` that the peer no longer holds (rows
        it deleted), so that they are not resurrected. Returns how many were removed."""
        codec = self.tables.codec(table)
        t = codec.table
        cols = [t.c[k] for k in codec.key]
        gone: list[tuple[Any, ...]] = []
        with self.store.transaction() as conn:
            for r in conn.execute(sa.select(*cols).where(
                    t.c.change_version <= horizon, t.c.origin_node != self.node_id)):
                if tuple(r) not in seen:
                    gone.append(tuple(r))
            for start in range(0, len(gone), _IN_CHUNK):
                chunk = gone[start:start + _IN_CHUNK]
                cond = (cols[0].in_([k[0] for k in chunk]) if len(cols) == 1
                        else sa.tuple_(*cols).in_(chunk))
                conn.execute(sa.delete(t).where(cond))
        return len(gone)

    def known_peers(self) -> dict[str, dict[str, tuple[int, dt.datetime | None]]]:
        """Per peer node id, per table: the version it acknowledged and when."""
        out: dict[str, dict[str, tuple[int, dt.datetime | None]]] = {}
        with self.store.connect() as conn:
            for r in conn.execute(sa.select(CHECKPOINT_TABLE)):
                out.setdefault(r.peer_id, {})[r.table_name] = (int(r.acked or 0), r.acked_at)
            for r in conn.execute(sa.select(PEER_TABLE)):
                ident = r.node_id or r.peer_id
                out.setdefault(ident, {}).setdefault("*", (0, r.added_at))
        return out

    def collect_tombstones(self) -> dict[str, int]:
        """Remove the tombstones every known peer acknowledged (peers silent for longer than
        :attr:`retention_s` are not waited for); return how many were removed per table."""
        now = _now()
        peers = self.known_peers()
        removed: dict[str, int] = {}
        for name, t in self.tables.tables().items():
            if self.tables.append_only(name) is not None:
                continue  # its rows are never deleted
            bound: int | None = None
            for acks in peers.values():
                if name not in acks and "*" not in acks:
                    continue  # a reader of other tables only: it holds no copy of this one
                ack, at = acks.get(name, (0, acks.get("*", (0, None))[1]))
                if at is not None and (now - _aware(at)).total_seconds() > self.retention_s:
                    continue  # away too long: it will be told to resync fully
                bound = ack if bound is None else min(bound, ack)
            if bound is None:
                bound = (1 << 63) - 1
            with self.store.transaction() as conn:
                dead = sa.and_(t.c.deleted_at.is_not(None), t.c.change_version <= bound)
                top = conn.execute(sa.select(sa.func.max(t.c.change_version)).where(dead)
                                   ).scalar()
                if top is None:
                    continue
                count = conn.execute(sa.delete(t).where(dead)).rowcount
                prior = conn.execute(sa.select(HORIZON_TABLE.c.horizon).where(
                    HORIZON_TABLE.c.table_name == name)).scalar()
                self.store.upsert(HORIZON_TABLE, [{
                    "table_name": name, "horizon": max(int(prior or 0), int(top))}],
                    connection=conn)
            removed[name] = int(count or 0)
        return removed

    def stats(self) -> dict[str, int]:
        """Counters since this replicator was made."""
        with self._lock:
            return {"conflicts_resolved": self.conflicts_resolved,
                    "rows_applied": self.rows_applied, "rows_refused": self.rows_refused}


def _is_json(column: sa.ColumnElement[Any]) -> bool:
    kind = column.type
    while isinstance(kind, sa.types.TypeDecorator):
        kind = kind.impl_instance
    return isinstance(kind, sa.JSON)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
