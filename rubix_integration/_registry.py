"""The registry of backends by role, collected once from every plugin's registration hooks.

Roles: the built-in ones (:data:`BUILTIN_ROLES`) and those plugins declare with
``register_roles``. Backends: ``register_backends`` (any role) and the per-role hooks
``register_ipfs_backends``, ``register_stores`` and ``register_sources``, all read in plugin
registration order (built-ins first, so they own their names).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rubix_integration.errors import DuplicateBackendError, PluginError

if TYPE_CHECKING:
    import pluggy
    import sqlalchemy as sa

log = logging.getLogger("rubix_integration.plugins")

#: The roles every host knows; ``pin_state`` and ``source`` accept any named class for now.
BUILTIN_ROLES: tuple[str, ...] = ("ipfs", "store", "pin_state", "source")

#: The hooks that register backends for one fixed role.
ROLE_HOOKS: dict[str, str] = {
    "register_ipfs_backends": "ipfs",
    "register_stores": "store",
    "register_sources": "source",
}
BUILTIN = "built-in"


@dataclass
class _Registry:
    """Roles with their base class, backends per role, and who registered what."""

    roles: dict[str, type] = field(default_factory=dict)
    role_owners: dict[str, str] = field(default_factory=dict)
    backends: dict[str, dict[str, type[Any]]] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def of_plugin(self, plugin: str) -> tuple[tuple[str, ...], dict[str, list[str]]]:
        """The roles ``plugin`` declared and the backend names it registered, by role."""
        roles = tuple(r for r, owner in self.role_owners.items() if owner == plugin)
        backends: dict[str, list[str]] = {}
        for (role, name), owner in self.owners.items():
            if owner == plugin:
                backends.setdefault(role, []).append(name)
        return roles, backends


def _builtin_roles() -> dict[str, type]:
    from rubix_integration.ipfs.base import IPFSBackend
    from rubix_integration.stores.base import Store

    return {"ipfs": IPFSBackend, "store": Store, "pin_state": object, "source": object}


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
    reg.roles.update(_builtin_roles())
    reg.role_owners.update(dict.fromkeys(reg.roles, BUILTIN))
    for _, impl in _impls(pm, ["register_roles"], order):
        plugin = impl.plugin_name
        for role, base in dict(_call(impl, "register_roles") or {}).items():
            if not (isinstance(role, str) and role.isidentifier() and isinstance(base, type)):
                raise PluginError(f"plugin {plugin!r}: register_roles returned {role!r}: "
                                  f"{base!r}; expected a role name and its base class",
                                  plugin=plugin)
            if role in reg.roles:
                raise PluginError(f"backend role {role!r} is declared twice: by "
                                  f"{reg.role_owners[role]!r} and by plugin {plugin!r}",
                                  plugin=plugin)
            reg.roles[role] = base
            reg.role_owners[role] = plugin


def _add(reg: _Registry, role: str, cls: object, plugin: str, hook_name: str) -> None:
    base = reg.roles[role]
    name = getattr(cls, "name", "") if isinstance(cls, type) else ""
    if not (isinstance(cls, type) and issubclass(cls, base)) or not name \
            or not isinstance(name, str):
        raise PluginError(f"plugin {plugin!r}: {hook_name} returned {cls!r}, which is not a "
                          f"named subclass of {base.__name__}", plugin=plugin)
    found = reg.backends.setdefault(role, {})
    if name in found and found[name] is not cls:
        first = reg.owners[(role, name)]
        raise DuplicateBackendError(
            f"{role} backend name {name!r} is registered twice: by plugin {first!r} and by "
            f"plugin {plugin!r}", plugin=plugin, name=name, role=role)
    found[name] = cls
    reg.owners.setdefault((role, name), plugin)


def _collect(pm: pluggy.PluginManager, order: Mapping[str, int]) -> _Registry:
    """Build the registry: roles first, then every backend of every role, checked."""
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
            if role not in reg.roles:
                raise PluginError(f"plugin {plugin!r}: {hook_name} registers for role "
                                  f"{role!r}, which no plugin declares; known roles: "
                                  f"{', '.join(reg.roles)}", plugin=plugin)
            for cls in classes or ():
                _add(reg, role, cls, plugin, hook_name)
    for role, found in reg.backends.items():
        if hasattr(reg.roles[role], "priority"):
            reg.backends[role] = dict(sorted(found.items(),
                                             key=lambda kv: (kv[1].priority, kv[0])))
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
