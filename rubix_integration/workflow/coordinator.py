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
  :meth:`WorkflowCoordinator.get_next_tasks` claims several tasks in one transaction; each gets
  a lease and token of its own, exactly as if claimed one by one.
- **Leases and fencing.** A claim gives the worker a lease (``lease_seconds``) and a fresh
  ``lease_token``; :meth:`WorkflowCoordinator.heartbeat` extends it. When the lease expires the
  task is claimable again (that counts as an attempt) and gets a new token. Changing a running
  task (completing, failing, releasing, heartbeating, cancelling) takes holding it: the caller
  passes its claim's ``lease_token``, or is the coordinator instance that made the claim (each
  instance remembers, in memory, the tokens of the claims it made, so that its bare calls are
  fenced too). Any other caller, and a token (or worker id) that no longer holds the task, gets
  :class:`~rubix_integration.errors.LeaseLostError` and changes nothing, so each task
  has exactly one accepted result. A holder whose lease ran out but whose task nobody claimed
  yet still holds it. :meth:`WorkflowCoordinator.complete_tasks` accepts several results in one
  transaction, each fenced on its own: the refused ones change nothing and say why.
- **Administrative override.** ``force=True`` (``complete_task``, ``complete_tasks``,
  ``fail_task``, ``release_task``, ``cancel_task``; ``tasks cancel --force``) skips the lease
  check, never the state check: a finished task stays finished. A running task changed so is
  logged (a warning on the ``rubix_integration.workflow`` logger) and its provenance record
  carries ``"forced": true``. Pending and waiting tasks are held by nobody: anyone may cancel
  them.
