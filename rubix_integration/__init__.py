"""Gather what many Rubix nodes hold, resolve token content through IPFS, keep it in one store.

Start with :class:`Manager` (or :func:`connect`); :func:`status` reports what was detected.
Importing the package is cheap: the Manager, the stores and the IPFS backends are imported on
first use.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any

from rubix_integration._settings import Settings, resolve_settings
from rubix_integration.errors import (
    ConfigError,
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    DAGTooDeepError,
    DuplicateBackendError,
    InvalidCIDError,
    InvalidDataError,
    InvalidFilterError,
    IPFSError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    LeaseLostError,
    NodeDatabaseError,
    NotAFileError,
    PayloadTooLargeError,
    PluginError,
    RecordNotFoundError,
    RubixError,
    StoreError,
    StoreMissingDependency,
    StoreUnavailableError,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
    TaskStateError,
    UnknownStoreError,
    UnsafePathError,
    UnsupportedOperationError,
)
from rubix_integration.hookspecs import hookimpl

if TYPE_CHECKING:
    from rubix_integration._manager import IPFSChoice, Manager, connect, status
    from rubix_integration._plugins import PluginInfo, Plugins
    from rubix_integration._status import ComponentStatus, Status
    from rubix_integration.ipfs.base import (
        AddedEntry,
        AddResult,
        DirEntry,
        IPFSBackend,
        IPFSContext,
        IPFSDetection,
    )
    from rubix_integration.provenance import ProvenanceLogger
    from rubix_integration.stores.analytics import Analytics
    from rubix_integration.stores.base import Store
    from rubix_integration.tokens.sync import DatabaseResult, SyncObserver, SyncSummary
    from rubix_integration.workflow import Task, Worker, WorkflowCoordinator

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "AddResult": "rubix_integration.ipfs.base",
    "AddedEntry": "rubix_integration.ipfs.base",
    "Analytics": "rubix_integration.stores.analytics",
    "ComponentStatus": "rubix_integration._status",
    "DatabaseResult": "rubix_integration.tokens.sync",
    "DirEntry": "rubix_integration.ipfs.base",
    "IPFSBackend": "rubix_integration.ipfs.base",
    "IPFSChoice": "rubix_integration._manager",
    "IPFSContext": "rubix_integration.ipfs.base",
    "IPFSDetection": "rubix_integration.ipfs.base",
    "Manager": "rubix_integration._manager",
    "PluginInfo": "rubix_integration._plugins",
    "Plugins": "rubix_integration._plugins",
    "ProvenanceLogger": "rubix_integration.provenance",
    "Status": "rubix_integration._status",
    "Store": "rubix_integration.stores.base",
    "SyncObserver": "rubix_integration.tokens.sync",
    "SyncSummary": "rubix_integration.tokens.sync",
    "Task": "rubix_integration.workflow",
    "Worker": "rubix_integration.workflow",
    "WorkflowCoordinator": "rubix_integration.workflow",
    "connect": "rubix_integration._manager",
    "status": "rubix_integration._manager",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rubix_integration' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith('_')})


__all__ = [
    "AddResult",
    "AddedEntry",
    "Analytics",
    "ComponentStatus",
    "ConfigError",
    "ContentNotFoundError",
    "ContentTooLargeError",
    "CorruptBlockError",
    "DAGTooDeepError",
    "DatabaseResult",
    "DirEntry",
    "DuplicateBackendError",
    "IPFSBackend",
    "IPFSChoice",
    "IPFSContext",
    "IPFSDetection",
    "IPFSError",
    "IPFSTimeoutError",
    "IPFSUnavailableError",
    "InvalidCIDError",
    "InvalidDataError",
    "InvalidFilterError",
    "LeaseLostError",
    "Manager",
    "NodeDatabaseError",
    "NotAFileError",
    "PayloadTooLargeError",
    "PluginError",
    "PluginInfo",
    "Plugins",
    "ProvenanceLogger",
    "RecordNotFoundError",
    "RubixError",
    "Settings",
    "Status",
    "Store",
    "StoreError",
    "StoreMissingDependency",
    "StoreUnavailableError",
    "SyncObserver",
    "SyncSummary",
    "Task",
    "TaskConflictError",
    "TaskError",
    "TaskNotFoundError",
    "TaskStateError",
    "UnknownStoreError",
    "UnsafePathError",
    "UnsupportedOperationError",
    "Worker",
    "WorkflowCoordinator",
    "__version__",
    "connect",
    "hookimpl",
    "resolve_settings",
    "status",
]
