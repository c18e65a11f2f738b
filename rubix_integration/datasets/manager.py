"""The datasets API's ``DatasetsManager``: events and provenance, local first, on one Manager."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rubix_integration.datasets._availability import availability
from rubix_integration.datasets._config import DatasetsConfig, split_config
from rubix_integration.datasets._local import daemon_backend, queue_for
from rubix_integration.datasets.results import DatasetsStatus, LoggedCID
from rubix_integration.errors import IPFSError

if TYPE_CHECKING:
    from rubix_integration._manager import Manager
    from rubix_integration.datasets.filesystem import FilesystemHandler
    from rubix_integration.datasets.workflow import WorkflowCoordinator
    from rubix_integration.provenance import ProvenanceLogger

__all__ = ["DatasetsManager", "publish_records"]


def publish_records(manager: Manager) -> bool:
    """Push every provenance record no IPFS node holds yet to the node, if there is one;
    whether that went through (``False`` without a node, or when it is down: they stay local
    and go on the next try)."""
    try:
        node = daemon_backend(manager)
        if node is None:
            return False
        manager.provenance.publish(node)
    except IPFSError:
        return False
    return True


class DatasetsManager:
    """Events, provenance, status: the datasets API's manager, on a
    :class:`~rubix_integration.Manager`.

    ``config`` takes ``cache_dir`` (the data dir), ``enable_audit``, ``enable_provenance``,
    ``enable_p2p`` (see :class:`~rubix_integration.datasets.DatasetsConfig`) and any setting
    of :func:`~rubix_integration.resolve_settings` (``store_url``, ``ipfs_api``, ``enabled``,
    ...). ``manager`` wraps an existing Manager instead (it is then not closed by
    :meth:`close`). ``env`` replaces ``os.environ`` for the settings.

    Return convention: every record is written to the store first, so :meth:`log_event` and
    :meth:`track_provenance` return the record's CID (a :class:`LoggedCID`) whether or not an
    IPFS node is reachable; ``cid.published`` (and the CID's truth value, as the datasets
    API's ``if manager.log_event(...)`` reads it) tells whether it reached one. Records that did not
    are pushed on the next call that finds a node. ``None`` means not recorded: the switch
    (``enable_audit`` / ``enable_provenance``) is off.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 manager: Manager | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.config: DatasetsConfig = split_config(config)
        if manager is not None:
            if self.config.settings:
                raise ValueError("package settings go to the Manager given, not to config: "
                                 f"{', '.join(sorted(self.config.settings))}")
            self.manager = manager
            self._owned = False
        else:
            from rubix_integration._manager import Manager

            self.manager = Manager(env=env, **self.config.settings)
            _ = self.manager.settings  # an unknown key fails here
            self._owned = True

    # --- the datasets API's operations ---------------------------------------------------------

    def log_event(self, event_type: str, data: Any = None) -> LoggedCID | None:
        """Record an event of ``event_type``; return its CID (see the class doc), or ``None``
        when ``enable_audit`` is off."""
        if not self.config.enable_audit:
            return None
        return self._logged(self.manager.log_event(event_type, {} if data is None else data))

    def track_provenance(self, operation: str, data: Mapping[str, Any]) -> LoggedCID | None:
        """Record that ``operation`` happened (type ``operation``); return its CID, or ``None``
        when ``enable_provenance`` is off."""
        if not self.config.enable_provenance:
            return None
        return self._logged(self.manager.track_provenance(operation, data))

    def _logged(self, cid: str) -> LoggedCID:
        publish_records(self.manager)
        return LoggedCID(cid, published=self.manager.provenance.get(cid).published)

    def get_status(self) -> DatasetsStatus:
        """Whether records and content reach an IPFS node, the switches, and what is held
        locally only (readable as ``status.enabled`` or ``status["enabled"]``)."""
        found = availability(self.manager)
        logged = self.manager.provenance.status()
        return DatasetsStatus(
            enabled=found.available, available=found.available, path=found.path,
            reason=found.reason, setting=found.enabled, enabled_by=found.enabled_by,
            backend=found.backend, audit=self.config.enable_audit,
            provenance=self.config.enable_provenance, p2p=self.config.enable_p2p,
            cache_dir=str(self.manager.settings.data_dir), store=str(logged["store"]),
            records=int(logged["records"]), local_only=int(logged["local_only"]),
            pending_push=len(queue_for(self.manager).pending()))

    def publish(self) -> bool:
        """Push what is held locally only (records, then added content) to the IPFS node now;
        whether everything reached it."""
        from rubix_integration.datasets.filesystem import FilesystemHandler

        records = publish_records(self.manager)
        report = FilesystemHandler(manager=self.manager).push()
        return records and not report.remaining

    # --- the other components, on the same Manager ---------------------------------------------

    @cached_property
    def filesystem(self) -> FilesystemHandler:
        """A :class:`FilesystemHandler` on this manager."""
        from rubix_integration.datasets.filesystem import FilesystemHandler

        return FilesystemHandler(manager=self.manager)

    @cached_property
    def provenance(self) -> ProvenanceLogger:
        """The provenance log (``log_inference``, ``query_logs``, ...) of this manager."""
        return self.manager.provenance

    @cached_property
    def workflow(self) -> WorkflowCoordinator:
        """A :class:`WorkflowCoordinator` on this manager, with this config's ``enable_p2p``."""
        from rubix_integration.datasets.workflow import WorkflowCoordinator

        return WorkflowCoordinator(self)

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the Manager this object built (a given one is left open)."""
        if self._owned:
            self.manager.close()

    def __enter__(self) -> DatasetsManager:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DatasetsManager {self.manager!r}>"