- **Arguments are checked before any SQL runs**, alike on every store: ids and other text
  (1 to 255 characters; no NUL, no lone surrogate), priorities (32-bit), ``max_attempts``,
  limits and offsets, states and filters raise
  :class:`~rubix_integration.errors.InvalidDataError`, as do payloads holding NUL in text
  (PostgreSQL's JSON cannot keep it; bytes can hold any value). Free text that reports a
  failure (``fail_task``'s error, a cancel reason) is kept instead, NUL replaced by U+FFFD.
- **Retries.** A failed attempt is retried after ``backoff_base * 2**(attempt-1)`` seconds (at
  most ``backoff_max``) until ``max_attempts``; then the task is ``dead``: kept, listable, and
  revived by :meth:`WorkflowCoordinator.resubmit_task`.
- **Idempotent submit.** Submitting an existing ``task_id`` with the same type, data, priority
  and tags returns the stored task unchanged; different content raises ``TaskConflictError``.
- Every state change is appended to the provenance log in the same transaction, and announced
  through the ``task_state_changed`` hook after commit. A change of one task is one record of
  type ``task_state``; an operation that changes several at once (a batch claim, a batch of
  results, a bulk submit, the sweep) is one record of type ``task_states`` per 1,000 tasks,
  holding their ids, types, old states, attempts, workers and, for completions, the CID of each
  result as lists in the tasks' order (:func:`.states.batch_record_data`). Either is a link of
  the hash chain like any other record (``verify_provenance`` checks it);
  :func:`.states.expand` turns a record of either type into the per-task changes it states.
- Payloads (``data`` and ``result``) are JSON (DAG-JSON: bytes and CIDs allowed) of at most
  :data:`MAX_PAYLOAD_BYTES` encoded.

Round trips (PostgreSQL): every thread keeps a connection of its own for the workflow (no pool
checkout, so no liveness ping per call; one found lost before ``COMMIT`` was sent is replaced and
the call run again once). A submit is one statement (the task, its record and the wake-up
notification; one round trip when the id is new). A claim and a completion take two round trips
each, provenance included (see :mod:`~._pgfast`): ``BEGIN`` and the change, then the records and
``COMMIT``, each pair sent as one pipeline; :meth:`WorkflowCoordinator.complete_and_claim`
(what a batch worker calls between batches) reports results and claims the next batch in one
such transaction. A bulk submit goes through ``COPY``, its payloads checked together. Once a
second a claim also sweeps expired leases and the store moves the change-version sequence up to
its clock (a few more round trips, shared by all the calls of that second).

Wake-ups and due times: a submit notifies waiting workers (``LISTEN``/``NOTIFY`` on PostgreSQL,
see :class:`~.worker.Worker`); ``run_at``/``delay`` hold a task back until then; periodic tasks
come from cron expressions (:meth:`WorkflowCoordinator.add_schedule`, :mod:`~.schedules`).

Times come from each caller's clock; machines sharing a store should keep their clocks in sync
(NTP), with leases much longer than any skew.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from rubix_integration.codecs import dagjson
from rubix_integration.codecs.clock import now_us
from rubix_integration.errors import (
    InvalidDataError,
    RubixError,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
)
from rubix_integration.stores.base import Store, StoreRef
from rubix_integration.workflow import _pgfast, _sql, states, validate
from rubix_integration.workflow._leases import Leases
from rubix_integration.workflow._transactions import Transactions
from rubix_integration.workflow.matching import normalise_capabilities
from rubix_integration.workflow.schedules import Schedule
from rubix_integration.workflow.states import STATES
from rubix_integration.workflow.task import COLUMNS, Task
from rubix_integration.workflow.validate import MAX_BATCH, MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from rubix_integration._host import Host
    from rubix_integration.provenance import ProvenanceLogger, Recording

__all__ = ["MAX_BATCH", "MAX_PAYLOAD_BYTES", "STATES", "Task", "WorkflowCoordinator"]

log = logging.getLogger("rubix_integration.workflow")

#: From this many tasks on, a bulk submit on PostgreSQL goes through ``COPY``.
COPY_FROM = 16


def _type_of(created: Any) -> str:
    """The task type of a created task (a :class:`Task` or its row)."""
    return str(created.task_type if isinstance(created, Task) else created["task_type"])


def _connection_of(connection: Connection | Session) -> Connection:
    """The Core connection of a caller's ``Connection`` or ``Session`` (in its transaction)."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        return connection.connection()
    if isinstance(connection, sa.engine.Connection):
        return connection
    raise InvalidDataError("connection must be a SQLAlchemy Connection or Session, not "
                           f"{validate.shown(connection)}", path="connection")


#: The store primitives the workflow runs on.
NEEDS = ("upsert", "claim", "json", "change_version")


class WorkflowCoordinator:
    """Submit, claim, heartbeat, complete, fail, cancel and list tasks (see the module doc).

    ``lease_seconds``: how long a claim lasts without a heartbeat. ``max_attempts``: default per
    task. ``backoff_base``/``backoff_max``: retry delays in seconds. ``preferred_wait``: how long
    a task with a ``*_PREFERRED`` tag waits for a capable worker before any worker may take it.

    An instance is one caller as far as fencing goes: the leases of the claims it makes are
    remembered (per instance, in memory, safe across threads) and let its later calls on those
    tasks through without a token. Code that shares an instance (``manager.workflow`` is one per
    Manager) shares those leases; a worker that must be told apart passes its ``lease_token``.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store] | Host,
        *,
        provenance: ProvenanceLogger | Callable[[], ProvenanceLogger] | None = None,
        notify: Callable[..., object] | None = None,
        listening: Callable[[str], bool] | None = None,
        clock: Callable[[], int] = now_us,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        preferred_wait: float = 30.0,
    ) -> None:
        if lease_seconds <= 0 or max_attempts < 1 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("lease_seconds must be > 0, max_attempts >= 1, backoffs >= 0")
        if isinstance(store, Store) or callable(store):  # open, or opened on first use
            self._store = StoreRef(store, NEEDS, by="the workflow")
        else:  # a host (the Manager): take from it what was not given
            from rubix_integration.provenance.logger import host_listening

            host = store
            self._store = StoreRef(lambda: host.store, NEEDS, by="the workflow")
            if provenance is None:
                provenance = lambda: host.provenance  # noqa: E731 - built on first use
            notify = notify if notify is not None else host.notify
            listening = listening if listening is not None else host_listening(host)
        if provenance is None:
            raise ValueError("a workflow built on a store needs provenance= (a ProvenanceLogger "
                             "or a callable giving one)")
        self._provenance_source = provenance
        self._notify = notify
        self._listening = listening
        self._clock = clock
        self.lease_seconds = float(lease_seconds)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.preferred_wait = float(preferred_wait)
        self._provenance: ProvenanceLogger | None = None
        self._last_sweep = 0.0
        # the threads' own connections (PostgreSQL) walk the claim index in order instead of
        # sorting every claimable row (the planner cannot estimate the JSONB conditions)
        self._tx = Transactions(lambda: self.store, lambda: self.provenance,
                                setup=("SET enable_sort = off",))
        self._local = self._tx.local  # the connection keep_connection() holds, per thread
        # the leases of the claims this instance made and still holds (see the class doc): what
        # lets the claimer's bare calls through the fencing
        self._leases = Leases()
        self._schedules: dict[str, Schedule] = {}
        self._limits: dict[str, int] = {}

    # --- plumbing ------------------------------------------------------------------------------

    @classmethod
    def from_host(cls, host: Host, **kwargs: Any) -> WorkflowCoordinator:
        """A coordinator on what ``host`` (the Manager) offers: its store, provenance log and
        hooks."""
        return cls(host, **kwargs)

    @property
    def store(self) -> Store:
        return self._store()

    @property
    def provenance(self) -> ProvenanceLogger:
        if self._provenance is None:
            source = self._provenance_source
            self._provenance = source if not callable(source) else source()
        return self._provenance

    def _now(self) -> int:
        return self._clock()

    @staticmethod
    def _record(rec: Recording, task: Task, old_state: str | None,
                result_cid: str | None = None, *, forced: bool = False) -> None:
        rec.add("task_state", states.record_data(task, old_state, result_cid, forced=forced))

    @classmethod
    def _record_many(cls, rec: Recording, changes: Sequence[tuple[Task, str | None]],
                     result_cids: Sequence[str] | None = None, *, forced: bool = False) -> None:
        """Record one operation's changes: a ``task_state`` record for one task, one
        ``task_states`` record (:func:`.states.batch_record_data`) per
        :data:`~.states.BATCH_CHUNK` tasks for several."""
        if len(changes) == 1:
            task, old_state = changes[0]
            cls._record(rec, task, old_state, result_cids[0] if result_cids else None,
                        forced=forced)
            return
        for at in range(0, len(changes), states.BATCH_CHUNK):
            part = changes[at:at + states.BATCH_CHUNK]
            rec.add(states.BATCH_RECORD, states.batch_record_data(
                part[0][0].state, [t.task_id for t, _ in part], [t.task_type for t, _ in part],
                [o for _, o in part], [t.attempts for t, _ in part],
                [t.worker_id for t, _ in part],
                None if result_cids is None else result_cids[at:at + states.BATCH_CHUNK],
                forced=forced))

    def _record_rows(self, rec: Recording, created: Sequence[Any]) -> None:
        """Record the submit of the new tasks ``created`` (each a :class:`Task` or its row as
        stored) as one operation."""
        if len(created) == 1:
            first = created[0]
            task = (first if isinstance(first, Task)
                    else Task._from_values([first.get(c) for c in COLUMNS]))
            self._record(rec, task, None)
            return
        rows = [vars(r) if isinstance(r, Task) else r for r in created]
        for at in range(0, len(rows), states.BATCH_CHUNK):
            part = rows[at:at + states.BATCH_CHUNK]
            rec.add(states.BATCH_RECORD, states.batch_record_data(
                "pending", [r["task_id"] for r in part], [r["task_type"] for r in part],
                [None] * len(part), [r["attempts"] for r in part]))

    def _announcing(self) -> bool:
        """Whether anything listens to ``task_state_changed``."""
        notify, listening = self._notify, self._listening
        return notify is not None and (listening is None or listening("task_state_changed"))

    def _announce(self, events: Sequence[tuple[Task, str | None]]) -> None:
        notify, listening = self._notify, self._listening
        if notify is None or (listening is not None and not listening("task_state_changed")):
            return
        for task, old_state in events:
            notify("task_state_changed", task=task.as_dict(), old_state=old_state,
                                new_state=task.state)

    def _change(self, task_id: str, change: Callable[[Any], dict[str, Any]], *,
                force: bool = False, token: str | None = None) -> Task:
        """Run ``change(row) -> values`` on one locked task, record it.

        A running task changed with ``force`` is marked ``forced`` in its record and logged.
        ``token`` (the lease the caller used) is forgotten when the change is refused; the
        task's lease is forgotten once it changed (every change here ends it).
        """
        def body(conn: Connection, rec: Recording) -> tuple[Task, str, Any]:
            row = _sql.load(self.store, conn, task_id)
            values = change(row)
            values.setdefault("updated_at_us", self._now())
            task = _sql.update(self.store, conn, task_id, values)
            self._record(rec, task, row.state, forced=force and row.state == "running")
            return task, str(row.state), row

        try:
            task, old_state, row = self._tx.run(body)
        except TaskError:
            self._leases.forget(task_id, token)
            raise
        self._leases.forget(task_id, row.lease_token)
        if force and old_state == "running":
            self._log_forced(task, row.worker_id)
        self._announce([(task, old_state)])
        return task

    @staticmethod
    def _log_forced(task: Task, holder: str | None) -> None:
        log.warning("workflow: task %r held by %r was made %s by an administrative override "
                    "(force=True)", task.task_id, holder, task.state)

    # --- transactions --------------------------------------------------------------------------

    def keep_connection(self) -> AbstractContextManager[None]:
        """Kept for callers of earlier versions; changes nothing now: every thread keeps its
        own connection for the workflow's calls anyway (see the module doc)."""
        return self._tx.keep_connection()

    def close(self) -> None:
        """Give back the connections the threads keep (they open new ones on next use)."""
        self._tx.close()

    # --- concurrency limits --------------------------------------------------------------------

    def set_limit(self, task_type: str, max_running: int | None) -> None:
        """Claim ``task_type`` only while fewer than ``max_running`` tasks of it run, counted
        across all workers (``None``: no limit).

        Every coordinator that claims the type must be given the same limit (a worker without
        it does not look). Claims under a limit run one at a time (an advisory lock on
        PostgreSQL, the write lock on SQLite), so the count they see is exact.
        """
        validate.text(task_type, "task_type", 200)
        if max_running is None:
            self._limits.pop(task_type, None)
            return
        self._limits[task_type] = validate.integer(max_running, "max_running", 1,
                                                   validate.INT32[1])

    @property
    def limits(self) -> dict[str, int]:
        """The concurrency limits of this coordinator, by task type."""
        return dict(self._limits)

    # --- schedules -----------------------------------------------------------------------------

    def add_schedule(self, name: str, cron: str, task_type: str, data: Any = None, *,
                     priority: int = 0, tags: Iterable[str] = (),
                     max_attempts: int | None = None) -> Schedule:
        """Submit ``task_type`` with ``data`` once per period of ``cron`` (see
        :mod:`~.schedules`); workers of this coordinator submit it as periods begin.

        Register the same schedule (same name and content) in every worker process; a period's
        task is run once whichever of them submits it.
        """
        schedule = Schedule(name, cron, task_type, data, priority, tuple(tags), max_attempts)
        validate.new_row(schedule.task_id(0), task_type, data, priority, schedule.tags,
                         max_attempts, self.max_attempts, 0)  # checked now, not at its period
        self._schedules[name] = schedule
        return schedule

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The schedules registered on this coordinator, by name."""
        return dict(self._schedules)

    def run_schedules(self, now: float | None = None) -> list[Task]:
        """Submit the task of each schedule's latest period not submitted yet by this process;
        return the tasks submitted or found (cheap when none is due: no store access)."""
        out = []
        at = self._now() / 1_000_000 if now is None else now
        for schedule in list(self._schedules.values()):
            period = schedule.due(at)
            if period is None:
                continue
            try:
                task = self.submit_task(
                    schedule.task_id(period), schedule.task_type, schedule.data,
                    priority=schedule.priority, tags=schedule.tags,
                    max_attempts=schedule.max_attempts)
            except TaskConflictError:  # another process registered it with other content
                log.warning("workflow: schedule %r: the task of period %s exists with other "
                            "content; left as it is", schedule.name, int(period))
                schedule.submitted(period)
                continue
            schedule.submitted(period)
            out.append(task)
        return out

    def next_schedule_wait(self, wait: float) -> float:
        """``wait``, or less when a schedule's next period begins sooner."""
        if not self._schedules:
            return wait
        now = self._now() / 1_000_000
        soonest = min(s.next_after(now) for s in self._schedules.values())
        return max(0.0, min(wait, soonest - now + 0.001))

    # --- submitting ----------------------------------------------------------------------------

    def submit_task(
        self,
        task_id: str,
        task_type: str,
        data: Any = None,
        *,
        priority: int = 0,
        tags: Iterable[str] | None = None,
        max_attempts: int | None = None,
        run_at: datetime | float | None = None,
        delay: float | None = None,
        connection: Connection | Session | None = None,
    ) -> Task:
        """Queue a task; return it. Idempotent: an existing identical task is returned as is.

        ``run_at`` (an aware ``datetime``, or seconds since the epoch) or ``delay`` (seconds
        from now) make it claimable only from then on. ``connection``: the caller's own
        SQLAlchemy ``Connection`` or ``Session`` on this store, inside a transaction the caller
        commits: the task (and its provenance record) is written in that transaction, and a
        rollback leaves no trace of it; workers are woken when it commits. On PostgreSQL a
        submit is one statement (one round trip) when the id is new.
        """
        now = self._now()
        row = validate.new_row(task_id, task_type, data, priority, tags, max_attempts,
                               self.max_attempts, now)
        row["due_at_us"] = validate.due_time(run_at, delay, now)
        if connection is not None:
            created = self._insert([row], connection=connection)
        elif self._postgres():
            created = self._insert_one_pg(row)
        else:
            created = self._insert([row])
        if created:
            return created[0]
        if connection is not None:  # as the caller's transaction sees it
            existing = Task.from_row(_sql.load(self.store, _connection_of(connection), task_id,
                                               lock=False))
        elif self._postgres():
            existing = self._load_pg(task_id)
        else:
            existing = self.get_task_status(task_id)
        same = (existing.task_type == task_type and existing.priority == priority
                and dagjson.to_json_form(existing.data) == row["data"]
                and list(existing.tags) == row["tags"])
        if not same:
            raise TaskConflictError(
                f"task {task_id!r} exists with a different type, data, priority or tags; "
                "use another id", task_id=task_id, state=existing.state)
        return existing

    def submit_tasks(self, tasks: Iterable[Mapping[str, Any]], *,
                     connection: Connection | Session | None = None) -> int:
        """Queue many tasks in one transaction (keys as :meth:`submit_task`'s arguments,
        ``run_at`` and ``delay`` included); return how many were created.

        Ids that exist already are skipped. On PostgreSQL the rows go in through ``COPY``.
        ``connection``: as for :meth:`submit_task`, the caller's own transaction.
        """
        rows, texts = validate.new_rows(tasks, self.max_attempts, self._now())
        return self._insert_count(rows, connection=connection, texts=texts)[0]

    def _postgres(self) -> bool:
        return self.store.engine.dialect.name == "postgresql"

    def _insert_one_pg(self, row: dict[str, Any]) -> list[Task]:
        """Insert one new task with its record and wake-up in one statement (PostgreSQL)."""
        store = self.store
        store.stamp(_sql._T, [{}])  # keeps the change versions on the store's clock
        node = self.provenance.node_id
        pending = Task._from_values([row.get(c) for c in COLUMNS])

        class _Exists(Exception):
            pass

        def body(conn: Connection, committing: list[bool]) -> list[Task]:
            try:
                with self.provenance.recording() as rec:
                    self._record(rec, pending, None)
                    record = _pgfast.record_rows(rec)[0]
                    sql, args = _sql.insert_one_pg(row, record, node, _pgfast.CHANNEL)
                    committing.append(True)
                    rows = _pgfast.single(conn, sql, args)
                    if not rows:
                        raise _Exists  # the chain's head stays where it was
            except _Exists:
                return []
            return [Task._from_values(r) for r in rows]

        created = self._tx.run_raw(body)
        self._announce([(t, None) for t in created])
        return created

    def _load_pg(self, task_id: str) -> Task:
        """The task as stored, read in one round trip on this thread's connection."""
        rows = self._tx.run_raw(lambda conn, _: _pgfast.single(conn, _sql.LOAD_PG,
                                                                 {"id": task_id}))
        if not rows:
            raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
        return Task._from_values(rows[0])

    def _insert(self, rows: list[dict[str, Any]], *,
                connection: Connection | Session | None = None) -> list[Task]:
        """Insert the new tasks among ``rows`` with their records; the tasks created."""
        return self._insert_count(rows, connection=connection, tasks=True)[1]

    def _insert_count(self, rows: list[dict[str, Any]], *,
                      connection: Connection | Session | None = None,
                      tasks: bool = False,
                      texts: list[str] | None = None) -> tuple[int, list[Task]]:
        """Insert the new tasks among ``rows``, recorded as one operation (see
        :meth:`_record_rows`); how many were created and, when ``tasks`` is true or the
        ``task_state_changed`` hook listens, the tasks created."""
        if not rows:
            return 0, []
        store = self.store
        if connection is not None:
            conn = _connection_of(connection)
            # the records go to a chain of their own: the caller may still roll back, which
            # must not leave this logger's chain pointing at records that were never stored
            from rubix_integration.provenance import ProvenanceLogger

            main = self.provenance
            own = ProvenanceLogger(store, node_id=main.node_id, clock=main.now_us)
            with own.recording() as rec:
                created = self._insert_on(store, conn, rows, texts)
                self._record_rows(rec, created)
                rec.flush(conn)
        else:
            with self.provenance.recording() as rec, store.transaction() as conn:
                created = self._insert_on(store, conn, rows, texts)
                self._record_rows(rec, created)
                rec.flush(conn)
        out: list[Task] = []
        if tasks or self._announcing():
            out = [r if isinstance(r, Task) else Task._from_values([r.get(c) for c in COLUMNS])
                   for r in created]
            # with a connection the hook fires now; the task exists once the caller commits
            self._announce([(t, None) for t in out])
        return len(created), out

    def _insert_on(self, store: Store, conn: Connection, rows: list[dict[str, Any]],
                   texts: list[str] | None = None) -> list[Any]:
        """Insert ``rows`` (new ids only; ``texts``: their data as DAG-JSON text, if known) in
        ``conn``'s transaction, waking workers on commit; the created tasks, as :class:`Task`
        or as their given row."""
        if conn.dialect.name != "postgresql":
            return _sql.insert(store, conn, rows)
        created: list[Any] = (_sql.copy_insert(store, conn, rows, texts)
                              if len(rows) >= COPY_FROM
                              else _sql.insert(store, conn, rows))
        for task_type in sorted({_type_of(t) for t in created}):
            conn.exec_driver_sql("SELECT pg_notify(%(c)s, %(t)s)",
                                 {"c": _pgfast.CHANNEL, "t": task_type})
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
        tasks = self.get_next_tasks(worker_id, capabilities, limit=1, task_types=task_types)
        return tasks[0] if tasks else None

    def get_next_tasks(
        self,
        worker_id: str,
        capabilities: Iterable[str] | str | None = (),
        *,
        limit: int,
        task_types: Iterable[str] | None = None,
    ) -> list[Task]:
        """Claim up to ``limit`` (at most :data:`MAX_BATCH`) tasks in one transaction, best first.

        Each task is claimed as :meth:`get_next_task` claims one: ``running``, with its own
        ``lease_token`` and a lease that starts now, ``attempts`` counting this claim. The caller
        holds every lease until it reports the task's outcome, releases it, or the lease runs
        out, so it should heartbeat the tasks still waiting for their turn (as
        :class:`~.worker.Worker` does) and release those it will not run. An empty list when
        nothing is claimable.
        """
        claim = self._claim_params(worker_id, capabilities, limit, task_types)
        if claim is None:
            return []
        params, caps, types = claim
        store = self.store
        if self._postgres():
            claimed = self._claim_pg(params, caps, types)
            self._leases.remember([task for task, _ in claimed])
            self._announce(claimed)
            return [task for task, _ in claimed]

        params["tokens"] = [secrets.token_hex(16) for _ in range(params["limit"])]

        def body(conn: Connection, rec: Recording) -> list[tuple[Task, str]]:
            claimed = _sql.claim(store, conn, params, caps, types)
            claimed.sort(key=lambda c: (-c[0].priority, c[0].created_at_us, c[0].task_id))
            self._record_many(rec, claimed)
            return claimed

        claimed = self._tx.run(body)
        self._leases.remember([task for task, _ in claimed])
        self._announce(claimed)
        return [task for task, _ in claimed]

    def _claim_params(self, worker_id: str, capabilities: Iterable[str] | str | None,
                      limit: int, task_types: Iterable[str] | None,
                      ) -> tuple[dict[str, Any], tuple[str, ...], list[str] | None] | None:
        """A claim's arguments checked, and its statement's parameters (``None``: no task
        type asked for, nothing to claim); sweeps expired leases (see :meth:`_sweep`)."""
        validate.text(worker_id, "worker_id", 255)
        limit = validate.check_batch(limit)
        try:
            caps = normalise_capabilities(capabilities)
        except ValueError as exc:
            raise InvalidDataError(str(exc), path="capabilities") from exc
        if isinstance(task_types, str):
            task_types = [task_types]
        types = (sorted({validate.text(t, "task_types", 200) for t in task_types})
                 if task_types is not None else None)
        if types is not None and not types:
            return None
        self._sweep()
        now = self._now()
        params: dict[str, Any] = {
            "now": now, "worker": worker_id, "exp": now + int(self.lease_seconds * 1_000_000),
            "pref_cutoff": now - int(self.preferred_wait * 1_000_000),
            "node": self.provenance.node_id, "limit": limit, "caps": json.dumps(list(caps)),
            "limits": dict(self._limits),
        }
        return params, caps, types

    def complete_and_claim(
        self,
        results: Iterable[Mapping[str, Any]],
        worker_id: str,
        capabilities: Iterable[str] | str | None = (),
        *,
        limit: int,
        task_types: Iterable[str] | None = None,
    ) -> tuple[list[Task | RubixError], list[Task]]:
        """Report ``results`` as :meth:`complete_tasks` does (fenced on ``worker_id`` too), then
        claim up to ``limit`` tasks as :meth:`get_next_tasks` does: the outcomes of the results
        in the order given, and the tasks claimed.

        On PostgreSQL both happen in one transaction (one commit, two round trips; a batch
        worker's step from one batch to the next); elsewhere one after the other.
        """
        entries = list(results)
        if not entries or not self._postgres():
            outcomes = self.complete_tasks(entries, worker_id=worker_id) if entries else []
            return outcomes, self.get_next_tasks(worker_id, capabilities, limit=limit,
                                                 task_types=task_types)
        items = self._result_items(entries, False)
        claim = self._claim_params(worker_id, capabilities, limit, task_types)
        valid = [i for i in items if isinstance(i, validate.Result)]
        if claim is None or not valid:
            return (self.complete_tasks(entries, worker_id=worker_id),
                    self.get_next_tasks(worker_id, capabilities, limit=limit,
                                        task_types=task_types))
        claimed: list[tuple[Task, str]] = []
        done = iter(self._complete(valid, worker_id, False, claim=claim, claimed=claimed))
        outcomes = [next(done) if isinstance(i, validate.Result) else i for i in items]
        self._leases.remember([task for task, _ in claimed])
        self._announce(claimed)
        return outcomes, [task for task, _ in claimed]

    def _claim_pg(self, params: dict[str, Any], caps: tuple[str, ...],
                  types: list[str] | None) -> list[tuple[Task, str]]:
        """Claim and record in two round trips (see :mod:`._pgfast`)."""
        self.store.stamp(_sql._T, [{}])  # keeps the change versions on the store's clock
        sql, args = _sql.claim_pg(params, caps, types)

        def body(conn: Connection, committing: list[bool]) -> list[tuple[Task, str]]:
            with self.provenance.recording() as rec:
                def follow(rows: list[tuple[Any, ...]]) -> tuple[_pgfast.Followup,
                                                                 list[tuple[Task, str]]]:
                    claimed = [(Task._from_values(r), str(r[-1])) for r in rows]
                    claimed.sort(key=lambda c: (-c[0].priority, c[0].created_at_us,
                                                c[0].task_id))
                    self._record_many(rec, claimed)
                    return [_pgfast.record_insert(rec)], claimed

                _, claimed, _ = _pgfast.transact(
                    conn, sql, args, follow, committing,
                    before=(_sql.LIMITS_LOCK_PG,) if params["limits"] else ())
            return claimed  # type: ignore[no-any-return]

        return self._tx.run_raw(body)

    def _sweep(self) -> None:
        """Make tasks dead whose lease expired on their last attempt (at most once a second)."""
        clock = time.monotonic()
        if clock - self._last_sweep < 1.0:
            return
        self._last_sweep = clock
        now = self._now()
        store = self.store

        def body(conn: Connection, rec: Recording) -> list[tuple[Task, str | None]]:
            events: list[tuple[Task, str | None]] = []
            for task_id in _sql.expired(store, conn, now):
                task = _sql.update(store, conn, task_id, states.lease_expired(now))
                events.append((task, "running"))
            self._record_many(rec, events)
            return events

        self._announce(self._tx.run(body))

    # --- the lease holder's operations ---------------------------------------------------------

    def heartbeat(self, task_id: str, worker_id: str, *,
                  lease_token: str | None = None) -> Task:
        """Extend the lease of a task the caller holds; return the task with its new expiry.

        Fenced as :meth:`complete_task` is (there is no override: only a holder has a lease to
        extend).
        """
        validate.task_id(task_id)
        validate.text(worker_id, "worker_id", 255)
        token = self._leases.token_for(task_id, validate.lease_token(lease_token), False)

        def body(conn: Connection) -> Task:
            row = _sql.load(self.store, conn, task_id)
            states.check_holder(row, worker_id, token, "heartbeat")
            return _sql.extend_lease(conn, task_id,
                                     self._now() + int(self.lease_seconds * 1_000_000))

        try:
            return self._tx.run_unrecorded(body)
        except TaskError:
            self._leases.forget(task_id, token)
            raise

    def complete_task(self, task_id: str, result: Any = None, *, worker_id: str | None = None,
                      lease_token: str | None = None, force: bool = False) -> Task:
        """Accept the task's result, if the caller holds the task.

        The caller holds it with ``lease_token`` (its claim's), or by being the coordinator
        instance that claimed it (which remembers the token); ``worker_id``, if given, must
        match too. Otherwise ``LeaseLostError``, and nothing changes. ``force=True`` is an
        administrative override that skips the lease check; it is logged and marked in the
        provenance record. ``TaskStateError`` for a cancelled or completed task, forced or not.
        """
        validate.task_id(task_id)
        worker_id = validate.worker_id(worker_id)
        token = self._leases.token_for(task_id, validate.lease_token(lease_token), force)
        outcome = self._complete([validate.result_item(task_id, result, token)], worker_id,
                                 force)[0]
        if isinstance(outcome, Task):
            return outcome
        raise outcome

    def complete_tasks(self, results: Iterable[Mapping[str, Any]], *,
                       worker_id: str | None = None, force: bool = False,
                       ) -> list[Task | RubixError]:
        """Accept several results in one transaction (at most :data:`MAX_BATCH`).

        Each item is a mapping with ``task_id``, ``result`` and ``lease_token`` (as
        :meth:`complete_task`'s arguments; ``worker_id`` and ``force`` apply to all). Each
        result is fenced on its own. Return, in the order given, the completed :class:`Task`,
        or the error that refused it (``LeaseLostError``, ``TaskStateError`` or
        ``TaskNotFoundError`` as :meth:`complete_task` would raise, ``InvalidDataError`` for an
        item or result that cannot be stored): a refused item changes nothing, the others are
        committed together.
        """
        entries = list(results)
        if len(entries) > MAX_BATCH:
            raise InvalidDataError(f"at most {MAX_BATCH} results at a time, not {len(entries)}",
                                   path="results")
        worker_id = validate.worker_id(worker_id)
        items = self._result_items(entries, force)
        valid = [i for i in items if isinstance(i, validate.Result)]
        done = iter(self._complete(valid, worker_id, force)) if valid else iter(())
        return [next(done) if isinstance(i, validate.Result) else i for i in items]

    def _result_items(self, entries: list[Any],
                      force: bool) -> list[validate.Result | RubixError]:
        """The results of :meth:`complete_tasks` checked: each ready to store, or the error
        that refuses it (``InvalidDataError`` for a task id given twice)."""
        if len(entries) > MAX_BATCH:
            raise InvalidDataError(f"at most {MAX_BATCH} results at a time, not {len(entries)}",
                                   path="results")
        items: list[validate.Result | RubixError] = []
        for entry in entries:
            try:
                if not isinstance(entry, Mapping):
                    raise InvalidDataError(
                        "each result must be a mapping with task_id, result and lease_token, "
                        f"not {validate.shown(entry)}", path="results")
                task_id = validate.task_id(entry.get("task_id"))
                token = self._leases.token_for(
                    task_id, validate.lease_token(entry.get("lease_token")), force)
                items.append(validate.result_item(task_id, entry.get("result"), token))
            except InvalidDataError as exc:
                items.append(exc)
        valid = [i for i in items if isinstance(i, validate.Result)]
        if len({i.task_id for i in valid}) != len(valid):
            raise InvalidDataError("a task_id appears twice among the results", path="task_id")
        return items

    def _complete(self, items: list[validate.Result], worker_id: str | None,
                  force: bool, *,
                  claim: tuple[dict[str, Any], tuple[str, ...], list[str] | None] | None = None,
                  claimed: list[tuple[Task, str]] | None = None) -> list[Task | RubixError]:
        """Complete ``items`` in one transaction; per item the task or the refusal.

        An item without a lease token is accepted only with ``force``; the others go to
        :func:`.states.refusals`, which says why. ``claim`` (PostgreSQL only: what
        :meth:`_claim_params` gave): claim in the same transaction too, the tasks claimed (and
        the state each was in) added to ``claimed``.
        """
        now = self._now()
        sendable = [i for i in items if force or i.lease_token is not None]
        fence_worker = None if force else worker_id
        store = self.store

        def body(conn: Connection, rec: Recording) -> dict[str, Task | RubixError]:
            accepted: dict[str, Task] = {}
            if sendable:
                accepted = _sql.accept(store, conn, sendable, fence_worker, now,
                                       self.provenance.node_id)
            outcome: dict[str, Task | RubixError] = dict(accepted)
            self._record_accepted(rec, items, accepted, force)
            refused = [i for i in items if i.task_id not in accepted]
            if refused:
                found = _sql.holders(conn, [i.task_id for i in refused])
                outcome.update(states.refusals(found, refused, worker_id, force))
            return outcome

        outcome = (self._complete_pg(items, sendable, fence_worker, worker_id, force, now,
                                     claim, claimed)
                   if self._postgres() else self._tx.run(body))
        for item in items:
            result = outcome[item.task_id]
            if isinstance(result, Task) and force:
                self._leases.drop(item.task_id)
                self._log_forced(result, result.worker_id)
            elif isinstance(result, (Task, TaskError)):
                self._leases.forget(item.task_id, item.lease_token)
        self._announce([(t, "running") for i in items
                        if isinstance(t := outcome[i.task_id], Task)])
        return [outcome[i.task_id] for i in items]

    def _record_accepted(self, rec: Recording, items: list[validate.Result],
                         accepted: Mapping[str, Task], force: bool) -> None:
        """Record the accepted ``items`` (in the order given) as one operation."""
        taken = [i for i in items if i.task_id in accepted]
        self._record_many(rec, [(accepted[i.task_id], "running") for i in taken],
                          [i.cid for i in taken], forced=force)

    def _complete_pg(self, items: list[validate.Result], sendable: list[validate.Result],
                     fence_worker: str | None, worker_id: str | None, force: bool, now: int,
                     claim: tuple[dict[str, Any], tuple[str, ...], list[str] | None] | None,
                     claimed: list[tuple[Task, str]] | None,
                     ) -> dict[str, Task | RubixError]:
        """Accept and record (and claim, with ``claim``) in two round trips (see
        :mod:`._pgfast`)."""
        self.store.stamp(_sql._T, [{}])  # keeps the change versions on the store's clock
        sql, args = _sql.accept_pg(sendable, fence_worker, now, self.provenance.node_id)
        if not sendable:  # nothing may be accepted: only say why
            sql, args = "SELECT 1 WHERE false", {}
        also = None if claim is None else _sql.claim_pg(*claim)
        before = (_sql.LIMITS_LOCK_PG,) if claim is not None and claim[0]["limits"] else ()

        def body(conn: Connection, committing: list[bool]) -> dict[str, Task | RubixError]:
            with self.provenance.recording() as rec:
                def follow(rows: list[tuple[Any, ...]]) -> tuple[_pgfast.Followup,
                                                                 dict[str, Task]]:
                    accepted = {str(r[0]): Task._from_values(r) for r in rows}
                    self._record_accepted(rec, items, accepted, force)
                    if also_rows and claimed is not None:  # the claim made in the same pipeline
                        taken = [(Task._from_values(r), str(r[-1])) for r in also_rows[0]]
                        taken.sort(key=lambda c: (-c[0].priority, c[0].created_at_us,
                                                  c[0].task_id))
                        self._record_many(rec, taken)
                        claimed.extend(taken)
                    follow_up: _pgfast.Followup = [_pgfast.record_insert(rec)]
                    refused = [i.task_id for i in items if i.task_id not in accepted]
                    if refused:
                        follow_up.append((_sql.HOLDERS_PG, (json.dumps(refused),)))
                    return follow_up, accepted

                also_rows: list[list[tuple[Any, ...]]] = []
                if claimed is not None:
                    claimed.clear()  # a run again after a lost connection starts afresh
                _, accepted, results = _pgfast.transact(conn, sql, args, follow, committing,
                                                        before, also, also_rows)
            outcome: dict[str, Task | RubixError] = dict(accepted)
            refused = [i for i in items if i.task_id not in accepted]
            if refused:
                found = {r[0]: states.Holder(*r) for r in results[-1]}
                outcome.update(states.refusals(found, refused, worker_id, force))
            return outcome

        return self._tx.run_raw(body)

    def fail_task(self, task_id: str, error: str, *, worker_id: str | None = None,
                  lease_token: str | None = None, retry: bool = True,
                  force: bool = False) -> Task:
        """Record a failed attempt: ``retry_wait`` with backoff, or ``dead`` after the last
        attempt (or at once with ``retry=False``).

        Fenced as :meth:`complete_task` is (``force=True`` overrides). NUL characters in
        ``error`` are stored as U+FFFD.
        """
        validate.task_id(task_id)
        worker_id = validate.worker_id(worker_id)
        token = self._leases.token_for(task_id, validate.lease_token(lease_token), force)
        message = validate.message(error, "")

        def change(row: Any) -> dict[str, Any]:
            states.check_holder(row, worker_id, token, "fail", force)
            return states.failed(row, message, retry=retry, now=self._now(),
                                 backoff_base=self.backoff_base, backoff_max=self.backoff_max)

        return self._change(task_id, change, force=force, token=token)

    def release_task(self, task_id: str, *, worker_id: str | None = None,
                     lease_token: str | None = None, force: bool = False) -> Task:
        """Give a held task back unfinished (a stopping worker); the attempt is not counted.

        Fenced as :meth:`complete_task` is (``force=True`` overrides).
        """
        validate.task_id(task_id)
        worker_id = validate.worker_id(worker_id)
        token = self._leases.token_for(task_id, validate.lease_token(lease_token), force)

        def change(row: Any) -> dict[str, Any]:
            states.check_holder(row, worker_id, token, "release", force)
            return states.released(row, self._now())

        return self._change(task_id, change, force=force, token=token)

    # --- administration ------------------------------------------------------------------------

    def cancel_task(self, task_id: str, *, reason: str | None = None,
                    lease_token: str | None = None, force: bool = False) -> Task:
        """Cancel a task that has not finished; a running worker's later result is refused.

        A pending or waiting task is cancelled by anyone. A running task is held by a worker,
        so cancelling it is fenced as :meth:`complete_task` is: its holder (``lease_token``, or
        the instance that claimed it) may, anyone else only with ``force=True``, the
        operator's override (logged, and marked in the provenance record).
        """
        validate.task_id(task_id)
        token = self._leases.token_for(task_id, validate.lease_token(lease_token), force)
        message = validate.message(reason or "cancelled", "cancelled")

        was: list[str] = []

        def change(row: Any) -> dict[str, Any]:
            was.append(str(row.state))
            return states.cancelled(row, token, message, force=force, now=self._now())

        task = self._change(task_id, change, force=force, token=token)
        if was and was[-1] == "running" and self._postgres():
            # tell the worker running it at once (it also learns at its next heartbeat)
            self._tx.run_raw(lambda conn, _: _pgfast.single(
                conn, "SELECT pg_notify(%(c)s, %(t)s)",
                {"c": _pgfast.CANCEL_CHANNEL, "t": task_id}))
        return task

    def resubmit_task(self, task_id: str, *, max_attempts: int | None = None) -> Task:
        """Queue a dead or cancelled task again, with its attempts reset."""
        validate.task_id(task_id)
        if max_attempts is not None:
            validate.integer(max_attempts, "max_attempts", 1, validate.INT32[1])

        def change(row: Any) -> dict[str, Any]:
            return states.resubmitted(row, max_attempts, self._now())

        return self._change(task_id, change)

    def get_task_status(self, task_id: str) -> Task:
        """The task's current fields; ``TaskNotFoundError`` for an unknown id."""
        validate.task_id(task_id)
        with self.store.connect() as conn:
            return Task.from_row(_sql.load(self.store, conn, task_id, lock=False))

    def list_tasks(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                   offset: int = 0) -> list[Task]:
        """Tasks matching ``filters``, oldest first.

        ``state`` (one or a list), ``task_type``, ``worker_id`` and ``tag`` (the task carries
        this tag) are accepted. ``limit`` (``None``: no limit) and ``offset`` are integers from
        0 to 2**63 - 1. Anything else raises ``InvalidDataError`` before the store is asked.
        """
        if limit is not None:
            validate.integer(limit, "limit", 0, validate.MAX_ROWS)
        validate.integer(offset, "offset", 0, validate.MAX_ROWS)
        if filters is not None and not isinstance(filters, Mapping):
            raise InvalidDataError(f"filters must be a mapping, not {validate.shown(filters)}",
                                   path="filters")
        query = _sql.list_query(self.store, filters, limit, offset)
        with self.store.connect() as conn:
            return [Task.from_row(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        with self.store.connect() as conn:
            return _sql.counts(conn)

    def counts_by_type(self) -> dict[tuple[str, str], int]:
        """How many tasks of each type are in each state: ``{(task_type, state): n}`` (pairs
        without tasks left out)."""
        with self.store.connect() as conn:
            return _sql.counts_by_type(conn)

    def __repr__(self) -> str:
        return f"<WorkflowCoordinator lease={self.lease_seconds}s>"
