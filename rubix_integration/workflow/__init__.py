"""Workflow coordination: a leased task queue in the store, shared by workers on many machines.

Use it through the Manager (``manager.submit_task(...)``, ``manager.workflow``) or build a
:class:`WorkflowCoordinator` on a Manager. :mod:`~rubix_integration.workflow.coordinator`
describes states, leases, fencing and retries; :mod:`~rubix_integration.workflow.matching` how
tags and capabilities match; :class:`Worker` runs handlers.
"""

from __future__ import annotations

from rubix_integration.errors import (
    LeaseLostError,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
    TaskStateError,
)
from rubix_integration.workflow.coordinator import (
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    STATES,
    Task,
    WorkflowCoordinator,
)
from rubix_integration.workflow.schedules import Schedule
from rubix_integration.workflow.worker import (
    Worker,
    WorkerStats,
    cancellation,
    cancelled,
    load_handler,
)

__all__ = [
    "MAX_BATCH",
    "MAX_PAYLOAD_BYTES",
    "STATES",
    "LeaseLostError",
    "Schedule",
    "Task",
    "TaskConflictError",
    "TaskError",
    "TaskNotFoundError",
    "TaskStateError",
    "Worker",
    "WorkerStats",
    "WorkflowCoordinator",
    "cancellation",
    "cancelled",
    "load_handler",
]
