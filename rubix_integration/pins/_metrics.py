"""Prometheus metrics of every pin state backend, in one registry of their own.

Names follow the ScyllaDB state store's (``…_operations_total``, ``…_operation_duration_seconds``,
``…_errors_total``, ``…_batch_size``, ``…_connections_active``) under the ``rubix_pin_state``
prefix, labelled by backend. :func:`exposition` renders them in Prometheus' text format.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["connections", "exposition", "record", "registry"]

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None


def _build() -> dict[str, Any]:
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

            reg = CollectorRegistry(auto_describe=True)
            _metrics = {
                "registry": reg,
                "ops": Counter("rubix_pin_state_operations", "Pin state operations by type",
                               ["backend", "operation"], registry=reg),
                "latency": Histogram(
                    "rubix_pin_state_operation_duration_seconds", "Pin state operation latency",
                    ["backend", "operation"], registry=reg,
                    buckets=(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                             .5, 1, 2.5, 5, 10)),
                "errors": Counter("rubix_pin_state_errors", "Pin state errors by kind",
                                  ["backend", "kind"], registry=reg),
                "batch": Histogram("rubix_pin_state_batch_size", "Writes per committed batch",
                                   ["backend"], registry=reg,
                                   buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000)),
                "connections": Gauge("rubix_pin_state_connections_active",
                                     "Open connections of pin state backends", ["backend"],
                                     registry=reg),
                "pins": Gauge("rubix_pin_state_pins", "Pins in the state when last counted",
                              ["backend"], registry=reg),
            }
    return _metrics


def registry() -> Any:
    """The ``prometheus_client.CollectorRegistry`` holding the pin state metrics."""
    return _build()["registry"]


def record(backend: str, operation: str, seconds: float, error: BaseException | None,
           batch: int) -> None:
    """Count one operation, its latency, its error (by ``kind``) and its batch size."""
    m = _metrics or _build()
    m["ops"].labels(backend, operation).inc()
    m["latency"].labels(backend, operation).observe(seconds)
    if error is not None:
        m["errors"].labels(backend, getattr(error, "kind", type(error).__name__)).inc()
    if batch:
        m["batch"].labels(backend).observe(batch)


def connections(backend: str, delta: int) -> None:
    """Move the active connection gauge of ``backend`` by ``delta``."""
    (_metrics or _build())["connections"].labels(backend).inc(delta)


def set_pin_count(backend: str, count: int) -> None:
    """Set the pin count gauge of ``backend``."""
    (_metrics or _build())["pins"].labels(backend).set(count)


def exposition() -> str:
    """The metrics in Prometheus' text exposition format."""
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry())).decode()
