"""Gather what many Rubix nodes hold, resolve token content through IPFS, keep it in one store.

Start with :class:`Manager` (or :func:`connect`); :func:`status` reports what was detected.
Importing the package is cheap: every public name is imported from its module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

__version__ = "0.1.0"

#: Every public name and the module that defines it: ``__all__``, attribute access and
#: ``dir()`` derive from it (the imports below only tell type checkers the same).
_PUBLIC: dict[str, str] = {
    "AddResult": "rubix_integration.ipfs.base",
    "AddedEntry": "rubix_integration.ipfs.base",
    "Analytics": "rubix_integration.stores.analytics",
    "ComponentStatus": "rubix_integration._status",
    "ConfigError": "rubix_integration.errors",
    "ContentNotFoundError": "rubix_integration.errors",
    "ContentTooLargeError": "rubix_integration.errors",
    "CorruptBlockError": "rubix_integration.errors",
    "DAGTooDeepError": "rubix_integration.errors",
    "DatabaseResult": "rubix_integration.tokens.results",
    "DirEntry": "rubix_integration.ipfs.base",
    "DuplicateBackendError": "rubix_integration.errors",
    "IPFSBackend": "rubix_integration.ipfs.base",
    "IPFSChoice": "rubix_integration._manager",
    "IPFSContext": "rubix_integration.ipfs.base",
    "IPFSDetection": "rubix_integration.ipfs.base",
    "IPFSError": "rubix_integration.errors",
    "IPFSTimeoutError": "rubix_integration.errors",
    "IPFSUnavailableError": "rubix_integration.errors",
    "InvalidCIDError": "rubix_integration.errors",
    "InvalidDataError": "rubix_integration.errors",
    "InvalidFilterError": "rubix_integration.errors",
    "LeaseLostError": "rubix_integration.errors",
    "Manager": "rubix_integration._manager",
    "NodeDatabaseError": "rubix_integration.errors",
    "NotAFileError": "rubix_integration.errors",
    "PayloadTooLargeError": "rubix_integration.errors",
    "PluginError": "rubix_integration.errors",
    "PluginInfo": "rubix_integration._plugins",
    "Plugins": "rubix_integration._plugins",
    "ProvenanceLogger": "rubix_integration.provenance",
    "RecordNotFoundError": "rubix_integration.errors",
    "RubixError": "rubix_integration.errors",
    "Settings": "rubix_integration._settings",
    "Status": "rubix_integration._status",
    "Store": "rubix_integration.stores.base",
    "StoreError": "rubix_integration.errors",
    "StoreMissingDependency": "rubix_integration.errors",
    "StoreUnavailableError": "rubix_integration.errors",
    "SyncObserver": "rubix_integration.tokens.results",
    "SyncSummary": "rubix_integration.tokens.results",
    "Task": "rubix_integration.workflow",
    "TaskConflictError": "rubix_integration.errors",
    "TaskError": "rubix_integration.errors",
    "TaskNotFoundError": "rubix_integration.errors",
    "TaskStateError": "rubix_integration.errors",
    "UnknownStoreError": "rubix_integration.errors",
    "UnsafePathError": "rubix_integration.errors",
    "UnsupportedOperationError": "rubix_integration.errors",
    "Worker": "rubix_integration.workflow",
    "WorkflowCoordinator": "rubix_integration.workflow",
    "connect": "rubix_integration._manager",
    "hookimpl": "rubix_integration.hookspecs",
    "resolve_settings": "rubix_integration._settings",
    "status": "rubix_integration._manager",
}

if TYPE_CHECKING:
    from rubix_integration._manager import IPFSChoice as IPFSChoice
    from rubix_integration._manager import Manager as Manager
    from rubix_integration._manager import connect as connect
    from rubix_integration._manager import status as status
    from rubix_integration._plugins import PluginInfo as PluginInfo
    from rubix_integration._plugins import Plugins as Plugins
    from rubix_integration._settings import Settings as Settings
    from rubix_integration._settings import resolve_settings as resolve_settings
    from rubix_integration._status import ComponentStatus as ComponentStatus
    from rubix_integration._status import Status as Status
    from rubix_integration.errors import ConfigError as ConfigError
    from rubix_integration.errors import ContentNotFoundError as ContentNotFoundError
    from rubix_integration.errors import ContentTooLargeError as ContentTooLargeError
    from rubix_integration.errors import CorruptBlockError as CorruptBlockError
    from rubix_integration.errors import DAGTooDeepError as DAGTooDeepError
    from rubix_integration.errors import DuplicateBackendError as DuplicateBackendError
    from rubix_integration.errors import InvalidCIDError as InvalidCIDError
    from rubix_integration.errors import InvalidDataError as InvalidDataError
    from rubix_integration.errors import InvalidFilterError as InvalidFilterError
    from rubix_integration.errors import IPFSError as IPFSError
    from rubix_integration.errors import IPFSTimeoutError as IPFSTimeoutError
    from rubix_integration.errors import IPFSUnavailableError as IPFSUnavailableError
    from rubix_integration.errors import LeaseLostError as LeaseLostError
    from rubix_integration.errors import NodeDatabaseError as NodeDatabaseError
    from rubix_integration.errors import NotAFileError as NotAFileError
    from rubix_integration.errors import PayloadTooLargeError as PayloadTooLargeError
    from rubix_integration.errors import PluginError as PluginError
    from rubix_integration.errors import RecordNotFoundError as RecordNotFoundError
    from rubix_integration.errors import RubixError as RubixError
    from rubix_integration.errors import StoreError as StoreError
    from rubix_integration.errors import StoreMissingDependency as StoreMissingDependency
    from rubix_integration.errors import StoreUnavailableError as StoreUnavailableError
    from rubix_integration.errors import TaskConflictError as TaskConflictError
    from rubix_integration.errors import TaskError as TaskError
    from rubix_integration.errors import TaskNotFoundError as TaskNotFoundError
    from rubix_integration.errors import TaskStateError as TaskStateError
    from rubix_integration.errors import UnknownStoreError as UnknownStoreError
    from rubix_integration.errors import UnsafePathError as UnsafePathError
    from rubix_integration.errors import UnsupportedOperationError as UnsupportedOperationError
    from rubix_integration.hookspecs import hookimpl as hookimpl
    from rubix_integration.ipfs.base import AddedEntry as AddedEntry
    from rubix_integration.ipfs.base import AddResult as AddResult
    from rubix_integration.ipfs.base import DirEntry as DirEntry
    from rubix_integration.ipfs.base import IPFSBackend as IPFSBackend
    from rubix_integration.ipfs.base import IPFSContext as IPFSContext
    from rubix_integration.ipfs.base import IPFSDetection as IPFSDetection
    from rubix_integration.provenance import ProvenanceLogger as ProvenanceLogger
    from rubix_integration.stores.analytics import Analytics as Analytics
    from rubix_integration.stores.base import Store as Store
    from rubix_integration.tokens.results import DatabaseResult as DatabaseResult
    from rubix_integration.tokens.results import SyncObserver as SyncObserver
    from rubix_integration.tokens.results import SyncSummary as SyncSummary
    from rubix_integration.workflow import Task as Task
    from rubix_integration.workflow import Worker as Worker
    from rubix_integration.workflow import WorkflowCoordinator as WorkflowCoordinator

__all__ = sorted([*_PUBLIC, "__version__"])


__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
