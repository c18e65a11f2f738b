"""The workflow coordinator: a task queue in the store, shared by workers on many machines.

Task states::

    pending ──claim──> running ──complete──> completed
       ^                 │  │
       │   (backoff)     │  └─fail, attempts left──> retry_wait ──(due)──> claimable again
       │                 ├─fail on the last attempt, or lease lost on it──> dead
       │                 └─release (worker stopping)──> pending
       └──────── resubmit_task (dead or cancelled) ──┘
    pending | retry_wait | running ──cancel──> cancelled

- **Claiming is atomic.** PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claiming
  ``UPDATE``, so concurrent workers never wait for or take the same row. SQLite: the claim runs in
  a ``BEGIN IMMEDIATE`` transaction, which holds the database's write lock.
- **Leases and fencing.** A claim gives the worker a lease (``lease_seconds``) and a fresh
  ``lease_token``; :meth:`WorkflowCoordinator.heartbeat` extends it. When the lease expires the
  task is claimable again (that counts as an attempt) and gets a new token. Completing, failing,
  releasing or heartbeating with a token (or worker id) that no longer holds the task raises
  :class:`~rubix_integration.workflow.errors.LeaseLostError` and changes nothing, so each task
  has exactly one accepted result. A holder whose lease ran out but whose task nobody claimed
  yet still holds it.
- **Retries.** A failed attempt is retried after ``backoff_base * 2**(attempt-1)`` seconds (at
  most ``backoff_max``) until ``max_attempts``; then the task is ``dead``: kept, listable, and
  revived by :meth:`WorkflowCoordinator.resubmit_task`.
- **Idempotent submit.** Submitting an existing ``task_id`` with the same type, data, priority
  and tags returns the stored task unchanged; different content raises ``TaskConflictError``.
- Every state change is appended to the provenance log (type ``task_state``) in the same
  transaction, and announced through the ``task_state_changed`` hook after commit.
- Payloads (``data`` and ``result``) are JSON (DAG-JSON: bytes and CIDs allowed) of at most
  :data:`MAX_PAYLOAD_BYTES` encoded.

Times come from each caller's clock; machines sharing a store should keep their clocks in sync
(NTP), with leases much longer than any skew.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs import parse_cid
from rubix_integration.provenance import dagjson
from rubix_integration.provenance.errors import InvalidDataError, PayloadTooLargeError
from rubix_integration.provenance.logger import format_time, now_us
from rubix_integration.workflow.errors import (
    LeaseLostError,
    TaskConflictError,
    TaskNotFoundError,
    TaskStateError,
)
from rubix_integration.workflow.matching import normalise_capabilities, parse_tags
from rubix_integration.workflow.models import CHANGE_SEQUENCE, TASK_TABLE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration._manager import Manager
    from rubix_integration.provenance import ProvenanceLogger, Recording
    from rubix_integration.stores.base import Store

__all__ = ["MAX_PAYLOAD_BYTES", "STATES", "Task", "WorkflowCoordinator"]

#: Largest ``data`` or ``result`` accepted, encoded as DAG-JSON: 1 MiB.
MAX_PAYLOAD_BYTES = 1024 * 1024
STATES = ("pending", "running", "retry_wait", "completed", "dead", "cancelled")
ACTIVE = ("pending", "running", "retry_wait")
FINISHED = ("completed", "dead", "cancelled")
_MAX_ERROR = 4000
_T = TASK_TABLE


@dataclass(frozen=True)
class Task:
    """A task's fields as stored (times in microseconds since the epoch)."""

    task_id: str
    task_type: str
    state: str
    priority: int
    data: Any
    tags: tuple[str, ...]
    attempts: int
    max_attempts: int
    created_at_us: int
    updated_at_us: int
    due_at_us: int | None
    worker_id: str | None
    lease_token: str | None
    lease_expires_at_us: int | None
    result: Any
    error: str | None
    finished_at_us: int | None

    @classmethod
    def from_row(cls, row: Any) -> Task:
        m = row._mapping
        return cls(
            task_id=m["task_id"], task_type=m["task_type"], state=m["state"],
            priority=int(m["priority"]), data=dagjson.from_json_form(_json(m["data"])),
            tags=tuple(_json(m["tags"]) or ()), attempts=int(m["attempts"]),
            max_attempts=int(m["max_attempts"]), created_at_us=int(m["created_at_us"]),
            updated_at_us=int(m["updated_at_us"]), due_at_us=m["due_at_us"],
            worker_id=m["worker_id"], lease_token=m["lease_token"],
            lease_expires_at_us=m["lease_expires_at_us"],
            result=dagjson.from_json_form(_json(m["result"])), error=m["error"],
            finished_at_us=m["finished_at_us"])

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values; times as ISO text."""
        def t(us: int | None) -> str | None:
            return None if us is None else format_time(us)

        return {
            "task_id": self.task_id, "task_type": self.task_type, "state": self.state,
            "priority": self.priority, "data": dagjson.to_json_form(self.data),
            "tags": list(self.tags), "attempts": self.attempts,
            "max_attempts": self.max_attempts, "created_at": t(self.created_at_us),
            "updated_at": t(self.updated_at_us), "due_at": t(self.due_at_us),
            "worker_id": self.worker_id, "lease_token": self.lease_token,
            "lease_expires_at": t(self.lease_expires_at_us),
            "result": dagjson.to_json_form(self.result), "error": self.error,
            "finished_at": t(self.finished_at_us),
        }


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def _payload(value: Any, what: str) -> Any:
    encoded = dagjson.encode(value)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"task {what} is {len(encoded)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} "
            "bytes (store large content in IPFS and pass its CID)",
            size=len(encoded), limit=MAX_PAYLOAD_BYTES, path=what)
    import json

    return json.loads(encoded)


class WorkflowCoordinator:
    """Submit, claim, heartbeat, complete, fail, cancel and list tasks (see the module doc).

    ``lease_seconds``: how long a claim lasts without a heartbeat. ``max_attempts``: default per
    task. ``backoff_base``/``backoff_max``: retry delays in seconds. ``preferred_wait``: how long
    a task with a ``*_PREFERRED`` tag waits for a capable worker before any worker may take it.
    """

    def __init__(
        self,
        manager: Manager,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        preferred_wait: float = 30.0,
        provenance: ProvenanceLogger | None = None,
    ) -> None:
        if lease_seconds <= 0 or max_attempts < 1 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("lease_seconds must be > 0, max_attempts >= 1, backoffs >= 0")
        self.manager = manager
        self.lease_seconds = float(lease_seconds)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.preferred_wait = float(preferred_wait)
        self._provenance = provenance
        self._last_sweep = 0.0

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.manager.store

    @property
    def provenance(self) -> ProvenanceLogger:
        if self._provenance is None:
            self._provenance = self.manager.provenance
        return self._provenance

    @property
    def _pg(self) -> bool:
        return self.store.engine.dialect.name == "postgresql"

    def _next_version(self) -> Any:
        if self._pg:
            return CHANGE_SEQUENCE.next_value()
        return (sa.select(sa.func.coalesce(sa.func.max(_T.c.change_version), 0) + 1)
                .scalar_subquery())

    def _record(self, rec: Recording, task: Task, old_state: str | None) -> None:
        data: dict[str, Any] = {
            "task_id": task.task_id, "task_type": task.task_type, "old_state": old_state,
            "new_state": task.state, "attempt": task.attempts,
        }
        if task.worker_id is not None:
            data["worker_id"] = task.worker_id
        if task.state == "completed":
            data["result"] = parse_cid(dagjson.cid_text_for_block(dagjson.encode(task.result)))
        if task.error is not None and task.state in ("retry_wait", "dead"):
            data["error"] = task.error[:500]
        rec.add("task_state", data)

    def _announce(self, events: Sequence[tuple[Task, str | None]]) -> None:
        hook = getattr(self.manager.hook, "task_state_changed", None)
        if hook is None or not hook.get_hookimpls():
            return
        for task, old_state in events:
            self.manager.notify("task_state_changed", task=task.as_dict(), old_state=old_state,
                                new_state=task.state)

    def _load(self, conn: Connection, task_id: str, *, lock: bool = True) -> Any:
        query = sa.select(_T).where(_T.c.task_id == task_id, _T.c.deleted_at.is_(None))
        if lock and self._pg:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
        return row

    def _update(self, conn: Connection, task_id: str, **values: Any) -> Task:
        values.setdefault("updated_at_us", now_us())
        row = conn.execute(
            sa.update(_T).where(_T.c.task_id == task_id)
            .values(origin_node=self.provenance.node_id, change_version=self._next_version(),
                    **values)
            .returning(*_T.c)).one()
        return Task.from_row(row)

    def _change(self, task_id: str, change: Any) -> Task:
        """Run ``change(conn, row) -> (values, old_state)`` on one locked task, record it."""
        with self.provenance.recording() as rec, self.store.transaction() as conn:
            row = self._load(conn, task_id)
            values = change(row)
            task = self._update(conn, task_id, **values)
            self._record(rec, task, row.state)
            rec.flush(conn)
        self._announce([(task, row.state)])
        return task

    # --- submitting ----------------------------------------------------------------------------

    def _new_row(self, task_id: str, task_type: str, data: Any, priority: int,
                 tags: Iterable[str] | None, max_attempts: int | None, now: int) -> dict[str, Any]:
        if not isinstance(task_id, str) or not task_id or len(task_id) > 255:
            raise InvalidDataError(f"task_id must be 1 to 255 characters of text, not {task_id!r}",
                                   path="task_id")
        if not isinstance(task_type, str) or not task_type or len(task_type) > 200:
            raise InvalidDataError(f"task_type must be 1 to 200 characters, not {task_type!r}",
                                   path="task_type")
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31 - 1:
            raise InvalidDataError(f"priority must be a 32-bit integer, not {priority!r}",
                                   path="priority")
        attempts = self.max_attempts if max_attempts is None else int(max_attempts)
        if attempts < 1:
            raise InvalidDataError("max_attempts must be at least 1", path="max_attempts")
        try:
            tagset = parse_tags(tags)
        except ValueError as exc:
            raise InvalidDataError(str(exc), path="tags") from exc
        return {
            "task_id": task_id, "task_type": task_type, "state": "pending",
            "priority": priority, "data": _payload(data, "data"), "tags": list(tagset.tags),
            "required_caps": list(tagset.required), "preferred_caps": list(tagset.preferred),
            "attempts": 0, "max_attempts": attempts, "created_at_us": now,
            "updated_at_us": now, "due_at_us": now, "origin_node": self.provenance.node_id,
        }

    def submit_task(
        self,
        task_id: str,
        task_type: str,
        data: Any = None,
        *,
        priority: int = 0,
        tags: Iterable[str] | None = None,
        max_attempts: int | None = None,
    ) -> Task:
        """Queue a task; return it. Idempotent: an existing identical task is returned as is."""
        row = self._new_row(task_id, task_type, data, priority, tags, max_attempts, now_us())
        created = self._insert([row])
        if created:
            return created[0]
        existing = self.get_task_status(task_id)
        same = (existing.task_type == task_type and existing.priority == priority
                and dagjson.to_json_form(existing.data) == row["data"]
                and list(existing.tags) == row["tags"])
        if not same:
            raise TaskConflictError(
                f"task {task_id!r} exists with a different type, data, priority or tags; "
                "use another id", task_id=task_id, state=existing.state)
        return existing

    def submit_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> int:
        """Queue many tasks in one transaction (keys as :meth:`submit_task`'s arguments).

        Ids that exist already are skipped; return how many were created.
        """
        now = now_us()
        rows = [self._new_row(t["task_id"], t["task_type"], t.get("data"), t.get("priority", 0),
                              t.get("tags"), t.get("max_attempts"), now) for t in tasks]
        return len(self._insert(rows))

    def _insert(self, rows: list[dict[str, Any]]) -> list[Task]:
        if not rows:
            return []
        dialect = self.store.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        created: list[Task] = []
        with self.provenance.recording() as rec, self.store.transaction() as conn:
            for start in range(0, len(rows), 1000):
                chunk = rows[start:start + 1000]
                if dialect == "postgresql":
                    stmt = (dialect_insert(_T).values(
                        [{**r, "change_version": CHANGE_SEQUENCE.next_value()} for r in chunk])
                        .on_conflict_do_nothing(index_elements=["task_id"]).returning(*_T.c))
                    created.extend(Task.from_row(r) for r in conn.execute(stmt))
                else:
                    base = int(conn.execute(sa.select(
                        sa.func.coalesce(sa.func.max(_T.c.change_version), 0))).scalar_one())
                    values = [{**r, "change_version": base + i + 1} for i, r in enumerate(chunk)]
                    stmt = (dialect_insert(_T).values(values)
                            .on_conflict_do_nothing(index_elements=["task_id"]).returning(*_T.c))
                    created.extend(Task.from_row(r) for r in conn.execute(stmt))
            for task in created:
                self._record(rec, task, None)
            rec.flush(conn)
        self._announce([(t, None) for t in created])
        return created

    # --- claiming ------------------------------------------------------------------------------

    def get_next_task(
        self,
        worker_id: str,
        capabilities: Iterable[str] | str | None = (),
        *,
        task_types: Iterable[str] | None = None,
    ) -> Task | None:
        """Claim the best task this worker may run (see :mod:`~.matching`), or ``None``.

        The returned task is ``running`` with ``worker_id``, a new ``lease_token`` and
        ``lease_expires_at_us``; ``attempts`` counts this claim.
        """
        if not worker_id or len(worker_id) > 255:
            raise InvalidDataError("worker_id must be 1 to 255 characters", path="worker_id")
        caps = normalise_capabilities(capabilities)
        types = sorted(set(task_types)) if task_types is not None else None
        if types is not None and not types:
            return None
        self._sweep()
        now = now_us()
        lease_us = int(self.lease_seconds * 1_000_000)
        token = secrets.token_hex(16)
        params: dict[str, Any] = {
            "now": now, "worker": worker_id, "token": token, "exp": now + lease_us,
            "pref_cutoff": now - int(self.preferred_wait * 1_000_000),
            "node": self.provenance.node_id,
        }
        import json

        with self.provenance.recording() as rec, self.store.transaction() as conn:
            if self._pg:
                params["caps"] = json.dumps(list(caps))
                params["caps_arr"] = list(caps)
                type_clause = "AND task_type = ANY(:types)" if types is not None else ""
                if types is not None:
                    params["types"] = types
                sql = f"""
                    WITH c AS (
                      SELECT task_id, state AS old_state FROM workflow_tasks
                      WHERE due_at_us IS NOT NULL AND due_at_us <= :now
                        AND attempts < max_attempts AND deleted_at IS NULL
                        AND required_caps <@ CAST(:caps AS jsonb)
                        AND (preferred_caps = '[]'::jsonb
                             OR preferred_caps ?| CAST(:caps_arr AS text[])
                             OR created_at_us <= :pref_cutoff)
                        {type_clause}
                      ORDER BY priority DESC, created_at_us, task_id
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
                    UPDATE workflow_tasks AS t
                    SET state = 'running', worker_id = :worker, lease_token = :token,
                        lease_expires_at_us = :exp, due_at_us = :exp,
                        attempts = t.attempts + 1, updated_at_us = :now, origin_node = :node,
                        change_version = nextval('workflow_tasks_change_version_seq')
                    FROM c WHERE t.task_id = c.task_id
                    RETURNING t.*, c.old_state"""
                # walk the claim index in order instead of sorting every claimable row (the
                # planner cannot estimate the JSONB conditions and would otherwise sort)
                conn.exec_driver_sql("SET LOCAL enable_sort = off")
                pg_row = conn.execute(sa.text(sql), params).first()
                claimed = None if pg_row is None else (
                    Task.from_row(pg_row), str(pg_row._mapping["old_state"]))
            else:
                params["caps"] = json.dumps(list(caps))
                type_clause = ""
                if types is not None:
                    params["types"] = json.dumps(types)
                    type_clause = "AND task_type IN (SELECT value FROM json_each(:types))"
                found = conn.execute(sa.text(f"""
                    SELECT task_id, state FROM workflow_tasks
                    WHERE due_at_us IS NOT NULL AND due_at_us <= :now
                      AND attempts < max_attempts AND deleted_at IS NULL
                      AND NOT EXISTS (SELECT 1 FROM json_each(required_caps)
                                      WHERE value NOT IN (SELECT value FROM json_each(:caps)))
                      AND (preferred_caps = '[]'
                           OR EXISTS (SELECT 1 FROM json_each(preferred_caps)
                                      WHERE value IN (SELECT value FROM json_each(:caps)))
                           OR created_at_us <= :pref_cutoff)
                      {type_clause}
                    ORDER BY priority DESC, created_at_us, task_id LIMIT 1"""), params).first()
                claimed = None
                if found is not None:
                    updated = self._update(
                        conn, found.task_id, state="running", worker_id=worker_id,
                        lease_token=token, lease_expires_at_us=params["exp"],
                        due_at_us=params["exp"], attempts=_T.c.attempts + 1, updated_at_us=now)
                    claimed = (updated, str(found.state))
            if claimed is None:
                return None
            task, old_state = claimed
            self._record(rec, task, old_state)
            rec.flush(conn)
        self._announce([(task, old_state)])
        return task

    def _sweep(self) -> None:
        """Make tasks dead whose lease expired on their last attempt (at most once a second)."""
        clock = time.monotonic()
        if clock - self._last_sweep < 1.0:
            return
        self._last_sweep = clock
        now = now_us()
        with self.provenance.recording() as rec, self.store.transaction() as conn:
            query = sa.select(_T.c.task_id).where(
                _T.c.due_at_us.is_not(None), _T.c.due_at_us <= now, _T.c.state == "running",
                _T.c.attempts >= _T.c.max_attempts)
            if self._pg:
                query = query.with_for_update(skip_locked=True)
            ids = list(conn.execute(query).scalars())
            events = []
            for task_id in ids:
                task = self._update(conn, task_id, state="dead", due_at_us=None,
                                    lease_token=None, finished_at_us=now, updated_at_us=now,
                                    error="lease expired on the last attempt")
                self._record(rec, task, "running")
                events.append((task, "running"))
            rec.flush(conn)
        self._announce(events)

    # --- the lease holder's operations ---------------------------------------------------------

    @staticmethod
    def _check_holder(row: Any, worker_id: str | None, lease_token: str | None,
                      doing: str) -> None:
        if row.state != "running":
            if row.state in FINISHED and row.state != "dead":
                raise TaskStateError(
                    f"cannot {doing} task {row.task_id!r}: it is {row.state}",
                    task_id=row.task_id, state=row.state)
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: it is {row.state}, no longer held",
                task_id=row.task_id, state=row.state)
        if lease_token is not None and row.lease_token != lease_token:
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: the lease was given to another claim "
                f"(now held by {row.worker_id!r})", task_id=row.task_id, state=row.state)
        if worker_id is not None and row.worker_id != worker_id:
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: it is held by {row.worker_id!r}, "
                f"not {worker_id!r}", task_id=row.task_id, state=row.state)

    def heartbeat(self, task_id: str, worker_id: str, *,
                  lease_token: str | None = None) -> Task:
        """Extend the lease of a task the worker holds; return the task with its new expiry."""
        with self.store.transaction() as conn:
            row = self._load(conn, task_id)
            self._check_holder(row, worker_id, lease_token, "heartbeat")
            now = now_us()
            exp = now + int(self.lease_seconds * 1_000_000)
            # a heartbeat is not a state change: no provenance record, no new change version
            updated = conn.execute(
                sa.update(_T).where(_T.c.task_id == task_id)
                .values(lease_expires_at_us=exp, due_at_us=exp).returning(*_T.c)).one()
        return Task.from_row(updated)

    def complete_task(self, task_id: str, result: Any = None, *, worker_id: str | None = None,
                      lease_token: str | None = None) -> Task:
        """Accept the task's result. Refused (``LeaseLostError``) unless the caller still holds
        the task; refused (``TaskStateError``) for a cancelled or completed task."""
        stored = _payload(result, "result")
        now = now_us()
        values = {"state": "completed", "result": stored, "due_at_us": None,
                  "lease_token": None, "finished_at_us": now, "updated_at_us": now}
        # the common case in one statement: the fencing check is the UPDATE's condition
        condition = [_T.c.task_id == task_id, _T.c.state == "running",
                     _T.c.deleted_at.is_(None)]
        if lease_token is not None:
            condition.append(_T.c.lease_token == lease_token)
        if worker_id is not None:
            condition.append(_T.c.worker_id == worker_id)
        with self.provenance.recording() as rec, self.store.transaction() as conn:
            row = conn.execute(
                sa.update(_T).where(*condition)
                .values(origin_node=self.provenance.node_id,
                        change_version=self._next_version(), **values)
                .returning(*_T.c)).first()
            if row is None:
                # say why: unknown, finished, or held by another claim
                self._check_holder(self._load(conn, task_id), worker_id, lease_token,
                                   "complete")
                raise LeaseLostError(f"cannot complete task {task_id!r}: not held",
                                     task_id=task_id)  # pragma: no cover - checked above
            task = Task.from_row(row)
            self._record(rec, task, "running")
            rec.flush(conn)
        self._announce([(task, "running")])
        return task

    def fail_task(self, task_id: str, error: str, *, worker_id: str | None = None,
                  lease_token: str | None = None, retry: bool = True) -> Task:
        """Record a failed attempt: ``retry_wait`` with backoff, or ``dead`` after the last
        attempt (or at once with ``retry=False``)."""
        message = str(error)[:_MAX_ERROR]

        def change(row: Any) -> dict[str, Any]:
            self._check_holder(row, worker_id, lease_token, "fail")
            now = now_us()
            if not retry or row.attempts >= row.max_attempts:
                return {"state": "dead", "error": message, "due_at_us": None,
                        "lease_token": None, "finished_at_us": now, "updated_at_us": now}
            delay = min(self.backoff_max, self.backoff_base * 2 ** (row.attempts - 1))
            return {"state": "retry_wait", "error": message, "lease_token": None,
                    "due_at_us": now + int(delay * 1_000_000), "updated_at_us": now}

        return self._change(task_id, change)

    def release_task(self, task_id: str, *, worker_id: str | None = None,
                     lease_token: str | None = None) -> Task:
        """Give a held task back unfinished (a stopping worker); the attempt is not counted."""
        def change(row: Any) -> dict[str, Any]:
            self._check_holder(row, worker_id, lease_token, "release")
            now = now_us()
            return {"state": "pending", "lease_token": None, "due_at_us": now,
                    "attempts": max(0, row.attempts - 1), "updated_at_us": now}

        return self._change(task_id, change)

    # --- administration ------------------------------------------------------------------------

    def cancel_task(self, task_id: str, *, reason: str | None = None) -> Task:
        """Cancel a task that has not finished; a running worker's later result is refused."""
        def change(row: Any) -> dict[str, Any]:
            if row.state in FINISHED:
                raise TaskStateError(f"cannot cancel task {task_id!r}: it is already {row.state}",
                                     task_id=task_id, state=row.state)
            now = now_us()
            return {"state": "cancelled", "due_at_us": None, "lease_token": None,
                    "finished_at_us": now, "updated_at_us": now,
                    "error": (reason or "cancelled")[:_MAX_ERROR]}

        return self._change(task_id, change)

    def resubmit_task(self, task_id: str, *, max_attempts: int | None = None) -> Task:
        """Queue a dead or cancelled task again, with its attempts reset."""
        def change(row: Any) -> dict[str, Any]:
            if row.state not in ("dead", "cancelled"):
                raise TaskStateError(
                    f"cannot resubmit task {task_id!r}: it is {row.state} (only dead or "
                    "cancelled tasks can be)", task_id=task_id, state=row.state)
            now = now_us()
            values: dict[str, Any] = {
                "state": "pending", "attempts": 0, "due_at_us": now, "worker_id": None,
                "lease_token": None, "lease_expires_at_us": None, "finished_at_us": None,
                "result": None, "updated_at_us": now}
            if max_attempts is not None:
                values["max_attempts"] = max(1, int(max_attempts))
            return values

        return self._change(task_id, change)

    def get_task_status(self, task_id: str) -> Task:
        """The task's current fields; ``TaskNotFoundError`` for an unknown id."""
        with self.store.connect() as conn:
            return Task.from_row(self._load(conn, task_id, lock=False))

    def list_tasks(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                   offset: int = 0) -> list[Task]:
        """Tasks matching ``filters``, oldest first.

        ``state`` (one or a list), ``task_type``, ``worker_id`` and ``tag`` (the task carries
        this tag) are accepted.
        """
        query = sa.select(_T).where(_T.c.deleted_at.is_(None))
        for key, value in (filters or {}).items():
            if key == "state":
                states = [value] if isinstance(value, str) else list(value)
                unknown = set(states) - set(STATES)
                if unknown:
                    raise ValueError(f"unknown state(s) {sorted(unknown)}; states: "
                                     f"{', '.join(STATES)}")
                query = query.where(_T.c.state.in_(states))
            elif key in ("task_type", "worker_id"):
                query = query.where(_T.c[key] == value)
            elif key == "tag":
                if self._pg:
                    query = query.where(_T.c.tags.op("?")(str(value)))
                else:
                    query = query.where(sa.text(
                        "EXISTS (SELECT 1 FROM json_each(workflow_tasks.tags) WHERE value = :tag)"
                    ).bindparams(tag=str(value)))
            else:
                raise ValueError(f"unknown task filter {key!r}: use state, task_type, "
                                 "worker_id or tag")
        query = query.order_by(_T.c.created_at_us, _T.c.task_id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.store.connect() as conn:
            return [Task.from_row(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        with self.store.connect() as conn:
            rows = conn.execute(sa.select(_T.c.state, sa.func.count()).where(
                _T.c.deleted_at.is_(None)).group_by(_T.c.state)).all()
        out = dict.fromkeys(STATES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out

    def __repr__(self) -> str:
        return f"<WorkflowCoordinator lease={self.lease_seconds}s>"
