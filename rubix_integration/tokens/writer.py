"""The one writer of a sync: replaces a database's rows with its spool's, in one transaction.

Rows the store refuses roll back that database's transaction only; the database is then recorded
as failed (``rejected_by_store``) in a transaction of its own, and the run goes on. A database
that failed to be read keeps its earlier rows: nothing is lost when it turns unreadable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import sqlalchemy as sa

from rubix_integration.errors import StoreError, StoreUnavailableError
from rubix_integration.stores.spools import load_spool
from rubix_integration.tokens.models import PROCESSED_TABLE, TOKEN_TABLE
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
            _save_processed(conn, task, result)
        return result
    began = time.perf_counter()
    try:
        with load_spool(store, TOKEN_TABLE, prepared.spool, COLUMNS,
                        key=("db_path", task.db_path)) as conn:
            result.duration_s += time.perf_counter() - began
            _save_processed(conn, task, result)
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
                _save_processed(conn, task, failed)
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


def _save_processed(conn: Connection, task: Task, result: DatabaseResult) -> None:
    t = PROCESSED_TABLE
    # an error may quote a value of the node's database: keep it short and storable
    error = None if result.error is None else result.error.replace("\x00", "\ufffd")[:2000]
    conn.execute(sa.delete(t).where(t.c.db_path == result.db_path))
    conn.execute(sa.insert(t).values(
        db_path=result.db_path, node_name=result.node_name, source_ip=task.source_ip,
        last_modified=task.last_modified, fingerprint=task.fingerprint,
        last_processed=datetime.now(timezone.utc), record_count=result.record_count,
        ipfs_success_count=result.ipfs_success_count, ipfs_fail_count=result.ipfs_fail_count,
        bad_timestamp_count=result.bad_timestamp_count, status=result.status,
        error=error, duration_s=result.duration_s,
    ))
