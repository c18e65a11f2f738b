"""The datasets integration layer: ipfs_accelerate_py's datasets integration API, as thin
views over the one Manager.

``DatasetsManager`` (events, provenance, status), ``FilesystemHandler`` (UnixFS content, local
first), ``ProvenanceLogger`` and ``WorkflowCoordinator`` built from a config dict,
``is_datasets_available()`` and ``get_datasets_status()``, all importable from
``rubix_integration``. ``RUBIX_INTEGRATION_ENABLED`` (or its alias ``IPFS_DATASETS_ENABLED``)
``=0`` keeps everything on this machine; everything still works.
"""

from __future__ import annotations

from rubix_integration.datasets._availability import get_datasets_status, is_datasets_available
from rubix_integration.datasets._config import DatasetsConfig
from rubix_integration.datasets.filesystem import FilesystemHandler
from rubix_integration.datasets.manager import DatasetsManager
from rubix_integration.datasets.results import (
    ContentCID,
    DatasetsAvailability,
    DatasetsStatus,
    DirectoryCID,
    LoggedCID,
)
from rubix_integration.datasets.workflow import TaskView, WorkflowCoordinator
from rubix_integration.provenance import ProvenanceLogger

__all__ = [
    "ContentCID",
    "DatasetsAvailability",
    "DatasetsConfig",
    "DatasetsManager",
    "DatasetsStatus",
    "DirectoryCID",
    "FilesystemHandler",
    "LoggedCID",
    "ProvenanceLogger",
    "TaskView",
    "WorkflowCoordinator",
    "get_datasets_status",
    "is_datasets_available",
]
