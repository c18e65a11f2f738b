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
- Every state change is appended to the provenance log (type ``task_state``) in the same
  transaction, and announced through the ``task_state_changed`` hook after commit.
- Payloads (``data`` and ``result``) are JSON (DAG-JSON: bytes and CIDs allowed) of at most
  :data:`MAX_PAYLOAD_BYTES` encoded.

Round trips (PostgreSQL): a claim or a completion is ``BEGIN``, its statement (a claim sets
``enable_sort = off`` first), the provenance rows and ``COMMIT``, for one task or a batch.
Inside :meth:`WorkflowCoordinator.keep_connection` (as :class:`~.worker.Worker` runs) the
calling thread reuses one connection instead of taking one from the pool per call, which the
pool would first check with a ping; a connection found lost before ``COMMIT`` was sent is
replaced and the call run again once (the server rolled the transaction back).

Times come from each caller's clock; machines sharing a store should keep their clocks in sync
(NTP), with leases much longer than any skew.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa

from rubix_integration.codecs import dagjson, parse_cid
from rubix_integration.codecs.clock import format_time, now_us
from rubix_integration.errors import (
    InvalidDataError,
    LeaseLostError,
    PayloadTooLargeError,
    RubixError,
    StoreUnavailableError,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
    TaskStateError,
)
from rubix_integration.stores.base import Store
from rubix_integration.workflow.matching import (
    normalise_capabilities,
    parse_tags,
    storable_text,
)
from rubix_integration.workflow.models import TASK_TABLE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration._host import Host
    from rubix_integration.provenance import ProvenanceLogger, Recording

__all__ = ["MAX_BATCH", "MAX_PAYLOAD_BYTES", "STATES", "Task", "WorkflowCoordinator"]

log = logging.getLogger("rubix_integration.workflow")

#: Largest ``data`` or ``result`` accepted, encoded as DAG-JSON: 1 MiB.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Most tasks one :meth:`WorkflowCoordinator.get_next_tasks` or ``complete_tasks`` call handles.
MAX_BATCH = 1000
STATES = ("pending", "running", "retry_wait", "completed", "dead", "cancelled")
ACTIVE = ("pending", "running", "retry_wait")
FINISHED = ("completed", "dead", "cancelled")
_MAX_ERROR = 4000
_INT32 = (-(2**31), 2**31 - 1)
_MAX_ROWS = 2**63 - 1  # the largest LIMIT or OFFSET both stores take
# leases one coordinator remembers for its bare calls; past that the oldest are forgotten (their
# holder then passes the lease token)
_MAX_REMEMBERED = 100_000
# a NUL character as the JSON encoder writes it, not preceded by an escaping backslash
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_T = TASK_TABLE
#: The store primitives the workflow runs on.
NEEDS = ("upsert", "claim", "json", "change_version")
_R = TypeVar("_R")

# the task columns in Task's order, for statements that return rows through the driver
_COLUMNS = ("task_id", "task_type", "state", "priority", "data", "tags", "attempts",
            "max_attempts", "created_at_us", "updated_at_us", "due_at_us", "worker_id",
            "lease_token", "lease_expires_at_us", "result", "error", "finished_at_us")
_RETURNING = ", ".join(f"t.{c}" for c in _COLUMNS)


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
        """A task from a typed row of ``workflow_tasks`` (JSON columns already decoded)."""
        m = row._mapping
        return cls._from_values([m[c] for c in _COLUMNS])

    @classmethod
    def _from_values(cls, v: Sequence[Any]) -> Task:
        """A task from values in :data:`_COLUMNS` order (JSON columns decoded)."""
        return cls(
            task_id=v[0], task_type=v[1], state=v[2], priority=int(v[3]),
            data=dagjson.from_json_form(v[4]), tags=tuple(v[5] or ()),
            attempts=int(v[6]), max_attempts=int(v[7]), created_at_us=int(v[8]),
            updated_at_us=int(v[9]), due_at_us=v[10], worker_id=v[11], lease_token=v[12],
            lease_expires_at_us=v[13], result=dagjson.from_json_form(v[14]),
            error=v[15], finished_at_us=v[16])

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


