"""A worker loop: claim a task, run its handler while heartbeating, report the outcome.

A handler is ``handler(task) -> result`` (``result`` JSON-serialisable); an exception fails the
attempt (retried with backoff until the task's ``max_attempts``). Handlers come from a
``module:function`` path or from plugins' ``register_task_handlers`` hook (task type -> handler).

Stopping: :meth:`Worker.stop` (the CLI's first Ctrl-C or SIGTERM) lets the current task finish
and report, then returns. A second Ctrl-C interrupts the handler; the task is released (back to
``pending``, the attempt not counted) before the loop returns.
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

from rubix_integration.workflow.errors import LeaseLostError, TaskError

if TYPE_CHECKING:
    from rubix_integration.workflow.coordinator import Task, WorkflowCoordinator

__all__ = [
    "Handler",
    "Worker",
    "WorkerStats",
    "collect_handlers",
    "default_worker_id",
    "load_handler",
]

log = logging.getLogger("rubix_integration.workflow")

Handler = Callable[["Task"], Any]


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


class Worker:
    """Run tasks from a coordinator with one handler, or a handler per task type.

    ``handlers`` is a callable (every task type) or a mapping of task type to callable (only
    those types are claimed). ``heartbeat_interval`` defaults to a third of the lease.
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
    ) -> None:
        self.coordinator = coordinator
        if callable(handlers):
            self._handlers: Mapping[str, Handler] | None = None
            self._default: Handler | None = handlers
        else:
            self._handlers = dict(handlers)
            self._default = None
        self.worker_id = worker_id or default_worker_id()
        self.capabilities = capabilities
        self.poll_interval = poll_interval
        self.heartbeat_interval = (heartbeat_interval if heartbeat_interval is not None
                                   else max(0.05, coordinator.lease_seconds / 3))
        self._stop = threading.Event()
        self.current: Task | None = None
        self.stats = WorkerStats()

    def stop(self) -> None:
        """Finish the current task, then return from :meth:`run`."""
        self._stop.set()

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
        while not self._stop.is_set():
            if max_tasks is not None and self.stats.claimed >= max_tasks:
                break
            task = self.coordinator.get_next_task(self.worker_id, self.capabilities,
                                                  task_types=types)
            if task is None:
                now = time.monotonic()
                idle_since = idle_since if idle_since is not None else now
                if exit_when_idle and now - idle_since >= (idle_timeout or 0.0):
                    break
                self._stop.wait(self.poll_interval)
                continue
            idle_since = None
            self.stats.claimed += 1
            self._run_one(task)
        return self.stats

    def _run_one(self, task: Task) -> None:
        self.current = task
        lost = threading.Event()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(task, done, lost),
                                name=f"heartbeat-{task.task_id}", daemon=True)
        beat.start()
        coordinator = self.coordinator
        try:
            try:
                result = self._handler_for(task)(task)
            except KeyboardInterrupt:
                done.set()
                beat.join(timeout=10)
                self._release(task)
                self._stop.set()
                return
            except Exception as exc:
                done.set()
                beat.join(timeout=10)
                error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
                try:
                    coordinator.fail_task(task.task_id, error, worker_id=self.worker_id,
                                          lease_token=task.lease_token)
                    self.stats.failed += 1
                except TaskError as lease_exc:
                    self.stats.lost += 1
                    log.warning("%s: failure of %s not recorded: %s", self.worker_id,
                                task.task_id, lease_exc)
                return
            done.set()
            beat.join(timeout=10)
            try:
                coordinator.complete_task(task.task_id, result, worker_id=self.worker_id,
                                          lease_token=task.lease_token)
                self.stats.completed += 1
            except (LeaseLostError, TaskError) as exc:
                self.stats.lost += 1
                log.warning("%s: result of %s refused: %s", self.worker_id, task.task_id, exc)
            except ValueError as exc:  # a result that cannot be stored fails the attempt
                coordinator.fail_task(task.task_id, f"result not storable: {exc}",
                                      worker_id=self.worker_id, lease_token=task.lease_token)
                self.stats.failed += 1
        finally:
            done.set()
            self.current = None

    def _release(self, task: Task) -> None:
        try:
            self.coordinator.release_task(task.task_id, worker_id=self.worker_id,
                                          lease_token=task.lease_token)
            self.stats.released += 1
        except TaskError as exc:
            log.warning("%s: could not release %s: %s", self.worker_id, task.task_id, exc)

    def _heartbeat(self, task: Task, done: threading.Event, lost: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval):
            try:
                self.coordinator.heartbeat(task.task_id, self.worker_id,
                                           lease_token=task.lease_token)
            except TaskError as exc:
                lost.set()
                log.warning("%s: lost the lease of %s: %s", self.worker_id, task.task_id, exc)
                return
            except Exception as exc:  # a store hiccup: keep trying until the lease runs out
                log.warning("%s: heartbeat of %s failed: %s", self.worker_id, task.task_id, exc)


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
