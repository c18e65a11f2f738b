"""The plugin manager factory and the registry of backends built from the hooks.

Built-in backends are plugins listed in :data:`DEFAULT_PLUGINS` and registered through the same
hooks as installed ones, by dotted path: a backend's module is imported on first use of its role,
so building a :class:`Plugins` (as the command line does for ``--help``) imports no store or IPFS
library. Installed plugins come from the entry-point group ``rubix_integration``;
they are loaded lazily (when a :class:`Plugins` is first built, never at import of the package),
once per :class:`Plugins`, and can be skipped with ``load_plugins=()`` or
``RUBIX_LOAD_PLUGINS=""``.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from rubix_integration import hookspecs
from rubix_integration._plugin_settings import (
    PluginSetting,
    PluginSettings,
    PluginSettingsInput,
    normalise_spec,
    resolve_plugin_settings,
)
from rubix_integration._registry import _collect, _Registry, builtin_plugin, module_tables
from rubix_integration.errors import PluginError

if TYPE_CHECKING:
    import click
    import sqlalchemy as sa

    from rubix_integration._host import Host
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
    "rubix_integration.pins.sqlite",
    "rubix_integration.pins.postgresql",
    "rubix_integration.pins.plugin",
    "rubix_integration._builtin_tables",
    "rubix_integration.replication.plugin",
    "rubix_integration._defaults",
)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded (or failed) plugin, as ``rubix-integration plugins`` shows it.

    ``source`` is ``"built-in"``, ``"entry point"`` or ``"registered"`` (passed in by the host
    app); ``origin`` is the module or distribution it came from; ``error`` is set when it failed.
    ``roles`` are the backend roles it declares; ``backends`` the ``(role, name)`` of each backend
    it registers.
    """

    name: str
    source: str
    origin: str
    version: str | None
    hooks: tuple[str, ...]
    error: str | None = None
    roles: tuple[str, ...] = ()
    backends: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        by_role: dict[str, list[str]] = {}
        for role, name in self.backends:
            by_role.setdefault(role, []).append(name)
        return {
            "name": self.name,
            "source": self.source,
            "origin": self.origin,
            "version": self.version,
            "hooks": list(self.hooks),
            "roles": list(self.roles),
            "backends": by_role,
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
        self._built: _Registry | None = None
        self._specs: dict[str, dict[str, PluginSetting]] | None = None
        from rubix_integration import __version__

        for dotted in DEFAULT_PLUGINS:
            plugin = builtin_plugin(dotted)
            if plugin is None:
                try:
                    plugin = importlib.import_module(dotted)
                except ImportError as exc:
                    self._fail(dotted, "built-in", dotted, __version__,
                               f"failed to import: {type(exc).__name__}: {exc}")
                    continue
            self._register(plugin, dotted, "built-in", dotted, __version__)
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
        """Every plugin that was loaded or failed, built-ins first, with what it registered.

        Builds the backend registry: a duplicate backend name raises here too.
        """
        registry = self._registry()
        out: list[PluginInfo] = []
        for info in self._infos:
            roles, backends = registry.of_plugin(info.name)
            pairs = tuple((role, name) for role, names in backends.items() for name in names)
            error = info.error or registry.load_errors.get(info.name)
            out.append(replace(info, roles=roles, backends=pairs, error=error))
        return out

    def failures(self) -> list[PluginInfo]:
        """Every plugin that failed: to import, to register, or (built-ins) to import a backend
        of a role used so far."""
        late = self._built.load_errors if self._built is not None else {}
        return [replace(i, error=i.error or late[i.name]) for i in self._infos
                if i.error or i.name in late]

    def ipfs_backends(self) -> dict[str, type[IPFSBackend]]:
        """Registered IPFS backend classes by name, in order of preference (priority, then name)."""
        return self.backends("ipfs")

    def stores(self) -> dict[str, type[Store]]:
        """Registered store classes by name, in registration order."""
        return self.backends("store")

    def roles(self) -> dict[str, type]:
        """Every role (built-in and declared by plugins) and its base class."""
        return dict(self._registry().roles)

    def backends(self, role: str) -> dict[str, type[Any]]:
        """The classes registered for ``role``, by name.

        A role whose base class has a ``priority`` (``ipfs``) is ordered by (priority, name);
        any other in registration order (built-ins first). An unknown role raises
        :class:`PluginError` listing the known ones.
        """
        registry = self._registry()
        if role not in registry.role_bases:
            raise PluginError(f"no backend role {role!r}; known roles: "
                              f"{', '.join(registry.role_bases)}")
        return dict(registry.load(role))

    def backend_names(self, role: str) -> tuple[str, ...]:
        """The names registered for ``role``, without importing any of their classes."""
        return tuple(self._registry().entries.get(role, {}))

    def owner(self, role: str, name: str) -> str:
        """The plugin that registered backend ``name`` for ``role``, or ``"?"``."""
        return self._registry().owners.get((role, name), "?")

    def _registry(self) -> _Registry:
        if self._built is None:
            self._built = _collect(self.pm, {i.name: n for n, i in enumerate(self._infos)})
        return self._built

    def settings_specs(self) -> dict[str, dict[str, PluginSetting]]:
        """The settings each plugin declares (``plugin_settings_spec``), by plugin name."""
        if self._specs is None:
            specs: dict[str, dict[str, PluginSetting]] = {}
            for impl in self.pm.hook.plugin_settings_spec.get_hookimpls():
                raw: Any = impl.function() or {}
                specs[impl.plugin_name] = normalise_spec(impl.plugin_name, raw)
            self._specs = specs
        return self._specs

    def tables(self) -> list[sa.Table]:
        """Every table the plugins register (``register_tables``), importing named modules.

        Each must belong to ``SQLModel.metadata`` (the metadata the store creates).
        """
        import sqlalchemy as sa
        from sqlmodel import SQLModel

        out: list[sa.Table] = []
        for impl in self.pm.hook.register_tables.get_hookimpls():
            plugin = impl.plugin_name
            items: Any = impl.function() or ()
            for item in items:
                got = importlib.import_module(item) if isinstance(item, str) else item
                if isinstance(got, ModuleType):
                    tables = module_tables(got)
                elif isinstance(got, sa.Table):
                    tables = [got]
                else:
                    raise PluginError(f"plugin {plugin!r}: register_tables returned {item!r}, "
                                      "not a Table, a module or a module name", plugin=plugin)
                for table in tables:
                    if table.metadata is not SQLModel.metadata:
                        raise PluginError(
                            f"plugin {plugin!r}: table {table.name!r} is not in "
                            "SQLModel.metadata, which the store creates; define it with "
                            "SQLModel or sa.Table(..., SQLModel.metadata)", plugin=plugin)
                    if table not in out:
                        out.append(table)
        return out

    def register_commands(self, group: click.Group) -> None:
        """Let each plugin add its commands to ``group``; one that raises is logged by name."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(**{k: group for k in impl.argnames})
            except Exception as exc:
                log.warning("plugin %r failed in register_commands: %s: %s",
                            impl.plugin_name, type(exc).__name__, exc)

    def routes(self, host: Host) -> list[Any]:
        """Every HTTP route the plugins return from ``register_routes``, in plugin order."""
        found: list[Any] = []
        for impl in self.pm.hook.register_routes.get_hookimpls():
            routes: Any = impl.function(**{k: host for k in impl.argnames})
            found.extend(routes or ())
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


def check_plugin_settings(
    plugins: Plugins, inputs: PluginSettingsInput, warn: Callable[[str], None]
) -> dict[str, PluginSettings]:
    """Resolve every plugin's settings; a section no loaded plugin owns is warned about.

    A section named after a registered ``source`` backend (``[plugins.strapi]``) belongs to that
    source: the importer reads it when the source runs.
    """
    specs = plugins.settings_specs()
    sources = set(plugins.backend_names("source"))
    for name in sorted({*inputs.file, *inputs.keywords} - set(specs) - sources):
        if plugins.pm.has_plugin(name):  # loaded, declares nothing: every key is unknown
            resolve_plugin_settings(name, {}, inputs)
        else:
            warn(f"[plugins.{name}]: no loaded plugin is named {name!r}; its settings are unused")
    return {name: resolve_plugin_settings(name, spec, inputs) for name, spec in specs.items()}


def _origin(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and hasattr(obj, "__name__"):
        return str(obj.__name__)
    return str(module or type(obj).__module__)