def _encoded_payload(value: Any, what: str) -> bytes:
    """``value`` as DAG-JSON, or InvalidDataError / PayloadTooLargeError."""
    encoded = dagjson.encode(value)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"task {what} is {len(encoded)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} "
            "bytes (store large content in IPFS and pass its CID)",
            size=len(encoded), limit=MAX_PAYLOAD_BYTES, path=what)
    # PostgreSQL's JSON cannot hold U+0000; refuse it on every store alike
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise InvalidDataError(
            f"task {what} holds text with a NUL character (U+0000), which the store cannot keep; "
            "pass binary content as bytes", path=what)
    return encoded


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _text(value: object, path: str, max_length: int) -> str:
    """``value`` when it is 1 to ``max_length`` characters of text every store keeps, else
    InvalidDataError naming ``path``."""
    if (not isinstance(value, str) or not value or len(value) > max_length
            or not storable_text(value)):
        raise InvalidDataError(
            f"{path} must be 1 to {max_length} characters of text without NUL, not "
            f"{_shown(value)}", path=path)
    return value


def _integer(value: object, path: str, low: int, high: int) -> int:
    """``value`` when it is an integer (not a bool) from ``low`` to ``high``, else
    InvalidDataError naming ``path``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidDataError(f"{path} must be an integer from {low} to {high}, not "
                               f"{_shown(value)}", path=path)
    return value


def _task_id(value: object) -> str:
    return _text(value, "task_id", 255)


def _worker_id(value: object) -> str | None:
    return None if value is None else _text(value, "worker_id", 255)


def _lease_token(value: object) -> str | None:
    return None if value is None else _text(value, "lease_token", 64)


def _message(text: object, default: str) -> str:
    """Free text (an error, a reason) as every store keeps it: NUL and lone surrogates are
    replaced, not refused, so that a failure is never lost over its message."""
    message = str(text) if text is not None else default
    if not storable_text(message):
        message = message.replace("\x00", "\ufffd")
        message = message.encode("utf-8", "replace").decode("utf-8")
    return message[:_MAX_ERROR]


def _payload(value: Any, what: str) -> Any:
    return json.loads(_encoded_payload(value, what))


class _Result(NamedTuple):
    """A result to accept: its task, fencing token and DAG-JSON text, and its CID."""

    task_id: str
    lease_token: str | None
    text: str
    cid: str


class _Holder(NamedTuple):
    """What the fencing check reads of a task."""

    task_id: str
    state: str
    worker_id: str | None
    lease_token: str | None


def _check_batch(value: int, name: str = "limit") -> int:
    """``value`` when it is an integer from 1 to :data:`MAX_BATCH`, else ``InvalidDataError``."""
    return _integer(value, name, 1, MAX_BATCH)


def _result_item(task_id: str, result: Any, lease_token: str | None) -> _Result:
    """A result ready to store: its DAG-JSON text and CID (or InvalidDataError)."""
    encoded = _encoded_payload(result, "result")
    return _Result(task_id, lease_token, encoded.decode("utf-8"),
                   dagjson.cid_text_for_block(encoded))


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
        self._store: Store | Callable[[], Store]
        if isinstance(store, Store):
            store.require(*NEEDS, by="the workflow")
            self._store = store
        elif callable(store):  # opened on first use
            self._store = store
        else:  # a host (the Manager): take from it what was not given
            from rubix_integration.provenance.logger import host_listening

            host = store
            self._store = lambda: host.store
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
        self._local = threading.local()  # the connection keep_connection() holds, per thread
        # task id -> lease token of the claims this instance made and still holds (see the
        # class doc): what lets the claimer's bare calls through the fencing
        self._leases: dict[str, str] = {}
        self._leases_lock = threading.Lock()

    # --- plumbing ------------------------------------------------------------------------------

    @classmethod
    def from_host(cls, host: Host, **kwargs: Any) -> WorkflowCoordinator:
        """A coordinator on what ``host`` (the Manager) offers: its store, provenance log and
        hooks."""
        return cls(host, **kwargs)

    @property
    def store(self) -> Store:
        store = self._store
        if not isinstance(store, Store):
            store = store()
            store.require(*NEEDS, by="the workflow")
            self._store = store
        return store

    @property
    def provenance(self) -> ProvenanceLogger:
        if self._provenance is None:
            source = self._provenance_source
            self._provenance = source if not callable(source) else source()
        return self._provenance

    def _now(self) -> int:
        return self._clock()

    @property
    def _pg(self) -> bool:
        # claims and completions on PostgreSQL keep their hand-written statements, run through
        # psycopg: the store's generic primitives cost about a third of the throughput there
        return self.store.engine.dialect.name == "postgresql"

    def _record(self, rec: Recording, task: Task, old_state: str | None,
                result_cid: str | None = None, *, forced: bool = False) -> None:
        data: dict[str, Any] = {
            "task_id": task.task_id, "task_type": task.task_type, "old_state": old_state,
            "new_state": task.state, "attempt": task.attempts,
        }
        if task.worker_id is not None:
            data["worker_id"] = task.worker_id
        if forced:
            data["forced"] = True
        if task.state == "completed":
            if result_cid is None:
                result_cid = dagjson.cid_text_for_block(dagjson.encode(task.result))
            data["result"] = parse_cid(result_cid)
        if task.error is not None and task.state in ("retry_wait", "dead"):
            data["error"] = task.error[:500]
        rec.add("task_state", data)

    def _announce(self, events: Sequence[tuple[Task, str | None]]) -> None:
        notify, listening = self._notify, self._listening
        if notify is None or (listening is not None and not listening("task_state_changed")):
            return
        for task, old_state in events:
            notify("task_state_changed", task=task.as_dict(), old_state=old_state,
                                new_state=task.state)

    def _load(self, conn: Connection, task_id: str, *, lock: bool = True) -> Any:
        query = sa.select(_T).where(_T.c.task_id == task_id, _T.c.deleted_at.is_(None))
        if lock:
            query = self.store.locked(query)
        row = conn.execute(query).first()
        if row is None:
            raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
        return row

    def _update(self, conn: Connection, task_id: str, **values: Any) -> Task:
        values.setdefault("updated_at_us", self._now())
        row = conn.execute(
            sa.update(_T).where(_T.c.task_id == task_id)
            .values(self.store.stamp(_T, [values])[0])
            .returning(*_T.c)).one()
        return Task.from_row(row)

    def _change(self, task_id: str, change: Any, *, force: bool = False,
                token: str | None = None) -> Task:
        """Run ``change(row) -> values`` on one locked task, record it.

        A running task changed with ``force`` is marked ``forced`` in its record and logged.
        ``token`` (the lease the caller used) is forgotten when the change is refused; the
        task's lease is forgotten once it changed (every change here ends it).
        """
        def body(conn: Connection, rec: Recording) -> tuple[Task, str, Any]:
            row = self._load(conn, task_id)
            values = change(row)
            task = self._update(conn, task_id, **values)
            self._record(rec, task, row.state, forced=force and row.state == "running")
            return task, str(row.state), row

        try:
            task, old_state, row = self._run(body)
        except TaskError:
            self._forget(task_id, token)
            raise
        self._forget(task_id, row.lease_token)
        if force and old_state == "running":
            self._log_forced(task, row.worker_id)
        self._announce([(task, old_state)])
        return task

    @staticmethod
    def _log_forced(task: Task, holder: str | None) -> None:
        log.warning("workflow: task %r held by %r was made %s by an administrative override "
                    "(force=True)", task.task_id, holder, task.state)

    # --- the leases this instance holds --------------------------------------------------------

    def _remember(self, tasks: Iterable[Task]) -> None:
        with self._leases_lock:
            for task in tasks:
                if task.lease_token is None:
                    continue
                self._leases.pop(task.task_id, None)  # a new claim goes to the end
                self._leases[task.task_id] = task.lease_token
            while len(self._leases) > _MAX_REMEMBERED:
                del self._leases[next(iter(self._leases))]

    def _forget(self, task_id: str, token: str | None) -> None:
        """Forget the lease of ``task_id`` if it is ``token`` (a newer claim is kept)."""
        if token is None:
            return
        with self._leases_lock:
            if self._leases.get(task_id) == token:
                del self._leases[task_id]

    def _token_for(self, task_id: str, lease_token: str | None, force: bool) -> str | None:
        """The lease token a call on ``task_id`` is fenced with: none with ``force``, else the
        one given, else the one this instance got when it claimed the task (if it did)."""
        if force:
            return None
        if lease_token is not None:
            return lease_token
        with self._leases_lock:
            return self._leases.get(task_id)

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def keep_connection(self) -> Iterator[None]:
        """Within the block, this thread's state changes (claims, results, heartbeats, …) reuse
        one store connection instead of one from the pool each (see the module doc).

        Meant for loops of many calls, as :meth:`Worker.run <.worker.Worker.run>` is. Reads,
        submits and other threads are not affected; nested use keeps the outer connection. On
        SQLite, where a pooled connection costs no round trip, it changes nothing.
        """
        if not self.store.reuses_connections or getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.store.connect() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _run(self, body: Callable[[Connection, Recording], _R]) -> _R:
        """Run ``body(conn, rec)`` in one transaction with the records it adds; return its value."""
        def once(committing: list[bool]) -> _R:
            with self.provenance.recording() as rec, self._transaction(committing) as conn:
                out = body(conn, rec)
                rec.flush(conn)
            return out

        return self._retry(once)

    def _run_unrecorded(self, body: Callable[[Connection], _R]) -> _R:
        """Run ``body(conn)`` in one transaction (no state change: nothing to record)."""
        def once(committing: list[bool]) -> _R:
            with self._transaction(committing) as conn:
                return body(conn)

        return self._retry(once)

    @contextmanager
    def _transaction(self, committing: list[bool]) -> Iterator[Connection]:
        """A transaction on the kept connection, or on one from the pool; ``committing`` gets an
        item once the block is done, before ``COMMIT`` is sent."""
        kept: Connection | None = getattr(self._local, "conn", None)
        if kept is None:
            with self.store.transaction() as conn:
                yield conn
                committing.append(True)
            return
        with self.store.transaction_on(kept):
            yield kept
            committing.append(True)

    def _retry(self, once: Callable[[list[bool]], _R]) -> _R:
        """``once(committing)``; on a kept connection, a disconnect before ``COMMIT`` was sent
        runs it once more, on a new connection (the server rolled the transaction back)."""
        if getattr(self._local, "conn", None) is None:
            return once([])
        try:
            committing: list[bool] = []
            return once(committing)
        except sa.exc.DBAPIError as exc:
            if committing or not exc.connection_invalidated:
                raise
            log.info("workflow: store connection lost (%s); running the call again",
                     " ".join(str(exc.orig).split()))
        try:
            return once([])
        except sa.exc.DBAPIError as exc:
            if not isinstance(exc, sa.exc.OperationalError) and not exc.connection_invalidated:
                raise
            store = self.store
            reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
            raise StoreUnavailableError(
                f"{store.name} store {store.masked_url} is unavailable: the connection was lost "
                f"and could not be replaced: {reason}",
                url=store.masked_url, backend=store.name) from exc
        except StoreUnavailableError as exc:  # the store could not begin on it either
            store = self.store
            raise StoreUnavailableError(
                f"{store.name} store {store.masked_url} is unavailable: the connection was lost "
                f"and could not be replaced: {exc}",
                url=store.masked_url, backend=store.name) from exc

    @staticmethod
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

    # --- submitting ----------------------------------------------------------------------------

    def _new_row(self, task_id: str, task_type: str, data: Any, priority: int,
                 tags: Iterable[str] | None, max_attempts: int | None, now: int) -> dict[str, Any]:
        _task_id(task_id)
        _text(task_type, "task_type", 200)
        _integer(priority, "priority", *_INT32)
        attempts = (self.max_attempts if max_attempts is None
                    else _integer(max_attempts, "max_attempts", 1, _INT32[1]))
        try:
            tagset = parse_tags(tags)
        except ValueError as exc:
            raise InvalidDataError(str(exc), path="tags") from exc
        return {
            "task_id": task_id, "task_type": task_type, "state": "pending",
            "priority": priority, "data": _payload(data, "data"), "tags": list(tagset.tags),
            "required_caps": list(tagset.required), "preferred_caps": list(tagset.preferred),
            "attempts": 0, "max_attempts": attempts, "created_at_us": now,
            "updated_at_us": now, "due_at_us": now,
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
        row = self._new_row(task_id, task_type, data, priority, tags, max_attempts, self._now())
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
        now = self._now()
        rows = [self._new_row(t["task_id"], t["task_type"], t.get("data"), t.get("priority", 0),
                              t.get("tags"), t.get("max_attempts"), now) for t in tasks]
        return len(self._insert(rows))

    def _insert(self, rows: list[dict[str, Any]]) -> list[Task]:
        if not rows:
            return []
        store = self.store
        created: list[Task] = []
        with self.provenance.recording() as rec, store.transaction() as conn:
            stamped = store.stamp(_T, rows, connection=conn)
            created.extend(Task.from_row(r) for r in store.insert_missing(
                _T, stamped, connection=conn, returning=list(_T.c)))
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
        _text(worker_id, "worker_id", 255)
        limit = _check_batch(limit)
        try:
            caps = normalise_capabilities(capabilities)
        except ValueError as exc:
            raise InvalidDataError(str(exc), path="capabilities") from exc
        if isinstance(task_types, str):
            task_types = [task_types]
        types = (sorted({_text(t, "task_types", 200) for t in task_types})
                 if task_types is not None else None)
        if types is not None and not types:
            return []
        self._sweep()
        now = self._now()
        params: dict[str, Any] = {
            "now": now, "worker": worker_id, "exp": now + int(self.lease_seconds * 1_000_000),
            "pref_cutoff": now - int(self.preferred_wait * 1_000_000),
            "node": self.provenance.node_id, "limit": limit, "caps": json.dumps(list(caps)),
            "tokens": [secrets.token_hex(16) for _ in range(limit)],
        }
        claim = self._claim_pg if self._pg else self._claim

        def body(conn: Connection, rec: Recording) -> list[tuple[Task, str]]:
            claimed = claim(conn, params, caps, types)
            claimed.sort(key=lambda c: (-c[0].priority, c[0].created_at_us, c[0].task_id))
            for task, old_state in claimed:
                self._record(rec, task, old_state)
            return claimed

        claimed = self._run(body)
        self._remember([task for task, _ in claimed])
        self._announce(claimed)
        return [task for task, _ in claimed]

    @classmethod
    def _claim_pg(cls, conn: Connection, params: dict[str, Any], caps: tuple[str, ...],
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
        rows = cls._pg_rows(conn, sql, params, setup=("SET LOCAL enable_sort = off",))
        return [(Task._from_values(r), str(r[-1])) for r in rows]

    def _claim(self, conn: Connection, params: dict[str, Any], caps: tuple[str, ...],
               types: list[str] | None) -> list[tuple[Task, str]]:
        store = self.store
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
            returning=[_T.c[c] for c in _COLUMNS],
            # walk the claim index in order instead of sorting every claimable row (the
            # planner cannot estimate the JSON conditions and would otherwise sort)
            planner_hints=["enable_sort = off"])
        return [(Task._from_values(r), str(r[-1])) for r in rows]

    def _sweep(self) -> None:
        """Make tasks dead whose lease expired on their last attempt (at most once a second)."""
        clock = time.monotonic()
        if clock - self._last_sweep < 1.0:
            return
        self._last_sweep = clock
        now = self._now()

        def body(conn: Connection, rec: Recording) -> list[tuple[Task, str | None]]:
            query = sa.select(_T.c.task_id).where(
                _T.c.due_at_us.is_not(None), _T.c.due_at_us <= now, _T.c.state == "running",
                _T.c.attempts >= _T.c.max_attempts)
            ids = list(conn.execute(self.store.locked(query, skip_locked=True)).scalars())
            events: list[tuple[Task, str | None]] = []
            for task_id in ids:
                task = self._update(conn, task_id, state="dead", due_at_us=None,
                                    lease_token=None, finished_at_us=now, updated_at_us=now,
                                    error="lease expired on the last attempt")
                self._record(rec, task, "running")
                events.append((task, "running"))
            return events

        self._announce(self._run(body))

    # --- the lease holder's operations ---------------------------------------------------------

    @staticmethod
    def _check_holder(row: Any, worker_id: str | None, lease_token: str | None,
                      doing: str, force: bool = False) -> None:
        if row.state != "running":
            if row.state in FINISHED and row.state != "dead":
                raise TaskStateError(
                    f"cannot {doing} task {row.task_id!r}: it is {row.state}",
                    task_id=row.task_id, state=row.state)
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: it is {row.state}, no longer held",
                task_id=row.task_id, state=row.state)
        if force:
            return
        if lease_token is None:
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: this caller does not hold it (it is held "
                f"by {row.worker_id!r}); pass the lease_token of its claim, or override as an "
                "operator with force=True (--force on the command line)",
                task_id=row.task_id, state=row.state)
        if row.lease_token != lease_token:
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: the lease was given to another claim "
                f"(now held by {row.worker_id!r})", task_id=row.task_id, state=row.state)
        if worker_id is not None and row.worker_id != worker_id:
            raise LeaseLostError(
                f"cannot {doing} task {row.task_id!r}: it is held by {row.worker_id!r}, "
                f"not {worker_id!r}", task_id=row.task_id, state=row.state)

    def heartbeat(self, task_id: str, worker_id: str, *,
                  lease_token: str | None = None) -> Task:
        """Extend the lease of a task the caller holds; return the task with its new expiry.

        Fenced as :meth:`complete_task` is (there is no override: only a holder has a lease to
        extend).
        """
        _task_id(task_id)
        _text(worker_id, "worker_id", 255)
        token = self._token_for(task_id, _lease_token(lease_token), False)

        def body(conn: Connection) -> Any:
            row = self._load(conn, task_id)
            self._check_holder(row, worker_id, token, "heartbeat")
            exp = self._now() + int(self.lease_seconds * 1_000_000)
            # a heartbeat is not a state change: no provenance record, no new change version
            return conn.execute(
                sa.update(_T).where(_T.c.task_id == task_id)
                .values(lease_expires_at_us=exp, due_at_us=exp).returning(*_T.c)).one()

        try:
            return Task.from_row(self._run_unrecorded(body))
        except TaskError:
            self._forget(task_id, token)
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
        _task_id(task_id)
        worker_id = _worker_id(worker_id)
        token = self._token_for(task_id, _lease_token(lease_token), force)
        outcome = self._complete([_result_item(task_id, result, token)], worker_id, force)[0]
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
        worker_id = _worker_id(worker_id)
        items: list[_Result | RubixError] = []
        for entry in entries:
            try:
                if not isinstance(entry, Mapping):
                    raise InvalidDataError(
                        "each result must be a mapping with task_id, result and lease_token, "
                        f"not {_shown(entry)}", path="results")
                task_id = _task_id(entry.get("task_id"))
                token = self._token_for(task_id, _lease_token(entry.get("lease_token")), force)
                items.append(_result_item(task_id, entry.get("result"), token))
            except InvalidDataError as exc:
                items.append(exc)
        valid = [i for i in items if isinstance(i, _Result)]
        if len({i.task_id for i in valid}) != len(valid):
            raise InvalidDataError("a task_id appears twice among the results", path="task_id")
        done = iter(self._complete(valid, worker_id, force)) if valid else iter(())
        return [next(done) if isinstance(i, _Result) else i for i in items]

    def _complete(self, items: list[_Result], worker_id: str | None,
                  force: bool) -> list[Task | RubixError]:
        """Complete ``items`` in one transaction; per item the task or the refusal.

        An item without a lease token is accepted only with ``force``; the others go to
        :meth:`_refusals`, which says why.
        """
        now = self._now()
        sendable = [i for i in items if force or i.lease_token is not None]
        fence_worker = None if force else worker_id

        def body(conn: Connection, rec: Recording) -> dict[str, Task | RubixError]:
            accepted: dict[str, Task] = {}
            if sendable and self._pg:
                accepted = self._complete_pg(conn, sendable, fence_worker, now)
            elif sendable:
                accepted = self._accept(conn, sendable, fence_worker, now)
            outcome: dict[str, Task | RubixError] = dict(accepted)
            for item in items:  # records in the order given
                task = accepted.get(item.task_id)
                if task is not None:
                    self._record(rec, task, "running", item.cid, forced=force)
            refused = [i for i in items if i.task_id not in accepted]
            if refused:
                outcome.update(self._refusals(conn, refused, worker_id, force))
            return outcome

        outcome = self._run(body)
        for item in items:
            result = outcome[item.task_id]
            if isinstance(result, Task) and force:
                with self._leases_lock:
                    self._leases.pop(item.task_id, None)
                self._log_forced(result, result.worker_id)
            elif isinstance(result, (Task, TaskError)):
                self._forget(item.task_id, item.lease_token)
        self._announce([(t, "running") for i in items
                        if isinstance(t := outcome[i.task_id], Task)])
        return [outcome[i.task_id] for i in items]

    def _complete_pg(self, conn: Connection, items: list[_Result], worker_id: str | None,
                     now: int) -> dict[str, Task]:
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
        params = {"now": now, "node": self.provenance.node_id, "worker": worker_id,
                  "ids": [i.task_id for i in items], "tokens": [i.lease_token for i in items],
                  "results": [i.text for i in items]}
        return {str(r[0]): Task._from_values(r) for r in self._pg_rows(conn, sql, params)}

    def _accept(self, conn: Connection, items: list[_Result], worker_id: str | None,
                now: int) -> dict[str, Task]:
        """Complete each of ``items`` still running under its lease token (and ``worker_id``)."""
        where = [_T.c.state == "running", _T.c.deleted_at.is_(None)]
        if worker_id is not None:
            where.append(_T.c.worker_id == worker_id)
        rows = self.store.update_each(
            conn, _T,
            [{"task_id": i.task_id, "result": json.loads(i.text), "token": i.lease_token}
             for i in items],
            assign=["result"], expect={"lease_token": "token"},
            values={"state": "completed", "due_at_us": None, "lease_token": None,
                    "finished_at_us": now, "updated_at_us": now},
            where=where, returning=list(_T.c))
        return {str(r.task_id): Task.from_row(r) for r in rows}

    def _refusals(self, conn: Connection, items: list[_Result], worker_id: str | None,
                  force: bool) -> dict[str, RubixError]:
        """Why each of ``items`` was not accepted: unknown, finished, or held by another."""
        ids = [i.task_id for i in items]
        found = {
            r.task_id: _Holder(r.task_id, r.state, r.worker_id, r.lease_token)
            for r in conn.execute(
                sa.select(_T.c.task_id, _T.c.state, _T.c.worker_id, _T.c.lease_token)
                .where(_T.c.task_id.in_(ids), _T.c.deleted_at.is_(None)))
        }
        out: dict[str, RubixError] = {}
        for item in items:
            holder = found.get(item.task_id)
            if holder is None:
                out[item.task_id] = TaskNotFoundError(f"no task {item.task_id!r}",
                                                      task_id=item.task_id)
                continue
            try:
                self._check_holder(holder, worker_id, item.lease_token, "complete", force)
                out[item.task_id] = LeaseLostError(  # pragma: no cover - checked above
                    f"cannot complete task {item.task_id!r}: not held", task_id=item.task_id)
            except RubixError as exc:
                out[item.task_id] = exc
        return out

    def fail_task(self, task_id: str, error: str, *, worker_id: str | None = None,
                  lease_token: str | None = None, retry: bool = True,
                  force: bool = False) -> Task:
        """Record a failed attempt: ``retry_wait`` with backoff, or ``dead`` after the last
        attempt (or at once with ``retry=False``).

        Fenced as :meth:`complete_task` is (``force=True`` overrides). NUL characters in
        ``error`` are stored as U+FFFD.
        """
        _task_id(task_id)
        worker_id = _worker_id(worker_id)
        token = self._token_for(task_id, _lease_token(lease_token), force)
        message = _message(error, "")

        def change(row: Any) -> dict[str, Any]:
            self._check_holder(row, worker_id, token, "fail", force)
            now = self._now()
            if not retry or row.attempts >= row.max_attempts:
                return {"state": "dead", "error": message, "due_at_us": None,
                        "lease_token": None, "finished_at_us": now, "updated_at_us": now}
            delay = min(self.backoff_max, self.backoff_base * 2 ** (row.attempts - 1))
            return {"state": "retry_wait", "error": message, "lease_token": None,
                    "due_at_us": now + int(delay * 1_000_000), "updated_at_us": now}

        return self._change(task_id, change, force=force, token=token)

    def release_task(self, task_id: str, *, worker_id: str | None = None,
                     lease_token: str | None = None, force: bool = False) -> Task:
        """Give a held task back unfinished (a stopping worker); the attempt is not counted.

        Fenced as :meth:`complete_task` is (``force=True`` overrides).
        """
        _task_id(task_id)
        worker_id = _worker_id(worker_id)
        token = self._token_for(task_id, _lease_token(lease_token), force)

        def change(row: Any) -> dict[str, Any]:
            self._check_holder(row, worker_id, token, "release", force)
            now = self._now()
            return {"state": "pending", "lease_token": None, "due_at_us": now,
                    "attempts": max(0, row.attempts - 1), "updated_at_us": now}

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
        _task_id(task_id)
        token = self._token_for(task_id, _lease_token(lease_token), force)
        message = _message(reason or "cancelled", "cancelled")

        def change(row: Any) -> dict[str, Any]:
            if row.state in FINISHED:
                raise TaskStateError(f"cannot cancel task {task_id!r}: it is already {row.state}",
                                     task_id=task_id, state=row.state)
            if row.state == "running":
                self._check_holder(row, None, token, "cancel", force)
            now = self._now()
            return {"state": "cancelled", "due_at_us": None, "lease_token": None,
                    "finished_at_us": now, "updated_at_us": now, "error": message}

        return self._change(task_id, change, force=force, token=token)

    def resubmit_task(self, task_id: str, *, max_attempts: int | None = None) -> Task:
        """Queue a dead or cancelled task again, with its attempts reset."""
        _task_id(task_id)
        if max_attempts is not None:
            _integer(max_attempts, "max_attempts", 1, _INT32[1])

        def change(row: Any) -> dict[str, Any]:
            if row.state not in ("dead", "cancelled"):
                raise TaskStateError(
                    f"cannot resubmit task {task_id!r}: it is {row.state} (only dead or "
                    "cancelled tasks can be)", task_id=task_id, state=row.state)
            now = self._now()
            values: dict[str, Any] = {
                "state": "pending", "attempts": 0, "due_at_us": now, "worker_id": None,
                "lease_token": None, "lease_expires_at_us": None, "finished_at_us": None,
                "result": None, "updated_at_us": now}
            if max_attempts is not None:
                values["max_attempts"] = max_attempts
            return values

        return self._change(task_id, change)

    def get_task_status(self, task_id: str) -> Task:
        """The task's current fields; ``TaskNotFoundError`` for an unknown id."""
        _task_id(task_id)
        with self.store.connect() as conn:
            return Task.from_row(self._load(conn, task_id, lock=False))

    def list_tasks(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                   offset: int = 0) -> list[Task]:
        """Tasks matching ``filters``, oldest first.

        ``state`` (one or a list), ``task_type``, ``worker_id`` and ``tag`` (the task carries
        this tag) are accepted. ``limit`` (``None``: no limit) and ``offset`` are integers from
        0 to 2**63 - 1. Anything else raises ``InvalidDataError`` before the store is asked.
        """
        if limit is not None:
            _integer(limit, "limit", 0, _MAX_ROWS)
        _integer(offset, "offset", 0, _MAX_ROWS)
        if filters is not None and not isinstance(filters, Mapping):
            raise InvalidDataError(f"filters must be a mapping, not {_shown(filters)}",
                                   path="filters")
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
                        f"unknown state(s) {', '.join(_shown(v) for v in unknown)}; states: "
                        f"{', '.join(STATES)}", path="state")
                query = query.where(_T.c.state.in_(states))
            elif key in ("task_type", "worker_id", "tag"):
                text = _text(value, key, _MAX_ERROR)
                if key != "tag":
                    query = query.where(_T.c[key] == text)
                else:
                    query = query.where(self.store.json_array_contains(_T.c.tags, text))
            else:
                raise InvalidDataError(f"unknown task filter {_shown(key)}: use state, "
                                       "task_type, worker_id or tag", path="filters")
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
