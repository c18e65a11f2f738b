"""The registry of backends by role, collected once from every plugin's registration hooks.

Roles: the built-in ones (:data:`BUILTIN_ROLES`) and those plugins declare with
``register_roles``. Backends: ``register_backends`` (any role) and the per-role hooks
``register_ipfs_backends``, ``register_stores`` and ``register_sources``, all read in plugin
registration order (built-ins first, so they own their names).

The built-in backends are named by dotted path (:data:`BUILTIN_BACKENDS`) and imported on first
use of their role, so building the registry imports no store or IPFS library. Names and
duplicates are checked when the registry is built; each class against its role's base class when
the role is first used.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rubix_integration.errors import DuplicateBackendError, PluginError
from rubix_integration.hookspecs import hookimpl

if TYPE_CHECKING:
    import pluggy
    import sqlalchemy as sa

log = logging.getLogger("rubix_integration.plugins")

#: The roles every host knows; ``source`` accepts any named class for now.
BUILTIN_ROLES: tuple[str, ...] = ("ipfs", "store", "pin_state", "source")

#: The base class of each built-in role, by dotted path (imported when first needed).
_BUILTIN_BASES: dict[str, type | str] = {
    "ipfs": "rubix_integration.ipfs.base:IPFSBackend",
    "store": "rubix_integration.stores.base:Store",
    "pin_state": "rubix_integration.pins._state:PinStateBackend",
    "source": object,
}

#: The hooks that register backends for one fixed role.
ROLE_HOOKS: dict[str, str] = {
    "register_ipfs_backends": "ipfs",
    "register_stores": "store",
    "register_sources": "source",
}
BUILTIN = "built-in"


@dataclass(frozen=True)
class LazyBackend:
    """A backend named by ``module:Class``, imported on first use of its role.

    ``hint`` says what to install when the import fails.
    """

    name: str
    path: str
    hint: str = ""

    def load(self) -> type:
        """Import the class; an import failure becomes :class:`ImportError` with the hint."""
        module, _, attr = self.path.partition(":")
        try:
            found: object = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            hint = f"; {self.hint}" if self.hint else ""
            raise ImportError(f"{self.path} failed to import: {type(exc).__name__}: "
                              f"{exc}{hint}") from exc
        if not isinstance(found, type):
            raise PluginError(f"{self.path} is {found!r}, not a class")
        return found


_REINSTALL = "reinstall rubix-integration to restore its dependencies"

#: The built-in backends: plugin name (its module) -> role and backend.
BUILTIN_BACKENDS: dict[str, tuple[str, LazyBackend]] = {
    "rubix_integration.ipfs.repo": (
        "ipfs", LazyBackend("repo", "rubix_integration.ipfs.repo:RepoBackend", _REINSTALL)),
    "rubix_integration.ipfs.http": (
        "ipfs", LazyBackend("http", "rubix_integration.ipfs.http:HTTPBackend", _REINSTALL)),
    "rubix_integration.ipfs.cli": (
        "ipfs", LazyBackend("cli", "rubix_integration.ipfs.cli:CLIBackend", _REINSTALL)),
    "rubix_integration.ipfs.local": (
        "ipfs", LazyBackend("local", "rubix_integration.ipfs.local:LocalBackend", _REINSTALL)),
    "rubix_integration.stores.sqlite": (
        "store", LazyBackend("sqlite", "rubix_integration.stores.sqlite:SQLiteStore",
                             "pip install sqlmodel")),
    "rubix_integration.stores.postgresql": (
        "store", LazyBackend("postgresql", "rubix_integration.stores.postgresql:PostgreSQLStore",
                             "pip install sqlmodel 'psycopg[binary]'")),
    "rubix_integration.pins.sqlite": (
        "pin_state", LazyBackend("sqlite", "rubix_integration.pins._sql:SQLitePinState",
                                 _REINSTALL)),
    "rubix_integration.pins.postgresql": (
        "pin_state", LazyBackend("postgresql", "rubix_integration.pins._sql:PostgreSQLPinState",
                                 "pip install sqlmodel 'psycopg[binary]'")),
}


#: The built-in sources of the importer (registered by ``rubix_integration._builtin_tables``).
BUILTIN_SOURCES: tuple[LazyBackend, ...] = (
    LazyBackend("placeholder-transactions",
                "rubix_integration.importer.sources.placeholder:PlaceholderTransactions",
                _REINSTALL),
    LazyBackend("strapi", "rubix_integration.importer.sources.strapi:StrapiGpuClasses",
                _REINSTALL),
    LazyBackend("nominatim", "rubix_integration.importer.sources.geo:CitySnapshots",
                _REINSTALL),
    LazyBackend("mongo", "rubix_integration.importer.sources.mongo:MongoNodes", _REINSTALL),
)


class BuiltinIPFSBackend:
    """The plugin of one built-in IPFS backend: registers it by dotted path."""

    def __init__(self, backend: LazyBackend) -> None:
        self.backend = backend

    @hookimpl
    def register_ipfs_backends(self) -> list[LazyBackend]:
        return [self.backend]


class BuiltinStore:
    """The plugin of one built-in store: registers it by dotted path."""

    def __init__(self, backend: LazyBackend) -> None:
        self.backend = backend

    @hookimpl
    def register_stores(self) -> list[LazyBackend]:
        return [self.backend]


def builtin_plugin(name: str) -> object | None:
    """The plugin object of built-in backend plugin ``name``, or ``None`` if it is not one."""
    found = BUILTIN_BACKENDS.get(name)
    if found is None:
        return None
    role, backend = found
    if role == "pin_state":
        return BuiltinPinState(backend)
    return BuiltinIPFSBackend(backend) if role == "ipfs" else BuiltinStore(backend)


class BuiltinPinState:
    """The plugin of one built-in pin state backend: registers it by dotted path."""

    def __init__(self, backend: LazyBackend) -> None:
        self.backend = backend

    @hookimpl
    def register_backends(self) -> dict[str, list[LazyBackend]]:
        return {"pin_state": [self.backend]}


def _resolve(base: type | str) -> type:
    if isinstance(base, type):
        return base
    module, _, attr = base.partition(":")
    found: type = getattr(importlib.import_module(module), attr)
    return found


@dataclass
class _Registry:
    """Roles with their base class, backends per role, and who registered what.

    ``entries`` hold what the hooks returned (classes, or built-ins by dotted path); ``backends``
    the checked classes of each role used so far; ``load_errors`` the built-in plugins whose
    backend failed to import, with why.
    """

    role_bases: dict[str, type | str] = field(default_factory=dict)
    role_owners: dict[str, str] = field(default_factory=dict)
    entries: dict[str, dict[str, type | LazyBackend]] = field(default_factory=dict)
    hooks: dict[tuple[str, str], str] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    backends: dict[str, dict[str, type[Any]]] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    @property
    def roles(self) -> dict[str, type]:
        """Every role and its base class (imported now if named by path)."""
        return {role: self.base(role) for role in list(self.role_bases)}

    def base(self, role: str) -> type:
        found = self.role_bases[role] = _resolve(self.role_bases[role])
        return found

    def of_plugin(self, plugin: str) -> tuple[tuple[str, ...], dict[str, list[str]]]:
        """The roles ``plugin`` declared and the backend names it registered, by role."""
        roles = tuple(r for r, owner in self.role_owners.items() if owner == plugin)
        backends: dict[str, list[str]] = {}
        for (role, name), owner in self.owners.items():
            if owner == plugin:
                backends.setdefault(role, []).append(name)
        return roles, backends

    def load(self, role: str) -> dict[str, type[Any]]:
        """The classes of ``role`` by name: imported, checked against its base class, ordered."""
        if role in self.backends:
            return self.backends[role]
        base = self.base(role)
        found: dict[str, type[Any]] = {}
        for name, entry in self.entries.get(role, {}).items():
            plugin = self.owners[(role, name)]
            if isinstance(entry, LazyBackend):
                try:
                    cls = entry.load()
                except ImportError as exc:
                    # like an installed plugin that fails to import: reported, the rest works
                    message = f"plugin {plugin!r} ({entry.path}) {exc}"
                    self.load_errors[plugin] = str(exc)
                    log.warning(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=4)
                    continue
            else:
                cls = entry
            if not issubclass(cls, base) or getattr(cls, "name", None) != name:
                raise PluginError(f"plugin {plugin!r}: {self.hooks[(role, name)]} returned "
                                  f"{cls!r}, which is not a named subclass of {base.__name__}",
                                  plugin=plugin)
            found[name] = cls
        if hasattr(base, "priority"):
            found = dict(sorted(found.items(), key=lambda kv: (kv[1].priority, kv[0])))
        self.backends[role] = found
        return found


def _call(impl: Any, hook_name: str) -> Any:
    """A registration hook's answer, or ``None`` (warned with the plugin's name) if it raises."""
    try:
        return impl.function()
    except Exception as exc:
        message = f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc}"
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=5)
        return None


def _impls(pm: pluggy.PluginManager, hook_names: Iterable[str],
           order: Mapping[str, int]) -> list[tuple[str, Any]]:
    found = [(name, impl) for name in hook_names
             for impl in getattr(pm.hook, name).get_hookimpls()]
    # by plugin registration order; a plugin's hooks in the order named
    return sorted(found, key=lambda pair: order.get(pair[1].plugin_name, len(order)))


def _declare_roles(pm: pluggy.PluginManager, order: Mapping[str, int], reg: _Registry) -> None:
    reg.role_bases.update(_BUILTIN_BASES)
    reg.role_owners.update(dict.fromkeys(reg.role_bases, BUILTIN))
    for _, impl in _impls(pm, ["register_roles"], order):
        plugin = impl.plugin_name
        for role, base in dict(_call(impl, "register_roles") or {}).items():
            if not (isinstance(role, str) and role.isidentifier() and isinstance(base, type)):
                raise PluginError(f"plugin {plugin!r}: register_roles returned {role!r}: "
                                  f"{base!r}; expected a role name and its base class",
                                  plugin=plugin)
            if role in reg.role_bases:
                raise PluginError(f"backend role {role!r} is declared twice: by "
                                  f"{reg.role_owners[role]!r} and by plugin {plugin!r}",
                                  plugin=plugin)
            reg.role_bases[role] = base
            reg.role_owners[role] = plugin


def _add(reg: _Registry, role: str, entry: object, plugin: str, hook_name: str) -> None:
    if isinstance(entry, LazyBackend):
        name: object = entry.name
    else:
        name = getattr(entry, "name", "") if isinstance(entry, type) else ""
    if not (isinstance(entry, (type, LazyBackend)) and isinstance(name, str) and name):
        base = reg.role_bases[role]
        label = base.__name__ if isinstance(base, type) else base.rpartition(":")[2]
        raise PluginError(f"plugin {plugin!r}: {hook_name} returned {entry!r}, which is not a "
                          f"named subclass of {label}", plugin=plugin)
    found = reg.entries.setdefault(role, {})
    if name in found and found[name] is not entry:
        first = reg.owners[(role, name)]
        raise DuplicateBackendError(
            f"{role} backend name {name!r} is registered twice: by plugin {first!r} and by "
            f"plugin {plugin!r}", plugin=plugin, name=name, role=role)
    found[name] = entry
    reg.owners.setdefault((role, name), plugin)
    reg.hooks.setdefault((role, name), hook_name)


def _collect(pm: pluggy.PluginManager, order: Mapping[str, int]) -> _Registry:
    """Build the registry: roles first, then every backend name of every role, checked for
    duplicates (each class is checked against its role's base when the role is first used)."""
    reg = _Registry()
    _declare_roles(pm, order, reg)
    for hook_name, impl in _impls(pm, ["register_backends", *ROLE_HOOKS], order):
        plugin = impl.plugin_name
        answer = _call(impl, hook_name)
        if answer is None:
            continue
        by_role: Mapping[str, Any] = (
            {ROLE_HOOKS[hook_name]: answer} if hook_name in ROLE_HOOKS else answer)
        if not isinstance(by_role, Mapping):
            raise PluginError(f"plugin {plugin!r}: {hook_name} returned {by_role!r}; expected "
                              "{role: [class, ...]}", plugin=plugin)
        for role, classes in by_role.items():
            if role not in reg.role_bases:
                raise PluginError(f"plugin {plugin!r}: {hook_name} registers for role "
                                  f"{role!r}, which no plugin declares; known roles: "
                                  f"{', '.join(reg.role_bases)}", plugin=plugin)
            for entry in classes or ():
                _add(reg, role, entry, plugin, hook_name)
    return reg


def module_tables(module: ModuleType) -> list[sa.Table]:
    """The tables a module defines: its ``Table`` objects and its SQLModel classes' tables."""
    import sqlalchemy as sa

    out: list[sa.Table] = []
    for value in vars(module).values():
        table = value if isinstance(value, sa.Table) else getattr(value, "__table__", None)
        if isinstance(table, sa.Table) and table not in out:
            out.append(table)
    return out
