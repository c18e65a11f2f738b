"""A worker loop: claim a task, run its handler while heartbeating, report the outcome.

A handler is ``handler(task) -> result`` (``result`` JSON-serialisable); an exception fails the
attempt (retried with backoff until the task's ``max_attempts``). Handlers come from a
``module:function`` path or from plugins' ``register_task_handlers`` hook (task type -> handler).

Stopping: :meth:`Worker.stop` (the CLI's first Ctrl-C or SIGTERM) lets the current task finish
and report, then returns. A second Ctrl-C interrupts the handler; the task is released (back to
``pending``, the attempt not counted) before the loop returns.

Batches (``batch_size`` > 1, for many short tasks): the worker claims up to that many tasks in
one transaction, runs them one after the other, and reports their results together once the
batch is run, in the transaction that claims the next batch
(:meth:`~.coordinator.WorkflowCoordinator.complete_and_claim`: one commit per batch on
PostgreSQL), or on their own before the next task starts when a result has waited
:data:`REPORT_AFTER` seconds, and when the worker stops. Leases:

- every task of the batch is leased from the claim, and counted as an attempt then;
- while the worker holds a task (running it, waiting for its turn, or holding its result for the
  report) a heartbeat thread extends its lease every ``heartbeat_interval``;
- a waiting task is started only while its lease is still held: if it is about to run out (the
  heartbeats failed), it is renewed first, and skipped when that is refused (another worker has
  it now); so is a waiting task that a heartbeat found cancelled or taken over. One cancelled
  since its last heartbeat still runs, and its result is refused at the report, as for a task
  cancelled while it runs;
- stopping (first Ctrl-C or SIGTERM) finishes the current task, reports the results, and
  releases the tasks not started (back to ``pending``, their attempt not counted); so does an
  interrupted handler, which is released too;
- a worker that dies holds its whole batch until the leases run out: each task is claimed again
  after at most ``lease_seconds``, which counts as an attempt, exactly as for one task.

Wake-ups (PostgreSQL): the worker listens for submissions (``LISTEN``), so an idle worker
claims new work at once instead of at its next poll; ``poll_interval`` stays the fallback (and is
the only way on SQLite).

Cancellation: a running task cancelled by an operator (``cancel_task(..., force=True)``,
``tasks cancel --abort``) is refused its result; its handler is told through
:func:`cancelled` / :func:`cancellation` (an event set at once on PostgreSQL, at the next
heartbeat elsewhere), and may stop early. A handler that raises once cancelled changes nothing.

A larger batch makes the queue cheaper per task, but its tasks wait behind each other: prefer
small batches for slow tasks. Failures are reported at once, one transaction each.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rubix_integration.codecs.clock import now_us
from rubix_integration.errors import InvalidDataError, TaskError
from rubix_integration.workflow.validate import check_batch

if TYPE_CHECKING:
    from rubix_integration.workflow.coordinator import Task, WorkflowCoordinator

__all__ = [
    "Handler",
    "Worker",
    "WorkerStats",
    "cancellation",
    "cancelled",
    "collect_handlers",
    "default_worker_id",
    "load_handler",
]

log = logging.getLogger("rubix_integration.workflow")

Handler = Callable[["Task"], Any]

#: Seconds a result of a batch may wait for the others before it is reported on its own.
REPORT_AFTER = 1.0


_running = threading.local()  # the cancellation event of the task this thread's handler runs
_NEVER = threading.Event()


def cancellation() -> threading.Event:
    """The event set when the task the calling handler runs is cancelled (an event never set
    outside a handler run by :class:`Worker`)."""
    event: threading.Event | None = getattr(_running, "event", None)
    return event if event is not None else _NEVER


def cancelled() -> bool:
    """Whether the task the calling handler runs was cancelled: its result will be refused,
    so the handler may stop early."""
    return cancellation().is_set()


def default_worker_id() -> str:
    """``host:pid``, unique among live processes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def load_handler(path: str) -> Handler:
    """Import ``module:function`` (or ``module.function``) and return the callable."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"handler {path!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"handler {path!r}: cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"handler {path!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ValueError(f"handler {path!r} is not callable")
    handler: Handler = target
    return handler


@dataclass
class WorkerStats:
    """What a :meth:`Worker.run` did."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    released: int = 0


