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
    "AsyncManager": "rubix_integration.aio",
    "BatchingState": "rubix_integration.pins",
    "ChangeRejectedError": "rubix_integration.errors",
    "ClockDriftError": "rubix_integration.errors",
    "ComponentStatus": "rubix_integration._status",
    "ConfigError": "rubix_integration.errors",
    "ContentCID": "rubix_integration.datasets",
    "ContentNotFoundError": "rubix_integration.errors",
    "ContentTooLargeError": "rubix_integration.errors",
    "CorruptBlockError": "rubix_integration.errors",
    "DAGTooDeepError": "rubix_integration.errors",
    "DatabaseResult": "rubix_integration.tokens.results",
    "DatasetsAvailability": "rubix_integration.datasets",
    "DatasetsManager": "rubix_integration.datasets",
    "DatasetsStatus": "rubix_integration.datasets",
    "DirEntry": "rubix_integration.ipfs.base",
    "DirectoryCID": "rubix_integration.datasets",
    "DuplicateBackendError": "rubix_integration.errors",
    "FilesystemHandler": "rubix_integration.datasets",
    "IPFSBackend": "rubix_integration.ipfs.base",
    "IPFSChoice": "rubix_integration._manager",
    "IPFSContext": "rubix_integration.ipfs.base",
    "IPFSDetection": "rubix_integration.ipfs.base",
    "IPFSError": "rubix_integration.errors",
    "IPFSTimeoutError": "rubix_integration.errors",
    "IPFSUnavailableError": "rubix_integration.errors",
    "ImportFailedError": "rubix_integration.errors",
    "ImportReport": "rubix_integration.importer",
    "ImportSchemaError": "rubix_integration.errors",
    "ImportSourceError": "rubix_integration.errors",
    "InvalidCIDError": "rubix_integration.errors",
    "InvalidDataError": "rubix_integration.errors",
    "InvalidFilterError": "rubix_integration.errors",
    "InvalidPinError": "rubix_integration.errors",
    "LeaseLostError": "rubix_integration.errors",
    "LoggedCID": "rubix_integration.datasets",
    "Manager": "rubix_integration._manager",
    "NodeDatabaseError": "rubix_integration.errors",
    "NotAFileError": "rubix_integration.errors",
    "PayloadTooLargeError": "rubix_integration.errors",
    "PeerUnavailableError": "rubix_integration.errors",
    "Pin": "rubix_integration.pins",
    "PinNotFoundError": "rubix_integration.errors",
    "PinState": "rubix_integration.pins",
    "PinStateBackend": "rubix_integration.pins",
    "PinStateError": "rubix_integration.errors",
    "PinStateUnavailableError": "rubix_integration.errors",
    "PluginError": "rubix_integration.errors",
    "PluginInfo": "rubix_integration._plugins",
    "Plugins": "rubix_integration._plugins",
    "ProvenanceLogger": "rubix_integration.provenance",
    "RecordNotFoundError": "rubix_integration.errors",
    "Replication": "rubix_integration.replication",
    "ReplicationAuthError": "rubix_integration.errors",
    "ReplicationError": "rubix_integration.errors",
    "ResyncRequiredError": "rubix_integration.errors",
    "RubixError": "rubix_integration.errors",
    "Settings": "rubix_integration._settings",
    "Status": "rubix_integration._status",
    "Store": "rubix_integration.stores.base",
    "Source": "rubix_integration.importer",
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
    "WorkflowCoordinator": "rubix_integration.datasets",
    "connect": "rubix_integration._manager",
    "get_datasets_status": "rubix_integration.datasets",
    "hookimpl": "rubix_integration.hookspecs",
    "is_datasets_available": "rubix_integration.datasets",
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
    from rubix_integration.aio import AsyncManager as AsyncManager
    from rubix_integration.datasets import ContentCID as ContentCID
    from rubix_integration.datasets import DatasetsAvailability as DatasetsAvailability
    from rubix_integration.datasets import DatasetsManager as DatasetsManager
    from rubix_integration.datasets import DatasetsStatus as DatasetsStatus
    from rubix_integration.datasets import DirectoryCID as DirectoryCID
    from rubix_integration.datasets import FilesystemHandler as FilesystemHandler
    from rubix_integration.datasets import LoggedCID as LoggedCID
    from rubix_integration.datasets import WorkflowCoordinator as WorkflowCoordinator
    from rubix_integration.datasets import get_datasets_status as get_datasets_status
    from rubix_integration.datasets import is_datasets_available as is_datasets_available
    from rubix_integration.errors import ChangeRejectedError as ChangeRejectedError
    from rubix_integration.errors import ClockDriftError as ClockDriftError
    from rubix_integration.errors import ConfigError as ConfigError
    from rubix_integration.errors import ContentNotFoundError as ContentNotFoundError
    from rubix_integration.errors import ContentTooLargeError as ContentTooLargeError
    from rubix_integration.errors import CorruptBlockError as CorruptBlockError
    from rubix_integration.errors import DAGTooDeepError as DAGTooDeepError
    from rubix_integration.errors import DuplicateBackendError as DuplicateBackendError
    from rubix_integration.errors import ImportFailedError as ImportFailedError
    from rubix_integration.errors import ImportSchemaError as ImportSchemaError
    from rubix_integration.errors import ImportSourceError as ImportSourceError
    from rubix_integration.errors import InvalidCIDError as InvalidCIDError
    from rubix_integration.errors import InvalidDataError as InvalidDataError
    from rubix_integration.errors import InvalidFilterError as InvalidFilterError
    from rubix_integration.errors import InvalidPinError as InvalidPinError
    from rubix_integration.errors import IPFSError as IPFSError
    from rubix_integration.errors import IPFSTimeoutError as IPFSTimeoutError
    from rubix_integration.errors import IPFSUnavailableError as IPFSUnavailableError
    from rubix_integration.errors import LeaseLostError as LeaseLostError
    from rubix_integration.errors import NodeDatabaseError as NodeDatabaseError
    from rubix_integration.errors import NotAFileError as NotAFileError
    from rubix_integration.errors import PayloadTooLargeError as PayloadTooLargeError
    from rubix_integration.errors import PeerUnavailableError as PeerUnavailableError
    from rubix_integration.errors import PinNotFoundError as PinNotFoundError
    from rubix_integration.errors import PinStateError as PinStateError
    from rubix_integration.errors import (
        PinStateUnavailableError as PinStateUnavailableError,
    )
    from rubix_integration.errors import PluginError as PluginError
    from rubix_integration.errors import RecordNotFoundError as RecordNotFoundError
    from rubix_integration.errors import ReplicationAuthError as ReplicationAuthError
    from rubix_integration.errors import ReplicationError as ReplicationError
    from rubix_integration.errors import ResyncRequiredError as ResyncRequiredError
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
    from rubix_integration.importer import ImportReport as ImportReport
    from rubix_integration.importer import Source as Source
    from rubix_integration.ipfs.base import AddedEntry as AddedEntry
    from rubix_integration.ipfs.base import AddResult as AddResult
    from rubix_integration.ipfs.base import DirEntry as DirEntry
    from rubix_integration.ipfs.base import IPFSBackend as IPFSBackend
    from rubix_integration.ipfs.base import IPFSContext as IPFSContext
    from rubix_integration.ipfs.base import IPFSDetection as IPFSDetection
    from rubix_integration.pins import BatchingState as BatchingState
    from rubix_integration.pins import Pin as Pin
    from rubix_integration.pins import PinState as PinState
    from rubix_integration.pins import PinStateBackend as PinStateBackend
    from rubix_integration.provenance import ProvenanceLogger as ProvenanceLogger
    from rubix_integration.replication import Replication as Replication
    from rubix_integration.stores.analytics import Analytics as Analytics
    from rubix_integration.stores.base import Store as Store
    from rubix_integration.tokens.results import DatabaseResult as DatabaseResult
    from rubix_integration.tokens.results import SyncObserver as SyncObserver
    from rubix_integration.tokens.results import SyncSummary as SyncSummary
    from rubix_integration.workflow import Task as Task
    from rubix_integration.workflow import Worker as Worker

__all__ = sorted([*_PUBLIC, "__version__"])


__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
