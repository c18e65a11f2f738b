"""What a plugin may ask the host for: the :class:`Host` protocol the hooks are typed against.

The :class:`~rubix_integration.Manager` is the host every hook receives (as ``manager``), but
plugins and capabilities see it only through this protocol, so that nothing below the Manager
imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rubix_integration._plugin_settings import PluginSettings
    from rubix_integration._settings import Settings
    from rubix_integration.errors import PluginError
    from rubix_integration.ipfs.base import IPFSBackend
    from rubix_integration.provenance import ProvenanceLogger
    from rubix_integration.stores.base import Store

__all__ = ["Host"]


class Host(Protocol):
    """The services the host hands to a plugin.

    - ``settings``: the resolved, immutable :class:`~rubix_integration.Settings`.
    - ``store``: the store, opened with its schema (and the plugins' tables) created.
    - ``ipfs(ipfs_path=None, *, backend=None)``: the IPFS backend serving a repo path.
    - ``plugin_settings(name)``: plugin ``name``'s checked ``[plugins.<name>]`` settings.
    - ``backends(role)`` / ``backend(role, name=None)``: the classes registered for a role
      (``ipfs``, ``store``, ``pin_state``, ``source`` or one a plugin declares).
    - ``provenance``: the host's provenance log (record events, query them).
    - ``notify(hook_name, **kwargs)``: fire an event hook on every plugin.
    """

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def provenance(self) -> ProvenanceLogger: ...

    def ipfs(self, ipfs_path: Path | str | None = None, *,
             backend: str | None = None) -> IPFSBackend: ...

    def plugin_settings(self, name: str) -> PluginSettings: ...

    def backends(self, role: str) -> Mapping[str, type[Any]]: ...

    def backend(self, role: str, name: str | None = None) -> type[Any]: ...

    def notify(self, hook_name: str, **kwargs: Any) -> list[PluginError]: ...
