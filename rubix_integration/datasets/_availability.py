"""Whether the datasets layer reaches an IPFS node: :func:`is_datasets_available`,
:func:`get_datasets_status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rubix_integration.datasets._config import manager_from_config
from rubix_integration.datasets.results import DatasetsAvailability

if TYPE_CHECKING:
    from rubix_integration._manager import Manager

__all__ = ["availability", "get_datasets_status", "is_datasets_available"]


def _where(manager: Manager, name: str) -> str | None:
    if name == "local":
        from rubix_integration.datasets._local import local_backend
        from rubix_integration.ipfs.local import store_root

        return str(store_root(local_backend(manager).context))
    address = getattr(manager.ipfs(), "address", None)
    url = getattr(address, "url", None)
    if url:
        return str(url)
    path = manager.choose_ipfs().ipfs_path
    return str(path) if path is not None else None


def availability(manager: Manager) -> DatasetsAvailability:
    """What :func:`get_datasets_status` reports, for an existing Manager."""
    from rubix_integration._status import enabled_by

    settings = manager.settings
    choice = manager.choose_ipfs()
    try:
        path = _where(manager, choice.name)
    except Exception as exc:  # a status report never fails on a backend that cannot be built
        path = None
        reason = f"{choice.reason}; cannot be opened: {exc}"
    else:
        reason = choice.reason
    by = enabled_by(settings.sources)
    if by != "RUBIX_INTEGRATION_ENABLED":  # say which variable turned it off
        reason = reason.replace("RUBIX_INTEGRATION_ENABLED", by)
    return DatasetsAvailability(
        available=settings.ipfs_enabled and manager.is_ipfs_available(),
        path=path, reason=reason, enabled=settings.enabled, enabled_by=by,
        backend=choice.backend_name)


def get_datasets_status(config: Mapping[str, Any] | None = None) -> DatasetsAvailability:
    """Whether an IPFS node is reachable, where content goes, and why (``available``,
    ``path``, ``reason``, readable as attributes or keys). ``config`` as for
    :class:`~rubix_integration.DatasetsManager`; by default the environment and config file."""
    with manager_from_config(config) as manager:
        return availability(manager)


def is_datasets_available(config: Mapping[str, Any] | None = None) -> bool:
    """Whether records and content reach an IPFS node now (the integration is not turned off
    by ``RUBIX_INTEGRATION_ENABLED=0`` / ``IPFS_DATASETS_ENABLED=0`` and a node answers).

    Everything works either way; without a node it is kept locally and pushed later."""
    return get_datasets_status(config).available
