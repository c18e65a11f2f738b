"""The plugin manager factory and the registry of backends built from the hooks.

Built-in backends are plugins listed in :data:`DEFAULT_PLUGINS` and registered through the same
hooks as installed ones. Installed plugins come from the entry-point group ``rubix_integration``;
they are loaded lazily (when a :class:`Plugins` is first built, never at import of the package),
once per :class:`Plugins`, and can be skipped with ``load_plugins=()`` or
``RUBIX_LOAD_PLUGINS=""``.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from rubix_integration import hookspecs
from rubix_integration.errors import DuplicateBackendError, PluginError
from rubix_integration.ipfs.base import IPFSBackend
from rubix_integration.stores.base import Store

log = logging.getLogger("rubix_integration.plugins")

ENTRY_POINT_GROUP = "rubix_integration"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rubix_integration.ipfs.repo",
    "rubix_integration.ipfs.http",
    "rubix_integration.ipfs.cli",
    "rubix_integration.ipfs.local",
    "rubix_integration.stores.sqlite",
    "rubix_integration.stores.postgresql",
    "rubix_integration._defaults",
)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded (or failed) plugin, as ``rubix-integration plugins`` shows it.

    ``source`` is ``"built-in"``, ``"entry point"`` or ``"registered"`` (passed in by the host
    app); ``origin`` is the module or distribution it came from; ``error`` is set when it failed.
    """

    name: str
    source: str
    origin: str
    version: str | None
    hooks: tuple[str, ...]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "origin": self.origin,
            "version": self.version,
            "hooks": list(self.hooks),
            "error": self.error,
        }


class Plugins:
    """A pluggy plugin manager with the built-in, installed and host-given plugins loaded.

    ``load_plugins``: ``None`` loads every installed entry point, a sequence loads only the entry
    points (or distributions) with those names, an empty sequence loads none. ``extra`` are plugin
    objects (modules, classes, instances) registered after the built-ins, in order.
    """

    def __init__(
        self,
        *,
        load_plugins: Sequence[str] | None = None,
        extra: Iterable[object] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._infos: list[PluginInfo] = []
        self._ipfs: dict[str, type[IPFSBackend]] | None = None
        self._stores: dict[str, type[Store]] | None = None
        self._owners: dict[tuple[str, str], str] = {}
        from rubix_integration import __version__

        for dotted in DEFAULT_PLUGINS:
            try:
                module = importlib.import_module(dotted)
            except ImportError as exc:  # e.g. a backend whose optional dependency is missing
                self._fail(dotted, "built-in", dotted, __version__,
                           f"failed to import: {type(exc).__name__}: {exc}")
                continue
            self._register(module, dotted, "built-in", dotted, __version__)
        if load_plugins is None or load_plugins:
            self._load_entry_points(load_plugins)
        for obj in extra:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            self._register(obj, str(name), "registered", _origin(obj), None)

    # --- loading ---------------------------------------------------------------------------------

    def _register(
        self, plugin: object, name: str, source: str, origin: str, version: str | None
    ) -> None:
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._fail(name, source, origin, version, f"cannot be registered: {exc}")
            return
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
        self._infos.append(PluginInfo(name, source, origin, version, hooks))

    def _fail(self, name: str, source: str, origin: str, version: str | None, why: str) -> None:
        message = f"plugin {name!r} ({origin}) {why}"
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        self._infos.append(PluginInfo(name, source, origin, version, (), error=why))

    def _load_entry_points(self, only: Sequence[str] | None) -> None:
        wanted = set(only) if only else None
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if wanted is not None and ep.name not in wanted and dist not in wanted:
                continue
            origin = f"{dist or '?'}: {ep.value}"
            if self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(ep.name, "entry point", origin, version,
                           f"failed to import: {type(exc).__name__}: {exc}")
                continue
            self._register(plugin, ep.name, "entry point", origin, version)

    # --- what was loaded -------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def infos(self) -> list[PluginInfo]:
        """Every plugin that was loaded or failed, built-ins first."""
        return list(self._infos)

    def failures(self) -> list[PluginInfo]:
        return [i for i in self._infos if i.error]

    def ipfs_backends(self) -> dict[str, type[IPFSBackend]]:
        """Registered IPFS backend classes by name, in order of preference (priority, then name)."""
        if self._ipfs is None:
            found = self._collect("register_ipfs_backends", "ipfs", IPFSBackend)
            self._ipfs = dict(sorted(found.items(), key=lambda kv: (kv[1].priority, kv[0])))
        return self._ipfs

    def stores(self) -> dict[str, type[Store]]:
        """Registered store classes by name, in registration order."""
        if self._stores is None:
            self._stores = self._collect("register_stores", "store", Store)
        return self._stores

    def owner(self, role: str, name: str) -> str:
        """The plugin that registered backend ``name`` for ``role`` (``"ipfs"``, ``"store"``)."""
        if role == "ipfs":  # owners are recorded while the registrations are collected
            self.ipfs_backends()
        else:
            self.stores()
        return self._owners.get((role, name), "?")

    def _collect(self, hook_name: str, role: str, base: type[Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        caller = getattr(self.pm.hook, hook_name)
        # get_hookimpls() lists in registration order: built-ins first, so they own their names
        for impl in caller.get_hookimpls():
            try:
                classes = impl.function() or ()
            except Exception as exc:
                message = f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc}"
                log.warning(message)
                warnings.warn(message, RuntimeWarning, stacklevel=3)
                continue
            for cls in classes:
                name = getattr(cls, "name", "") if isinstance(cls, type) else ""
                if not (isinstance(cls, type) and issubclass(cls, base)) or not name:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {hook_name} returned {cls!r}, "
                        f"which is not a named subclass of {base.__name__}",
                        plugin=impl.plugin_name,
                    )
                if name in found and found[name] is not cls:
                    first = self._owners[(role, name)]
                    raise DuplicateBackendError(
                        f"{role} backend name {name!r} is registered twice: by plugin "
                        f"{first!r} and by plugin {impl.plugin_name!r}",
                        plugin=impl.plugin_name, name=name, role=role,
                    )
                found[name] = cls
                self._owners[(role, name)] = impl.plugin_name
        return found

    def notify(self, hook_name: str, **kwargs: Any) -> list[PluginError]:
        """Call an event hook on every plugin; report (never raise) each plugin that fails."""
        errors: list[PluginError] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                err = PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                                  f"{type(exc).__name__}: {exc}", plugin=impl.plugin_name)
                err.__cause__ = exc
                log.warning(str(err))
                errors.append(err)
        return errors


def _origin(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and hasattr(obj, "__name__"):
        return str(obj.__name__)
    return str(module or type(obj).__module__)