class _Held:
    """A task the worker holds: its lease is kept alive until the outcome is reported."""

    __slots__ = ("cancel", "expires_us", "lost", "next_beat", "task")

    def __init__(self, task: Task, next_beat: float) -> None:
        self.task = task
        self.expires_us = task.lease_expires_at_us or 0
        self.next_beat = next_beat
        self.lost = False
        self.cancel = threading.Event()


class Worker:
    """Run tasks from a coordinator with one handler, or a handler per task type.

    ``handlers`` is a callable (every task type) or a mapping of task type to callable (only
    those types are claimed). ``heartbeat_interval`` defaults to a third of the lease.
    ``batch_size``: how many tasks to claim, and report, at a time (1 by default; see the module
    doc for what a larger batch means for leases). ``listen``: on PostgreSQL, wake up on
    submissions and cancellations (see the module doc).
    """

    def __init__(
        self,
        coordinator: WorkflowCoordinator,
        handlers: Handler | Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        capabilities: Iterable[str] | str | None = (),
        poll_interval: float = 0.5,
        heartbeat_interval: float | None = None,
        batch_size: int = 1,
        listen: bool = True,
    ) -> None:
        self.coordinator = coordinator
        self.listen = listen
        if callable(handlers):
            self._handlers: Mapping[str, Handler] | None = None
            self._default: Handler | None = handlers
        else:
            self._handlers = dict(handlers)
            self._default = None
        check_batch(batch_size, "batch_size")
        self.worker_id = worker_id or default_worker_id()
        self.capabilities = capabilities
        self.poll_interval = poll_interval
        self.heartbeat_interval = (heartbeat_interval if heartbeat_interval is not None
                                   else max(0.05, coordinator.lease_seconds / 3))
        self.batch_size = batch_size
        self._stop = threading.Event()
        self.current: Task | None = None
        self.stats = WorkerStats()
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.Lock()
        self._wake = threading.Event()
        #: Set once the worker listens for wake-ups (PostgreSQL); never set elsewhere.
        self.listening = threading.Event()

    def stop(self) -> None:
        """Finish the current task, then return from :meth:`run`."""
        self._stop.set()
        self._wake.set()

    def _cancelled(self, task_id: str) -> None:
        """A cancellation notification: tell the handler running ``task_id`` (if held)."""
        held = self._held.get(task_id)
        if held is not None:
            held.lost = True
            held.cancel.set()
            log.info("%s: %s was cancelled", self.worker_id, task_id)

    def _listener(self, types: list[str] | None) -> Any:
        store = self.coordinator.store
        conninfo = getattr(store, "libpq_conninfo", None)
        if not self.listen or store.engine.dialect.name != "postgresql" or conninfo is None:
            return None
        from rubix_integration.workflow._wakeups import Listener

        listener = Listener(conninfo(), self._wake, self._cancelled, types).start()
        if listener.ready.wait(5):
            self.listening.set()
        return listener

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _handler_for(self, task: Task) -> Handler:
        if self._default is not None:
            return self._default
        assert self._handlers is not None
        return self._handlers[task.task_type]

    def run(self, *, max_tasks: int | None = None, exit_when_idle: bool = False,
            idle_timeout: float | None = None) -> WorkerStats:
        """Work until stopped, ``max_tasks`` were run, or (``exit_when_idle``) nothing is left
        to claim for ``idle_timeout`` seconds (default: at once)."""
        idle_since: float | None = None
        types = None if self._handlers is None else list(self._handlers)
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(beat_stop,),
                                name=f"heartbeat-{self.worker_id}", daemon=True)
        beat.start()
        listener = self._listener(types)
        pending: list[tuple[Task, Any]] = []  # the last batch's results, not reported yet
        try:
            with self.coordinator.keep_connection():
                while not self._stop.is_set():
                    self._wake.clear()
                    self.coordinator.run_schedules()
                    want = self.batch_size
                    if max_tasks is not None:
                        want = min(want, max_tasks - self.stats.claimed)
                        if want <= 0:
                            break
                    if pending:  # reported with the next claim: one transaction
                        outcomes, tasks = self.coordinator.complete_and_claim(
                            self._results(pending), self.worker_id, self.capabilities,
                            limit=want, task_types=types)
                        reported, pending = pending, []
                        self._reported(reported, outcomes)
                    else:
                        tasks = self.coordinator.get_next_tasks(
                            self.worker_id, self.capabilities, limit=want, task_types=types)
                    if not tasks:
                        now = time.monotonic()
                        idle_since = idle_since if idle_since is not None else now
                        if exit_when_idle and now - idle_since >= (idle_timeout or 0.0):
                            break
                        wait = self.poll_interval
                        if exit_when_idle:
                            wait = min(wait, max(0.01, (idle_timeout or 0.0)
                                                 - (now - idle_since)))
                        self._wake.wait(self.coordinator.next_schedule_wait(wait))
                        continue
                    idle_since = None
                    self.stats.claimed += len(tasks)
                    from rubix_integration.workflow.metrics import observe_claims

                    observe_claims(tasks)
                    pending = self._run_batch(tasks)
            self._report(pending)
            pending = []
        finally:
            if pending:  # interrupted between batches: report what is done, if the store can
                try:
                    self._report(pending)
                except Exception as exc:  # the leases run out and the tasks run again
                    log.warning("%s: results of %d tasks not reported: %s", self.worker_id,
                                len(pending), exc)
            if listener is not None:
                listener.stop()
                self.listening.clear()
            beat_stop.set()
            beat.join(timeout=10)
        return self.stats

    # --- one batch -----------------------------------------------------------------------------

    def _run_batch(self, tasks: list[Task]) -> list[tuple[Task, Any]]:
        """Run ``tasks``; the results not reported yet (the caller reports them with its next
        claim), or none when the worker stops or lost a task (reported here then)."""
        next_beat = time.monotonic() + self.heartbeat_interval
        with self._held_lock:
            self._held = {t.task_id: _Held(t, next_beat) for t in tasks}
        pending: list[tuple[Task, Any]] = []  # results not reported yet
        waiting_since = 0.0
        started: set[str] = set()
        try:
            for index, task in enumerate(tasks):
                if self._stop.is_set():
                    break
                if pending and time.monotonic() - waiting_since >= REPORT_AFTER:
                    self._report(pending)
                    pending = []
                if index and not self._still_held(task):
                    continue
                started.add(task.task_id)
                outcome = self._run_one(task)
                if outcome is _INTERRUPTED:
                    self._release(task)
                    self._stop.set()
                    break
                if outcome is not _FAILED:
                    if not pending:
                        waiting_since = time.monotonic()
                    pending.append((task, outcome))
            if self._stop.is_set() or len(started) < len(tasks):
                self._report(pending)
                pending = []
        except KeyboardInterrupt:
            self._release_unstarted(started)
            raise
        except BaseException:
            # a store error: what is held is left to its lease, as if the worker had died
            with self._held_lock:
                self._held = {}
            raise
        self._release_unstarted(started)
        return pending

    def _release_unstarted(self, started: set[str]) -> None:
        """Give the tasks of the batch that were not started back to the queue."""
        for held in list(self._held.values()):
            if held.task.task_id not in started:
                self._release(held.task)
        with self._held_lock:
            self._held = {}

    def _run_one(self, task: Task) -> Any:
        """Run the handler: its result, or _FAILED (reported), or _INTERRUPTED."""
        self.current = task
        held = self._held.get(task.task_id)
        _running.event = held.cancel if held is not None else None
        started = time.monotonic()
        try:
            return self._handler_for(task)(task)
        except KeyboardInterrupt:
            return _INTERRUPTED
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            self._fail(task, error)
            return _FAILED
        finally:
            self.current = None
            _running.event = None
            from rubix_integration.workflow.metrics import observe_run

            observe_run(task, time.monotonic() - started)

    def _still_held(self, task: Task) -> bool:
        """Whether a task waiting in the batch may start: its lease is held (renewed if due)."""
        held = self._held.get(task.task_id)
        if held is not None and not held.lost:
            margin = min(self.heartbeat_interval, self.coordinator.lease_seconds / 2)
            if held.expires_us - now_us() > margin * 1_000_000:
                return True
            try:
                self._renew(held)
                return True
            except TaskError as exc:
                log.warning("%s: %s was not started: %s", self.worker_id, task.task_id, exc)
            except Exception as exc:  # the store: leave the task to its lease
                log.warning("%s: %s was not started, its lease could not be renewed: %s",
                            self.worker_id, task.task_id, exc)
        else:
            log.warning("%s: %s was not started: its lease was lost", self.worker_id,
                        task.task_id)
        self.stats.lost += 1
        self._drop(task)
        return False

    def _drop(self, task: Task) -> None:
        with self._held_lock:
            self._held.pop(task.task_id, None)

    @staticmethod
    def _results(pending: list[tuple[Task, Any]]) -> list[dict[str, Any]]:
        return [{"task_id": t.task_id, "result": r, "lease_token": t.lease_token}
                for t, r in pending]

    def _report(self, pending: list[tuple[Task, Any]]) -> None:
        """Report the results of ``pending`` in one transaction."""
        if not pending:
            return
        outcomes = self.coordinator.complete_tasks(self._results(pending),
                                                   worker_id=self.worker_id)
        self._reported(pending, outcomes)

    def _reported(self, pending: list[tuple[Task, Any]], outcomes: list[Any]) -> None:
        """Account for the ``outcomes`` of reporting ``pending``."""
        for (task, _), outcome in zip(pending, outcomes, strict=True):
            self._drop(task)
            if isinstance(outcome, InvalidDataError):  # the result cannot be stored
                self._fail(task, f"result not storable: {outcome}")
            elif isinstance(outcome, Exception):
                self.stats.lost += 1
                log.warning("%s: result of %s refused: %s", self.worker_id, task.task_id,
                            outcome)
            else:
                self.stats.completed += 1

    def _fail(self, task: Task, error: str) -> None:
        try:
            self.coordinator.fail_task(task.task_id, error, worker_id=self.worker_id,
                                       lease_token=task.lease_token)
            self.stats.failed += 1
        except TaskError as exc:
            self.stats.lost += 1
            log.warning("%s: failure of %s not recorded: %s", self.worker_id, task.task_id,
                        exc)
        finally:
            self._drop(task)

    def _release(self, task: Task) -> None:
        try:
            self.coordinator.release_task(task.task_id, worker_id=self.worker_id,
                                          lease_token=task.lease_token)
            self.stats.released += 1
        except TaskError as exc:
            log.warning("%s: could not release %s: %s", self.worker_id, task.task_id, exc)
        finally:
            self._drop(task)

    # --- leases --------------------------------------------------------------------------------

    def _renew(self, held: _Held) -> None:
        """Extend the lease of ``held`` now (``TaskError`` when it is no longer held)."""
        held.next_beat = time.monotonic() + self.heartbeat_interval
        task = held.task
        renewed = self.coordinator.heartbeat(task.task_id, self.worker_id,
                                             lease_token=task.lease_token)
        held.expires_us = renewed.lease_expires_at_us or 0

    def _heartbeats(self, stop: threading.Event) -> None:
        """Extend the lease of every held task ``heartbeat_interval`` after its claim or last
        extension, until ``stop``."""
        while True:
            with self._held_lock:
                held = list(self._held.values())
            now = time.monotonic()
            due = [h.next_beat for h in held if not h.lost]
            wait = min(due) if due else now + self.heartbeat_interval
            if stop.wait(max(0.0, wait - now)):
                return
            now = time.monotonic()
            for h in held:
                if h.lost or h.next_beat > now or h.task.task_id not in self._held:
                    continue
                task = h.task
                try:
                    self._renew(h)
                except TaskError as exc:
                    if task.task_id in self._held:  # not just reported
                        h.lost = True
                        if getattr(exc, "state", None) == "cancelled":
                            h.cancel.set()
                        log.warning("%s: lost the lease of %s: %s", self.worker_id,
                                    task.task_id, exc)
                except Exception as exc:  # a store hiccup: keep trying until the lease runs out
                    log.warning("%s: heartbeat of %s failed: %s", self.worker_id,
                                task.task_id, exc)


_FAILED = object()
_INTERRUPTED = object()


def collect_handlers(manager: Any) -> dict[str, Handler]:
    """``{task_type: handler}`` from every plugin's ``register_task_handlers`` hook.

    A task type registered by two plugins raises :class:`PluginError` naming both.
    """
    from rubix_integration.errors import PluginError

    hook = getattr(manager.hook, "register_task_handlers", None)
    if hook is None:
        return {}
    found: dict[str, Handler] = {}
    owners: dict[str, str] = {}
    for impl in hook.get_hookimpls():
        try:
            mapping = impl.function()
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r}: register_task_handlers failed: "
                              f"{exc}", plugin=impl.plugin_name) from exc
        for task_type, handler in dict(mapping or {}).items():
            if task_type in owners:
                raise PluginError(
                    f"task type {task_type!r} has handlers from plugins {owners[task_type]!r} "
                    f"and {impl.plugin_name!r}", plugin=impl.plugin_name)
            if not callable(handler):
                raise PluginError(f"plugin {impl.plugin_name!r}: the handler of {task_type!r} "
                                  "is not callable", plugin=impl.plugin_name)
            owners[task_type] = impl.plugin_name
            found[str(task_type)] = handler
    return found
