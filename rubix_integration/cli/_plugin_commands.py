"""Plugin commands (the ``register_commands`` hook), added without building a Manager.

The full plugin manager registers the built-in backends, which import the store and IPFS
libraries; the command tree needs none of that. Only the ``register_commands`` hook is called
here, on the installed plugins the settings select, so ``--help`` stays fast. Failures are worded
as the plugin manager words them, so a warning printed here and again by the command's Manager is
one line (the command line prints each warning once).
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata

import pluggy

from rubix_integration import hookspecs
from rubix_integration._settings import resolve_settings
from rubix_integration.cli._common import Group
from rubix_integration.errors import RubixError

log = logging.getLogger("rubix_integration.plugins")

__all__ = ["add_plugin_commands"]

#: The entry-point group of installed plugins (the plugin manager's; a test keeps them equal).
ENTRY_POINT_GROUP = "rubix_integration"


def add_plugin_commands(group: Group) -> None:
    """Let each selected plugin add its commands to ``group``; report a failing one by name."""
    try:
        selected = resolve_settings().load_plugins
    except RubixError as exc:
        # every command resolves the settings and reports a bad one itself: not twice
        group.plugin_error = exc
        return
    if selected is not None and not selected:
        return
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _load_entry_points(pm, set(selected) if selected else None)
    arguments = {"cli": group}
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(**{k: arguments[k] for k in impl.argnames})
        except Exception as exc:
            log.warning("plugin %r failed in register_commands: %s: %s",
                        impl.plugin_name, type(exc).__name__, exc)


def _load_entry_points(pm: pluggy.PluginManager, wanted: set[str] | None) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if wanted is not None and ep.name not in wanted and dist not in wanted:
            continue
        if pm.has_plugin(ep.name):
            continue
        origin = f"{dist or '?'}: {ep.value}"
        try:
            plugin = ep.load()
        except Exception as exc:
            _warn(f"plugin {ep.name!r} ({origin}) failed to import: {type(exc).__name__}: {exc}")
            continue
        try:
            pm.register(plugin, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            _warn(f"plugin {ep.name!r} ({origin}) cannot be registered: {exc}")


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
