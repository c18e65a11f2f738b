"""Errors of the workflow coordinator; they live in :mod:`rubix_integration.errors`.

Bad payloads raise :class:`~rubix_integration.errors.InvalidDataError` (or its
``PayloadTooLargeError``), as the provenance log does.
"""

from __future__ import annotations

from rubix_integration.errors import (
    LeaseLostError,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
    TaskStateError,
)

__all__ = [
    "LeaseLostError",
    "TaskConflictError",
    "TaskError",
    "TaskNotFoundError",
    "TaskStateError",
]
