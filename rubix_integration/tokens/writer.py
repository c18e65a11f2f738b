"""The one writer of a sync: merges a database's spooled rows into ``tokenrecords``, in one
transaction.

The spool's rows are made selectable (:func:`~rubix_integration.stores.spools.spooled_rows`: a
SQLite store reads the attached spool file itself, another store loads it into
``tokenrecords_staging`` first); a database holding one token id twice is refused; the rows
are upserted into ``tokenrecords`` by one ``INSERT … SELECT`` (each stamped, see
:mod:`rubix_integration.stores.replicated`), and the rows of that database that disappeared get
a tombstone (looked for only when the database has more live rows than it spooled). Rows the
store refuses roll back that database's transaction only; the database is then recorded as
failed (``rejected_by_store``) in a transaction of its own, and the run goes on. A database that
failed to be read keeps its earlier rows: nothing is lost when it turns unreadable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.errors import StoreError, StoreUnavailableError
from rubix_integration.stores.spools import spooled_rows
from rubix_integration.tokens.models import (
    PROCESSED_TABLE,
    STAGING_TABLE,
    TOKEN_TABLE,
    record_key,
)
from rubix_integration.tokens.pool import Prepared, Task
from rubix_integration.tokens.results import DatabaseResult
from rubix_integration.tokens.spool import COLUMNS

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

log = logging.getLogger("rubix_integration.sync")

__all__ = ["commit"]


def commit(store: Store, task: Task, prepared: Prepared) -> DatabaseResult:
    """Replace the database's rows with the spooled ones (or record why it failed); remove the
    spool; return the database's result."""
    result = prepared.result
    if prepared.spool is None:
        log.warning("database failed: %s", result.error)
        with store.transaction() as conn:
            _save_processed(store, conn, task, result)
        return result
    began = time.perf_counter()
    try:
        with spooled_rows(store, prepared.spool, COLUMNS, staging=STAGING_TABLE,
                          order="staging_id", key=("db_path", task.db_path)) as spooled:
            conn = spooled.conn
            _merge(store, conn, spooled.table, spooled.order, task.db_path)
            result.duration_s += time.perf_counter() - began
            _save_processed(store, conn, task, result)
    except Exception as exc:
        if not _refused(exc):
            raise
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        failed = replace(result, status="failed", error_kind="rejected_by_store",
                         error=f"{task.db_path}: the store refused its rows: {reason}",
                         duration_s=result.duration_s + time.perf_counter() - began)
        log.warning("database failed: %s", failed.error)
        try:
            with store.transaction() as conn:
                _save_processed(store, conn, task, failed)
        except Exception as again:
            # the store cannot record anything: it is not this database's rows that fail
            raise again from exc
        return failed
    finally:
        with contextlib.suppress(OSError):
            os.unlink(prepared.spool)
    return result


def _refused(exc: Exception) -> bool:
    """Whether ``exc`` is the store refusing rows, not the store being out of reach."""
    if isinstance(exc, StoreUnavailableError):
        return False
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return False
    return isinstance(exc, (StoreError, sa.exc.SQLAlchemyError, sqlite3.Error, ValueError,
                            TypeError, OverflowError))


def _merge(store: Store, conn: Connection, s: sa.Table, order: sa.ColumnElement[Any],
           db_path: str) -> None:
    """Upsert the spooled rows of ``db_path`` (in ``s``, numbered by ``order``) into
    ``tokenrecords`` and tombstone its rows that are no longer there."""
    t = TOKEN_TABLE
    staged = s.c.db_path == db_path
    _refuse_duplicates(store, conn, s, staged)
    count = int(conn.execute(sa.select(sa.func.count()).select_from(s).where(staged))
                .scalar_one())
    ordinal = sa.func.row_number().over(order_by=order)
    key = record_key(s.c.token_kind, s.c.db_path, s.c.token_id, ordinal)
    if count:
        node, version = store.stamp_each(conn, t, count, ordinal)
        names = [*COLUMNS, "record_key", "origin_node", "change_version", "deleted_at"]
        rows = sa.select(*(s.c[c] for c in COLUMNS), key, sa.literal(node, sa.String()),
                         version, sa.null()).where(staged)
        insert = sa.insert(t).from_select(names, rows)
        # ON CONFLICT … DO UPDATE is spelled alike by SQLite and PostgreSQL
        sql = str(insert.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        sets = ", ".join(f"{n} = excluded.{n}" for n in names if n != "record_key")
        conn.exec_driver_sql(f"{sql} ON CONFLICT (record_key) DO UPDATE SET {sets}")
    # every spooled row is live now: any other live row of the database disappeared from it
    live = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
        t.c.db_path == db_path, t.c.deleted_at.is_(None))).scalar_one())
    if live <= count:
        return
    keys = sa.select(key.label("k")).where(staged).subquery()
    gone = list(conn.execute(sa.select(t.c.record_key).where(
        t.c.db_path == db_path, t.c.deleted_at.is_(None),
        t.c.record_key.not_in(sa.select(keys.c.k)))).scalars())
    if gone:
        now = datetime.now(timezone.utc)
        stamped = store.stamp(t, [{"deleted_at": now} for _ in gone], connection=conn)
        conn.execute(
            sa.update(t).where(t.c.record_key == sa.bindparam("b_key")).values(
                deleted_at=sa.bindparam("b_deleted"), origin_node=sa.bindparam("b_node"),
                change_version=sa.bindparam("b_version")),
            [{"b_key": k, "b_deleted": r["deleted_at"], "b_node": r["origin_node"],
              "b_version": r["change_version"]} for k, r in zip(gone, stamped, strict=True)])


def _refuse_duplicates(store: Store, conn: Connection, s: sa.Table,
                       staged: sa.ColumnElement[bool]) -> None:
    """Refuse a database holding one token id twice (``tokenrecords`` keeps one row per token
    of a database; a staging table's unique key refuses it too, a spool file has none)."""
    twice = conn.execute(
        sa.select(s.c.token_kind, s.c.token_id).where(staged, s.c.token_id.is_not(None))
        .group_by(s.c.token_kind, s.c.token_id).having(sa.func.count() > 1).limit(1)).first()
    if twice is not None:
        raise StoreError(f"{store.name} store: {twice[0]} id {twice[1]!r} appears twice in "
                         "one database (one row per token is kept)", backend=store.name)


def _save_processed(store: Store, conn: Connection, task: Task, result: DatabaseResult) -> None:
    t = PROCESSED_TABLE
    # an error may quote a value of the node's database: keep it short and storable
    error = None if result.error is None else result.error.replace("\x00", "\ufffd")[:2000]
    row = dict(
        db_path=result.db_path, node_name=result.node_name, source_ip=task.source_ip,
        last_modified=task.last_modified, fingerprint=task.fingerprint,
        last_processed=datetime.now(timezone.utc), record_count=result.record_count,
        ipfs_success_count=result.ipfs_success_count, ipfs_fail_count=result.ipfs_fail_count,
        bad_timestamp_count=result.bad_timestamp_count, status=result.status,
        error=error, duration_s=result.duration_s, deleted_at=None,
    )
    # one row: its stamp may be an SQL expression, which suits a single-row statement
    stamped = store.stamp(t, [row])[0]
    if not conn.execute(sa.update(t).where(t.c.db_path == result.db_path)
                        .values(stamped)).rowcount:
        conn.execute(sa.insert(t).values(stamped))
