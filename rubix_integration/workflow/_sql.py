"""The workflow's statements on ``workflow_tasks`` and the mapping of their rows to tasks.

Every function runs in the transaction of the ``conn`` it is given; deciding what a change sets
is :mod:`~rubix_integration.workflow.states`' business, checking arguments
:mod:`~rubix_integration.workflow.validate`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.errors import InvalidDataError, TaskNotFoundError
from rubix_integration.stores.base import Store
from rubix_integration.workflow import validate
from rubix_integration.workflow.models import TASK_TABLE
from rubix_integration.workflow.states import STATES, Holder, completed
from rubix_integration.workflow.task import COLUMNS, Task

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "accept",
    "claim",
    "counts",
    "expired",
    "extend_lease",
    "holders",
    "insert",
    "list_query",
    "load",
    "update",
]

_T = TASK_TABLE
_RETURNING = ", ".join(f"t.{c}" for c in COLUMNS)


def load(store: Store, conn: Connection, task_id: str, *, lock: bool = True) -> Any:
    """The row of ``task_id`` (locked for this transaction unless ``lock`` is false), or
    ``TaskNotFoundError``."""
    query = sa.select(_T).where(_T.c.task_id == task_id, _T.c.deleted_at.is_(None))
    if lock:
        query = store.locked(query)
    row = conn.execute(query).first()
    if row is None:
        raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
    return row


def update(store: Store, conn: Connection, task_id: str, values: Mapping[str, Any]) -> Task:
    """Set ``values`` (stamped) on ``task_id``; the task as changed."""
    row = conn.execute(
        sa.update(_T).where(_T.c.task_id == task_id)
        .values(store.stamp(_T, [values])[0])
        .returning(*_T.c)).one()
    return Task.from_row(row)


def extend_lease(conn: Connection, task_id: str, expires_at_us: int) -> Task:
    """Move the lease expiry of ``task_id``; the task as changed."""
    # a heartbeat is not a state change: no provenance record, no new change version
    row = conn.execute(
        sa.update(_T).where(_T.c.task_id == task_id)
        .values(lease_expires_at_us=expires_at_us, due_at_us=expires_at_us)
        .returning(*_T.c)).one()
    return Task.from_row(row)


def insert(store: Store, conn: Connection, rows: list[dict[str, Any]]) -> list[Task]:
    """Insert the rows whose ``task_id`` is new; the tasks created."""
    stamped = store.stamp(_T, rows, connection=conn)
    return [Task.from_row(r) for r in store.insert_missing(
        _T, stamped, connection=conn, returning=list(_T.c))]


def expired(store: Store, conn: Connection, now: int) -> list[str]:
    """The running tasks whose lease ran out on their last attempt (locked, others skipped)."""
    query = sa.select(_T.c.task_id).where(
        _T.c.due_at_us.is_not(None), _T.c.due_at_us <= now, _T.c.state == "running",
        _T.c.attempts >= _T.c.max_attempts)
    return list(conn.execute(store.locked(query, skip_locked=True)).scalars())


def holders(conn: Connection, ids: Sequence[str]) -> dict[str, Holder]:
    """What the fencing check needs of each of ``ids`` that exists."""
    return {
        r.task_id: Holder(r.task_id, r.state, r.worker_id, r.lease_token)
        for r in conn.execute(
            sa.select(_T.c.task_id, _T.c.state, _T.c.worker_id, _T.c.lease_token)
            .where(_T.c.task_id.in_(ids), _T.c.deleted_at.is_(None)))
    }


def list_query(store: Store, filters: Mapping[str, Any] | None, limit: int | None,
               offset: int) -> sa.Select[Any]:
    """The query of ``list_tasks`` (its filters checked)."""
    query = sa.select(_T).where(_T.c.deleted_at.is_(None))
    for key, value in (filters or {}).items():
        if key == "state":
            if isinstance(value, str):
                states: list[object] = [value]
            elif isinstance(value, Iterable):
                states = list(value)
            else:
                states = [value]
            unknown = [v for v in states if v not in STATES]
            if unknown:
                raise InvalidDataError(
                    f"unknown state(s) {', '.join(validate.shown(v) for v in unknown)}; "
                    f"states: {', '.join(STATES)}", path="state")
            query = query.where(_T.c.state.in_(states))
        elif key in ("task_type", "worker_id", "tag"):
            text = validate.text(value, key, validate.MAX_ERROR)
            if key != "tag":
                query = query.where(_T.c[key] == text)
            else:
                query = query.where(store.json_array_contains(_T.c.tags, text))
        else:
            raise InvalidDataError(f"unknown task filter {validate.shown(key)}: use state, "
                                   "task_type, worker_id or tag", path="filters")
    query = query.order_by(_T.c.created_at_us, _T.c.task_id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return query


def counts(conn: Connection) -> dict[str, int]:
    """How many tasks are in each state."""
    rows = conn.execute(sa.select(_T.c.state, sa.func.count()).where(
        _T.c.deleted_at.is_(None)).group_by(_T.c.state)).all()
    out = dict.fromkeys(STATES, 0)
    out.update({str(s): int(n) for s, n in rows})
    return out


# --- claiming and accepting results ----------------------------------------------------------


def claim(store: Store, conn: Connection, params: Mapping[str, Any], caps: tuple[str, ...],
          types: list[str] | None) -> list[tuple[Task, str]]:
    """Claim up to ``params["limit"]`` tasks as ``params["worker"]``; each claimed task and the
    state it was in."""
    if store.engine.dialect.name == "postgresql":
        return _claim_pg(conn, params, caps, types)
    return _claim(store, conn, params, caps, types)


def _claim(store: Store, conn: Connection, params: Mapping[str, Any], caps: tuple[str, ...],
           types: list[str] | None) -> list[tuple[Task, str]]:
    caps_list = list(caps)
    query = sa.select(_T.c.task_id, _T.c.state.label("old_state")).where(
        _T.c.due_at_us.is_not(None), _T.c.due_at_us <= params["now"],
        _T.c.attempts < _T.c.max_attempts, _T.c.deleted_at.is_(None),
        store.json_array_within(_T.c.required_caps, caps_list),
        sa.or_(store.json_array_within(_T.c.preferred_caps, []),
               store.json_array_overlaps(_T.c.preferred_caps, caps_list),
               _T.c.created_at_us <= params["pref_cutoff"]),
    )
    if types is not None:
        query = query.where(_T.c.task_type.in_(types))
    query = query.order_by(_T.c.priority.desc(), _T.c.created_at_us, _T.c.task_id)
    rows = store.claim_update(
        conn, _T, query, limit=params["limit"],
        values={"state": "running", "worker_id": params["worker"],
                "lease_expires_at_us": params["exp"], "due_at_us": params["exp"],
                "attempts": _T.c.attempts + 1, "updated_at_us": params["now"]},
        per_row={"lease_token": params["tokens"]}, carry=["old_state"],
        returning=[_T.c[c] for c in COLUMNS],
        # walk the claim index in order instead of sorting every claimable row (the
        # planner cannot estimate the JSON conditions and would otherwise sort)
        planner_hints=["enable_sort = off"])
    return [(Task._from_values(r), str(r[-1])) for r in rows]


def accept(store: Store, conn: Connection, items: list[validate.Result], worker_id: str | None,
           now: int, node: str) -> dict[str, Task]:
    """Complete each of ``items`` still running under its lease token (and ``worker_id``);
    the tasks completed, by id."""
    if store.engine.dialect.name == "postgresql":
        return _accept_pg(conn, items, worker_id, now, node)
    return _accept(store, conn, items, worker_id, now)


def _accept(store: Store, conn: Connection, items: list[validate.Result], worker_id: str | None,
            now: int) -> dict[str, Task]:
    where = [_T.c.state == "running", _T.c.deleted_at.is_(None)]
    if worker_id is not None:
        where.append(_T.c.worker_id == worker_id)
    rows = store.update_each(
        conn, _T,
        [{"task_id": i.task_id, "result": json.loads(i.text), "token": i.lease_token}
         for i in items],
        assign=["result"], expect={"lease_token": "token"},
        values=completed(now), where=where, returning=[_T.c[c] for c in COLUMNS])
    return {str(r[0]): Task._from_values(r) for r in rows}


# Claims and completions on PostgreSQL keep hand-written statements, run through psycopg: built,
# compiled and executed by SQLAlchemy through the store's generic primitives, a claim and its
# completion take about three times the worker's CPU there.

def _claim_pg(conn: Connection, params: Mapping[str, Any], caps: tuple[str, ...],
              types: list[str] | None) -> list[tuple[Task, str]]:
    params = {**params, "caps_arr": list(caps)}
    type_clause = ""
    if types is not None:
        params["types"] = types
        type_clause = "AND task_type = ANY(%(types)s)"
    sql = f"""
        WITH c AS (
          SELECT task_id, state AS old_state FROM workflow_tasks
          WHERE due_at_us IS NOT NULL AND due_at_us <= %(now)s
            AND attempts < max_attempts AND deleted_at IS NULL
            AND required_caps <@ CAST(%(caps)s AS jsonb)
            AND (preferred_caps = '[]'::jsonb
                 OR preferred_caps ?| CAST(%(caps_arr)s AS text[])
                 OR created_at_us <= %(pref_cutoff)s)
            {type_clause}
          ORDER BY priority DESC, created_at_us, task_id
          LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
        n AS (SELECT task_id, old_state, row_number() OVER () AS i FROM c)
        UPDATE workflow_tasks AS t
        SET state = 'running', worker_id = %(worker)s,
            lease_token = (CAST(%(tokens)s AS text[]))[n.i],
            lease_expires_at_us = %(exp)s, due_at_us = %(exp)s,
            attempts = t.attempts + 1, updated_at_us = %(now)s, origin_node = %(node)s,
            change_version = nextval('workflow_tasks_change_version_seq')
        FROM n WHERE t.task_id = n.task_id
        RETURNING {_RETURNING}, n.old_state"""
    # walk the claim index in order instead of sorting every claimable row (the planner
    # cannot estimate the JSONB conditions and would otherwise sort)
    rows = _pg_rows(conn, sql, params, setup=("SET LOCAL enable_sort = off",))
    return [(Task._from_values(r), str(r[-1])) for r in rows]


def _accept_pg(conn: Connection, items: list[validate.Result], worker_id: str | None,
               now: int, node: str) -> dict[str, Task]:
    sql = f"""
        UPDATE workflow_tasks AS t
        SET state = 'completed', result = CAST(v.result AS jsonb), due_at_us = NULL,
            lease_token = NULL, finished_at_us = %(now)s, updated_at_us = %(now)s,
            origin_node = %(node)s,
            change_version = nextval('workflow_tasks_change_version_seq')
        FROM unnest(CAST(%(ids)s AS text[]), CAST(%(tokens)s AS text[]),
                    CAST(%(results)s AS text[])) AS v(task_id, token, result)
        WHERE t.task_id = ANY(CAST(%(ids)s AS text[])) AND t.task_id = v.task_id
          AND t.state = 'running' AND t.deleted_at IS NULL
          AND (v.token IS NULL OR t.lease_token = v.token)
          AND (CAST(%(worker)s AS text) IS NULL OR t.worker_id = %(worker)s)
        RETURNING {_RETURNING}"""
    params = {"now": now, "node": node, "worker": worker_id,
              "ids": [i.task_id for i in items], "tokens": [i.lease_token for i in items],
              "results": [i.text for i in items]}
    return {str(r[0]): Task._from_values(r) for r in _pg_rows(conn, sql, params)}


def _pg_rows(conn: Connection, sql: str, params: Mapping[str, Any],
             setup: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """``sql``'s rows, run (after the ``setup`` statements) on the psycopg connection under
    ``conn``, in its transaction: no statement compiling, no result processing.

    Driver errors are raised as SQLAlchemy's; a lost connection is invalidated.
    """
    import psycopg

    raw: Any = conn.connection.driver_connection
    try:
        with raw.cursor() as cur:
            for statement in setup:
                cur.execute(statement)
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows
    except psycopg.Error as exc:
        error: Any = exc
        lost = bool(conn.dialect.is_disconnect(error, raw, None))
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql, dict(params), exc, psycopg.Error, connection_invalidated=lost,
            dialect=conn.dialect) from exc
