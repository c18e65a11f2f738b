"""Workflow coordination: a leased task queue in the store, shared by workers on many machines.

Use it through the Manager (``manager.submit_task(...)``, ``manager.workflow``) or build a
:class:`WorkflowCoordinator` on a Manager. :mod:`~rubix_integration.workflow.coordinator`
describes states, leases, fencing and retries; :mod:`~rubix_integration.workflow.matching` how
tags and capabilities match; :class:`Worker` runs handlers. Names are imported on first use:
importing the task table's model runs no other module of this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

_PUBLIC: dict[str, str] = {
    "LeaseLostError": "rubix_integration.errors",
    "MAX_BATCH": "rubix_integration.workflow.coordinator",
    "MAX_PAYLOAD_BYTES": "rubix_integration.workflow.coordinator",
    "STATES": "rubix_integration.workflow.coordinator",
    "Schedule": "rubix_integration.workflow.schedules",
    "Task": "rubix_integration.workflow.coordinator",
    "TaskConflictError": "rubix_integration.errors",
    "TaskError": "rubix_integration.errors",
    "TaskNotFoundError": "rubix_integration.errors",
    "TaskStateError": "rubix_integration.errors",
    "Worker": "rubix_integration.workflow.worker",
    "WorkerStats": "rubix_integration.workflow.worker",
    "WorkflowCoordinator": "rubix_integration.workflow.coordinator",
    "cancellation": "rubix_integration.workflow.worker",
    "cancelled": "rubix_integration.workflow.worker",
    "load_handler": "rubix_integration.workflow.worker",
}

if TYPE_CHECKING:
    from rubix_integration.errors import LeaseLostError as LeaseLostError
    from rubix_integration.errors import TaskConflictError as TaskConflictError
    from rubix_integration.errors import TaskError as TaskError
    from rubix_integration.errors import TaskNotFoundError as TaskNotFoundError
    from rubix_integration.errors import TaskStateError as TaskStateError
    from rubix_integration.workflow.coordinator import MAX_BATCH as MAX_BATCH
    from rubix_integration.workflow.coordinator import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
    from rubix_integration.workflow.coordinator import STATES as STATES
    from rubix_integration.workflow.coordinator import Task as Task
    from rubix_integration.workflow.coordinator import WorkflowCoordinator as WorkflowCoordinator
    from rubix_integration.workflow.schedules import Schedule as Schedule
    from rubix_integration.workflow.worker import Worker as Worker
    from rubix_integration.workflow.worker import WorkerStats as WorkerStats
    from rubix_integration.workflow.worker import cancellation as cancellation
    from rubix_integration.workflow.worker import cancelled as cancelled
    from rubix_integration.workflow.worker import load_handler as load_handler

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
