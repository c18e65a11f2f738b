"""Prometheus metrics of the task queue (``prometheus-client``).

- ``rubix_workflow_tasks{task_type, state}``: tasks in each state (``pending``, ``running``,
  ``retry_wait``, ``completed``, ``dead``, ``cancelled``) by type, read from the store when
  scraped: the whole queue, whichever process runs the tasks;
- ``rubix_workflow_claim_latency_seconds{task_type}``: from submission to first claim (a task
  submitted for later counts its delay too), for the tasks the workers of this process claimed;
- ``rubix_workflow_task_duration_seconds{task_type}``: how long handlers ran here.

:func:`render` gives the text exposition; :func:`serve` starts an HTTP endpoint on
``127.0.0.1`` (``tasks worker --metrics-port``); ``tasks metrics`` prints the text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rubix_integration.codecs.clock import now_us

if TYPE_CHECKING:
    from rubix_integration.workflow.coordinator import WorkflowCoordinator
    from rubix_integration.workflow.task import Task

__all__ = ["observe_claims", "observe_run", "registry", "render", "serve"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0)
_lock = threading.Lock()
_process: Any = None  # (registry, claim latency, duration), made on first use


def _histograms() -> Any:
    global _process
    with _lock:
        if _process is None:
            from prometheus_client import CollectorRegistry, Histogram

            reg = CollectorRegistry(auto_describe=True)
            latency = Histogram("rubix_workflow_claim_latency_seconds",
                                "From submission to first claim.",
                                ["task_type"], buckets=_BUCKETS, registry=reg)
            duration = Histogram("rubix_workflow_task_duration_seconds",
                                 "How long handlers ran.", ["task_type"], buckets=_BUCKETS,
                                 registry=reg)
            _process = (reg, latency, duration)
        return _process


def observe_claims(tasks: Iterable[Task]) -> None:
    """Count the wait of each task claimed for the first time."""
    _, latency, _ = _histograms()
    now = now_us()
    for task in tasks:
        if task.attempts == 1:
            latency.labels(task.task_type).observe(max(0, now - task.created_at_us) / 1e6)


def observe_run(task: Task, seconds: float) -> None:
    """Count one handler run of ``seconds``."""
    _, _, duration = _histograms()
    duration.labels(task.task_type).observe(max(0.0, seconds))


class _QueueCollector:
    """The queue's counts by type and state, read from the store at each scrape."""

    def __init__(self, coordinator: WorkflowCoordinator) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from rubix_integration.workflow.states import STATES

        family = GaugeMetricFamily("rubix_workflow_tasks", "Tasks by type and state.",
                                   labels=["task_type", "state"])
        counts = self._coordinator.counts_by_type()
        for task_type in sorted({t for t, _ in counts}):
            for state in STATES:
                family.add_metric([task_type, state], counts.get((task_type, state), 0))
        yield family

    def describe(self) -> Sequence[Any]:
        return []


def registry(coordinator: WorkflowCoordinator) -> Any:
    """A ``CollectorRegistry`` with the queue's counts and this process's histograms."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_QueueCollector(coordinator))
    process_registry = _histograms()[0]
    reg.register(_Forward(process_registry))
    return reg


class _Forward:
    """Another registry's metrics, collected as one's own."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from self._source.collect()

    def describe(self) -> Sequence[Any]:
        return []


def render(coordinator: WorkflowCoordinator) -> bytes:
    """The metrics in Prometheus' text format."""
    from prometheus_client import generate_latest

    data: bytes = generate_latest(registry(coordinator))
    return data


def serve(coordinator: WorkflowCoordinator, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve the metrics over HTTP on ``addr:port`` in a daemon thread; return the server
    (``server.shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry(coordinator))
    return server
