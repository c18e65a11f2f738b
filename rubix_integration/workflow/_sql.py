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
    "HOLDERS_PG",
    "LIMITS_LOCK_PG",
    "LOAD_PG",
    "accept",
    "accept_pg",
    "claim",
    "claim_pg",
    "copy_insert",
    "counts",
    "counts_by_type",
    "expired",
    "extend_lease",
    "holders",
    "insert",
    "insert_one_pg",
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
    # the conditions of the partial index on lease expiry (see models)
    query = sa.select(_T.c.task_id).where(
        _T.c.state == "running", _T.c.lease_expires_at_us <= now,
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


def counts_by_type(conn: Connection) -> dict[tuple[str, str], int]:
    """How many tasks of each type are in each state (pairs without tasks left out)."""
    rows = conn.execute(sa.select(_T.c.task_type, _T.c.state, sa.func.count()).where(
        _T.c.deleted_at.is_(None)).group_by(_T.c.task_type, _T.c.state)).all()
    return {(str(t), str(s)): int(n) for t, s, n in rows}


# --- claiming and accepting results ----------------------------------------------------------


def claim(store: Store, conn: Connection, params: Mapping[str, Any], caps: tuple[str, ...],
          types: list[str] | None) -> list[tuple[Task, str]]:
    """Claim up to ``params["limit"]`` tasks as ``params["worker"]``; each claimed task and the
    state it was in."""
    if store.engine.dialect.name == "postgresql":
        sql, args = claim_pg(params, caps, types)
        rows = _pg_rows(conn, sql, args)
        return [(Task._from_values(r), str(r[-1])) for r in rows]
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
    limits: Mapping[str, int] = params.get("limits") or {}
    running = _T.alias("r")
    for task_type, most in sorted(limits.items()):  # a limited type only while below it
        count = sa.select(sa.func.count()).select_from(running).where(
            running.c.task_type == task_type, running.c.state == "running").scalar_subquery()
        query = query.where(sa.or_(_T.c.task_type != task_type, count < most))
    query = query.order_by(_T.c.priority.desc(), _T.c.created_at_us, _T.c.task_id)

    def take(limit: int, tokens: list[str]) -> list[Any]:
        return list(store.claim_update(
            conn, _T, query, limit=limit,
            values={"state": "running", "worker_id": params["worker"],
                    "lease_expires_at_us": params["exp"], "due_at_us": params["exp"],
                    "attempts": _T.c.attempts + 1, "updated_at_us": params["now"]},
            per_row={"lease_token": tokens}, carry=["old_state"],
            returning=[_T.c[c] for c in COLUMNS],
            # walk the claim index in order instead of sorting every claimable row (the
            # planner cannot estimate the JSON conditions and would otherwise sort)
            planner_hints=["enable_sort = off"]))

    if not limits:
        rows = take(params["limit"], params["tokens"])
    else:  # one at a time, each seeing the ones before (the transaction holds the write lock)
        rows = []
        for token in params["tokens"][:params["limit"]]:
            got = take(1, [token])
            if not got:
                break
            rows += got
    return [(Task._from_values(r), str(r[-1])) for r in rows]


def accept(store: Store, conn: Connection, items: list[validate.Result], worker_id: str | None,
           now: int, node: str) -> dict[str, Task]:
    """Complete each of ``items`` still running under its lease token (and ``worker_id``);
    the tasks completed, by id."""
    if store.engine.dialect.name == "postgresql":
        sql, params = accept_pg(items, worker_id, now, node)
        return {str(r[0]): Task._from_values(r) for r in _pg_rows(conn, sql, params)}
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


#: The conditions a task must meet to be claimed (PostgreSQL), after ``WHERE``.
_CLAIMABLE_PG = """due_at_us IS NOT NULL AND due_at_us <= %(now)s
            AND attempts < max_attempts AND deleted_at IS NULL
            AND required_caps <@ CAST(%(caps)s AS jsonb)
            AND (preferred_caps = '[]'::jsonb
                 OR preferred_caps ?| CAST(%(caps_arr)s AS text[])
                 OR created_at_us <= %(pref_cutoff)s)"""

#: Taking the tasks a ``c`` (``task_id``, ``old_state``) holds for a worker (PostgreSQL).
_TAKE_PG = f"""UPDATE workflow_tasks AS t
        SET state = 'running', worker_id = %(worker)s,
            lease_token = replace(CAST(gen_random_uuid() AS text), '-', ''),
            lease_expires_at_us = %(exp)s, due_at_us = %(exp)s,
            attempts = t.attempts + 1, updated_at_us = %(now)s, origin_node = %(node)s,
            change_version = nextval('workflow_tasks_change_version_seq')
        FROM c WHERE t.task_id = c.task_id
        RETURNING {_RETURNING}, c.old_state"""


# Claims and completions on PostgreSQL keep hand-written statements, run through psycopg: built,
# compiled and executed by SQLAlchemy through the store's generic primitives, a claim and its
# completion take about three times the worker's CPU there.

def claim_pg(params: Mapping[str, Any], caps: tuple[str, ...],
             types: list[str] | None) -> tuple[str, dict[str, Any]]:
    """The claiming statement on PostgreSQL and its parameters; its rows are the claimed tasks
    in :data:`COLUMNS` order, then the state each was in.

    The connection it runs on has ``enable_sort = off`` for the session (see
    :class:`~._transactions.Transactions`), so the planner walks the claim index in order
    instead of sorting every claimable row (it cannot estimate the JSONB conditions).
    """
    args = {**params, "caps_arr": list(caps)}
    type_clause = ""
    if types is not None:
        args["types"] = types
        type_clause = "AND task_type = ANY(%(types)s)"
    if params.get("limits"):
        args["limits"] = json.dumps(dict(params["limits"]))
        return _claim_limited_pg(type_clause), args
    sql = f"""
        WITH c AS (
          SELECT task_id, state AS old_state FROM workflow_tasks
          WHERE {_CLAIMABLE_PG}
            {type_clause}
          ORDER BY priority DESC, created_at_us, task_id
          LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        {_TAKE_PG}"""
    # lease tokens are drawn by the server (122 random bits each): an array of them as a
    # parameter costs the driver a loop per element
    args.pop("tokens", None)
    return sql, args


#: The lock a claim under concurrency limits holds until it commits (PostgreSQL): such claims
#: run one at a time, each seeing the running tasks the ones before it claimed.
LIMITS_LOCK_PG = ("SELECT pg_advisory_xact_lock(hashtext("
                  "'rubix_integration.workflow.limits'))")

_RUNNING_OF = ("(SELECT count(*) FROM workflow_tasks AS r WHERE r.task_type = {t} "
               "AND r.state = 'running')")


def _claim_limited_pg(type_clause: str) -> str:
    """The claiming statement under concurrency limits per task type (``%(limits)s``: a JSON
    object of type to the most running at once); run after :data:`LIMITS_LOCK_PG`."""
    limited = "(CAST(%(limits)s AS jsonb) ? {t})"
    most = "CAST(CAST(%(limits)s AS jsonb) ->> {t} AS integer)"
    below = (f"(NOT {limited} OR {_RUNNING_OF} < {most})").format(t="workflow_tasks.task_type")
    fits = (f"(NOT {limited} OR x.rk + {_RUNNING_OF} <= {most})").format(t="x.task_type")
    return f"""
        WITH c0 AS (
          SELECT task_id, state AS old_state, task_type, priority, created_at_us
          FROM workflow_tasks
          WHERE {_CLAIMABLE_PG}
            AND {below}
            {type_clause}
          ORDER BY priority DESC, created_at_us, task_id
          LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
        c AS (
          SELECT x.task_id, x.old_state FROM (
            SELECT c0.*, row_number() OVER (PARTITION BY task_type
                                            ORDER BY priority DESC, created_at_us, task_id)
                   AS rk FROM c0) AS x
          WHERE {fits})
        {_TAKE_PG}"""


#: One task's row in :data:`COLUMNS` order (PostgreSQL; ``%(id)s``: its id).
LOAD_PG = (f"SELECT {_RETURNING} FROM workflow_tasks AS t "
           "WHERE t.task_id = %(id)s AND t.deleted_at IS NULL")

#: What the fencing check needs of some tasks (PostgreSQL; ``%s``: an array of ids).
HOLDERS_PG = ("SELECT task_id, state, worker_id, lease_token FROM workflow_tasks "
              "WHERE task_id IN (SELECT jsonb_array_elements_text(CAST(%s AS jsonb))) "
              "AND deleted_at IS NULL")


def insert_one_pg(row: Mapping[str, Any], record: Sequence[Any], node: str,
                  channel: str) -> tuple[str, dict[str, Any]]:
    """One statement inserting a new task (``row``), its provenance ``record`` (a row as
    :func:`~._pgfast.record_rows` gives) and a notification on ``channel``, or nothing when the
    id exists; it returns the task's row when it was created."""
    cols = [c for c in row if c not in _JSON_COLUMNS]
    json_cols = [c for c in row if c in _JSON_COLUMNS]
    names = ", ".join([*cols, *json_cols, "origin_node", "change_version"])
    values = ", ".join([*(f"%({c})s" for c in cols),
                        *(f"CAST(%({c})s AS jsonb)" for c in json_cols), "%(node)s",
                        "nextval('workflow_tasks_change_version_seq')"])
    sql = f"""
        WITH t AS (
          INSERT INTO workflow_tasks AS t ({names}) VALUES ({values})
          ON CONFLICT (task_id) DO NOTHING RETURNING {_RETURNING}),
        p AS (
          INSERT INTO provenance_records (cid, chain, seq, prev, type, timestamp_us,
                                          origin_node, data, block, published)
          SELECT %(r_cid)s, %(r_chain)s, %(r_seq)s, %(r_prev)s, %(r_type)s, %(r_ts)s,
                 %(r_node)s, CAST(%(r_data)s AS jsonb), %(r_block)s, false FROM t),
        n AS (SELECT pg_notify(%(channel)s, t.task_type) AS sent FROM t)
        SELECT t.*, (SELECT count(*) FROM n) FROM t"""
    args: dict[str, Any] = {c: row[c] for c in cols}
    args.update({c: json.dumps(row[c], separators=(",", ":")) for c in json_cols})
    cid, chain, seq, prev, rtype, ts, rnode, data, block = record[:9]
    args.update(node=node, channel=channel, r_cid=cid, r_chain=chain, r_seq=seq, r_prev=prev,
                r_type=rtype, r_ts=ts, r_node=rnode, r_data=data, r_block=block)
    return sql, args


_JSON_COLUMNS = frozenset({"data", "tags", "required_caps", "preferred_caps", "result"})


def accept_pg(items: list[validate.Result], worker_id: str | None, now: int,
              node: str) -> tuple[str, dict[str, Any]]:
    """The statement accepting results on PostgreSQL and its parameters; its rows are the
    completed tasks in :data:`COLUMNS` order."""
    sql = f"""
        UPDATE workflow_tasks AS t
        SET state = 'completed', result = v.result, due_at_us = NULL,
            lease_token = NULL, finished_at_us = %(now)s, updated_at_us = %(now)s,
            origin_node = %(node)s,
            change_version = nextval('workflow_tasks_change_version_seq')
        FROM jsonb_to_recordset(CAST(%(items)s AS jsonb))
             AS v(task_id text, token text, result jsonb)
        WHERE t.task_id = v.task_id
          AND t.state = 'running' AND t.deleted_at IS NULL
          AND (v.token IS NULL OR t.lease_token = v.token)
          AND (CAST(%(worker)s AS text) IS NULL OR t.worker_id = %(worker)s)
        RETURNING {_RETURNING}"""
    dump = json.dumps
    # one text parameter (see _pgfast.record_insert); each result is JSON text already
    text = "[" + ",".join(
        f'{{"task_id":{dump(i.task_id)},"token":{dump(i.lease_token)},"result":{i.text}}}'
        for i in items) + "]"
    params = {"now": now, "node": node, "worker": worker_id, "items": text}
    return sql, params


def _pg_rows(conn: Connection, sql: str, params: Mapping[str, Any],
             setup: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """``sql``'s rows, run (after the ``setup`` statements) on the psycopg connection under
    ``conn``, in its transaction: no statement compiling, no result processing.

    Driver errors are raised as SQLAlchemy's; a lost connection is invalidated.
    """
    import psycopg

    raw: Any = conn.connection.dbapi_connection
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


_COPY_COLUMNS = ("task_id", "task_type", "state", "priority", "data", "tags", "required_caps",
                 "preferred_caps", "attempts", "max_attempts", "created_at_us",
                 "updated_at_us", "due_at_us")


def copy_insert(store: Store, conn: Connection, rows: list[dict[str, Any]],
                texts: list[str] | None = None) -> list[dict[str, Any]]:
    """Insert the rows whose ``task_id`` is new through ``COPY`` (PostgreSQL), in ``conn``'s
    transaction; the rows of the tasks created, in the order given. ``texts``: each row's data
    as JSON text already (else encoded here)."""
    node = store.node_id
    store.stamp(_T, [{}])  # keeps the change versions on the store's clock
    raw: Any = conn.connection.dbapi_connection
    encode = json.JSONEncoder(separators=(",", ":")).encode
    known: dict[tuple[str, ...], str] = {}

    def dump(value: list[str]) -> str:  # tag lists: mostly empty, mostly alike
        key = tuple(value)
        text = known.get(key)
        if text is None:
            text = known[key] = encode(value)
        return text

    datas = texts if texts is not None else [encode(r["data"]) for r in rows]
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS workflow_tasks_in (ord bigint, task_id text, "
            "task_type text, state text, priority integer, data jsonb, tags jsonb, "
            "required_caps jsonb, preferred_caps jsonb, attempts integer, "
            "max_attempts integer, created_at_us bigint, updated_at_us bigint, "
            "due_at_us bigint) ON COMMIT DROP")
        with cur.copy(f"COPY workflow_tasks_in (ord, {', '.join(_COPY_COLUMNS)}) "
                      "FROM STDIN") as copy:
            for i, row in enumerate(rows):
                copy.write_row((i, row["task_id"], row["task_type"], row["state"],
                                row["priority"], datas[i], dump(row["tags"]),
                                dump(row["required_caps"]), dump(row["preferred_caps"]),
                                row["attempts"], row["max_attempts"], row["created_at_us"],
                                row["updated_at_us"], row["due_at_us"]))
        cols = ", ".join(_COPY_COLUMNS)
        cur.execute(
            f"INSERT INTO workflow_tasks AS t ({cols}, origin_node, change_version) "
            f"SELECT {cols}, %(node)s, nextval('workflow_tasks_change_version_seq') "
            "FROM workflow_tasks_in ORDER BY ord "
            "ON CONFLICT (task_id) DO NOTHING RETURNING t.task_id", {"node": node})
        # the rows as given are the rows stored: no need to read them back. An id given twice
        # was inserted from its first row (the rows go in in order; the later ones conflict)
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(row["task_id"], i)
        created = [rows[i] for i in sorted(first[task_id] for (task_id,) in cur.fetchall())]
        cur.execute("DROP TABLE workflow_tasks_in")
    return created
