"""The workflow's PostgreSQL transactions in two network round trips.

A state change and its provenance records commit together, yet the records (a hash chain) can
only be built once the change says which task it touched. So each transaction runs as two
pipelines on the psycopg connection under a kept SQLAlchemy connection:

1. ``BEGIN`` and the change (``UPDATE … RETURNING``), sent together, answered together;
2. the provenance rows, any reads that explain refusals, and ``COMMIT``, sent together.

A single submit needs one: its record is known before the statement, which inserts the task,
its record and its wake-up notification at once (autocommit, one statement).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.provenance import Recording

__all__ = ["CANCEL_CHANNEL", "CHANNEL", "PROVENANCE_INSERT", "Followup", "record_insert",
           "record_rows",
           "single", "transact"]

#: The channel a submit notifies (payload: the task type), so that idle workers claim at once.
CHANNEL = "rubix_workflow"
#: The channel a cancel notifies (payload: the task id), so that its worker is told at once.
CANCEL_CHANNEL = "rubix_workflow_cancel"

#: Inserts the provenance rows given as one JSON array of objects (see :func:`record_insert`).
PROVENANCE_INSERT = (
    "INSERT INTO provenance_records (cid, chain, seq, prev, type, timestamp_us, origin_node, "
    "data, block, published) SELECT r.cid, r.chain, r.seq, r.prev, r.type, r.ts, r.node, "
    "r.data, r.block, false FROM jsonb_to_recordset(CAST(%s AS jsonb)) AS r(cid text, "
    "chain text, seq bigint, prev text, type text, ts bigint, node text, data jsonb, "
    "block text)")

#: What the second pipeline sends before ``COMMIT``: ``(sql, params)`` or ``(sql, [params…])``
#: for one statement per parameter set.
Followup = list[tuple[str, Any]]


def record_rows(rec: Recording) -> list[tuple[Any, ...]]:
    """The rows of the records added to ``rec`` since its last flush, taken out of it (they are
    then this module's to insert, as :meth:`Recording.flush` would have)."""
    rows: list[tuple[Any, ...]] = rec._rows
    rec._rows, rec._plain = [], []
    return rows


def record_insert(rec: Recording) -> tuple[str, Any]:
    """The statement inserting the records added to ``rec`` (taken out of it), for a
    :data:`Followup`: one statement however many."""
    # one text parameter: a driver adapts it at once, where arrays cost a loop per element
    dump = json.dumps
    items = [
        f'{{"cid":{dump(cid)},"chain":{dump(chain)},"seq":{int(seq)},"prev":{dump(prev)},'
        f'"type":{dump(type_)},"ts":{int(ts)},"node":{dump(node)},"data":{data},'
        f'"block":{dump(block)}}}'
        for cid, chain, seq, prev, type_, ts, node, data, block, *_ in record_rows(rec)]
    return PROVENANCE_INSERT, ("[" + ",".join(items) + "]",)


def _raw(conn: Connection) -> Any:
    return conn.connection.dbapi_connection


def transact(conn: Connection, sql: str, params: Mapping[str, Any],
             follow: Callable[[list[tuple[Any, ...]]], tuple[Followup, Any]],
             committing: list[bool], before: Sequence[str] = (),
             also: tuple[str, Mapping[str, Any]] | None = None,
             also_rows: list[list[tuple[Any, ...]]] | None = None,
             ) -> tuple[list[tuple[Any, ...]], Any, list[list[Any]]]:
    """Run ``sql`` in a new transaction (after the ``before`` statements, in the same
    pipeline), then ``follow(rows)``'s statements and ``COMMIT``.

    ``also``: a second statement sent in the first pipeline after ``sql``; its rows are
    appended to ``also_rows`` before ``follow`` is called.

    Returns the rows of ``sql``, the value ``follow`` gave, and the rows of each follow-up
    statement that returns any. ``committing`` gets an item before ``COMMIT`` is sent. Any error
    rolls back; driver errors come out as SQLAlchemy's (a lost connection invalidated).
    """
    import psycopg

    raw = _raw(conn)
    raw.autocommit = True  # BEGIN and COMMIT are sent in the pipelines below
    try:
        with raw.cursor() as begin, raw.cursor() as cur, raw.cursor() as second:
            with raw.pipeline():
                begin.execute("BEGIN")
                for statement in before:
                    begin.execute(statement)
                cur.execute(sql, params)
                if also is not None:
                    second.execute(*also)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            if also is not None and also_rows is not None:
                also_rows.append(second.fetchall())
            statements, value = follow(rows)
            committing.append(True)
            cursors: list[Any] = []
            try:
                with raw.pipeline():
                    for statement, args in statements:
                        c = raw.cursor()
                        cursors.append(c)
                        if isinstance(args, list):
                            if args:
                                c.executemany(statement, args)
                        else:
                            c.execute(statement, args)
                    begin.execute("COMMIT")
                results = [c.fetchall() if c.description is not None else [] for c in cursors]
            finally:
                for c in cursors:
                    c.close()
        return rows, value, results
    except psycopg.Error as exc:
        raise _translate(conn, raw, exc, sql, params) from exc
    except BaseException:
        _rollback(raw)
        raise
    finally:
        _settle(raw)


def single(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run one statement on its own (autocommit): one round trip."""
    import psycopg

    raw = _raw(conn)
    raw.autocommit = True
    try:
        with raw.cursor() as cur:
            with raw.pipeline():  # a statement being prepared costs no round trip of its own
                cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
    except psycopg.Error as exc:
        raise _translate(conn, raw, exc, sql, params) from exc
    finally:
        _settle(raw)


def _rollback(raw: Any) -> None:
    from psycopg.pq import TransactionStatus

    if raw.closed or raw.info.transaction_status == TransactionStatus.IDLE:
        return
    with contextlib.suppress(Exception):  # the connection is gone; the server rolled back
        raw.execute("ROLLBACK")


def _settle(raw: Any) -> None:
    """Leave the connection as SQLAlchemy expects it: idle, not in autocommit."""
    if raw.closed:
        return
    _rollback(raw)
    with contextlib.suppress(Exception):  # broken: invalidated by the caller
        raw.autocommit = False


def _translate(conn: Connection, raw: Any, exc: Exception, sql: str,
               params: Mapping[str, Any] | Sequence[Any]) -> sa.exc.DBAPIError:
    import psycopg

    error: Any = exc
    lost = bool(conn.dialect.is_disconnect(error, raw, None)) or bool(raw.closed)
    if lost:
        conn.invalidate(exc)
    else:
        _rollback(raw)
    error_out = sa.exc.DBAPIError.instance(
        sql, dict(params) if isinstance(params, Mapping) else list(params), exc, psycopg.Error,
        connection_invalidated=lost, dialect=conn.dialect)
    assert isinstance(error_out, sa.exc.DBAPIError)
    return error_out
