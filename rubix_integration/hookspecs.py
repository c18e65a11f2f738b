"""Every hook a plugin can implement.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, named after the
specs below. Installed packages expose plugins through the entry-point group
``rubix_integration``; the built-in backends use the very same hooks (see
``rubix_integration._plugins.DEFAULT_PLUGINS``). Each hook is documented for plugin authors in
CONTRIBUTING.md, section "Hook reference".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from rubix_integration._host import Host
from rubix_integration._plugin_settings import PluginSetting, PluginSettings

if TYPE_CHECKING:
    import click
    import sqlalchemy as sa

    from rubix_integration._settings import Settings
    from rubix_integration.ipfs.base import IPFSBackend, IPFSDetection
    from rubix_integration.stores.base import Store

PROJECT_NAME = "rubix_integration"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["Host", "PluginSetting", "PluginSettings", "hookimpl", "hookspec"]


# --- registering backends ------------------------------------------------------------------------


@hookspec
def register_roles() -> Mapping[str, type]:
    """Declare new backend roles, as ``{role: base_class}``.

    Called once, the first time the backend registry is built. Backends registered for a role
    (through :func:`register_backends`) must subclass its base class. The built-in roles are
    ``ipfs`` (:class:`~rubix_integration.IPFSBackend`), ``store``
    (:class:`~rubix_integration.Store`), ``pin_state``
    (:class:`~rubix_integration.PinStateBackend`) and ``source`` (any class;
    :class:`~rubix_integration.Source` is the importer's base). Declaring one of those, or a
    role another plugin declared, raises :class:`~rubix_integration.errors.PluginError` naming
    both plugins.
    """


@hookspec
def register_backends() -> Mapping[str, Sequence[type]]:
    """Return backend classes for any role, as ``{role: [class, ...]}``.

    Called once, the first time the backend registry is built. Each class has a ``name`` unique
    within its role and subclasses the role's base class; a duplicate name raises
    :class:`~rubix_integration.errors.DuplicateBackendError` naming both plugins, a role nobody
    declared raises :class:`~rubix_integration.errors.PluginError`. ``register_ipfs_backends``,
    ``register_stores`` and ``register_sources`` feed the same registry for their role.
    """


@hookspec
def register_ipfs_backends() -> Sequence[type[IPFSBackend]]:
    """Return IPFS backend classes this plugin provides.

    Called once when the plugin manager is built. Each class subclasses
    :class:`rubix_integration.ipfs.IPFSBackend` and has a ``name`` unique across all plugins; a
    duplicate name stops start-up with :class:`~rubix_integration.errors.DuplicateBackendError`.
    """


@hookspec
def register_stores() -> Sequence[type[Store]]:
    """Return store classes this plugin provides.

    Called once when the plugin manager is built. Each class subclasses
    :class:`rubix_integration.stores.Store`, has a unique ``name`` and lists the URL ``schemes`` it
    opens (``"postgresql"`` matches ``postgresql+psycopg://`` too).
    """


@hookspec
def register_sources() -> Sequence[type]:
    """Return source classes for the table importer (the ``source`` role).

    Called once, the first time the backend registry is built. A source class has a unique
    ``name``; an instance yields the rows of one target table, each with the table's key, so that
    the importer can upsert them.
    """


# --- plugin settings and tables ------------------------------------------------------------------


@hookspec
def plugin_settings_spec() -> Mapping[str, PluginSetting | str | int | float | bool]:
    """Declare the keys of this plugin's settings section, as ``{key: default or PluginSetting}``.

    Called once, when the host first resolves plugin settings. A plain default gives the key its
    type; a :class:`~rubix_integration.PluginSetting` states the type of a key whose default is
    ``None``, or marks it secret. Users set the keys in ``[plugins.<plugin name>]`` of the config
    file or as ``RUBIX_<PLUGIN>_<KEY>``; a key the plugin does not declare is a
    :class:`~rubix_integration.errors.ConfigError` naming the section. Read them with
    ``manager.plugin_settings("<plugin name>")``.
    """


@hookspec
def register_tables() -> Sequence[sa.Table | ModuleType | str]:
    """Return the tables this plugin keeps in the store, created with the schema.

    Called when the store is first opened, before its schema is created. Return
    :class:`sqlalchemy.Table` objects of :attr:`Store.metadata <rubix_integration.Store.metadata>`
    (``SQLModel.metadata``), modules defining SQLModel tables, or dotted names of such modules
    (imported only then, which keeps start-up cheap).
    """


# --- choosing among candidates -------------------------------------------------------------------


@hookspec(firstresult=True)
def choose_ipfs_backend(
    settings: Settings,
    ipfs_path: Path | None,
    candidates: Mapping[str, IPFSDetection],
) -> str | None:
    """Pick the IPFS backend for one repo path, or return ``None`` to leave the choice to others.

    Called by auto-detection (``RUBIX_IPFS=auto``) for each IPFS repo path it serves (the Manager's
    default and each Rubix node's ``.ipfs``). ``candidates`` maps every registered backend name to
    its detection result, in order of preference. The first non-``None`` answer wins; the built-in
    rule takes the most preferred available backend. Returning a name whose detection says
    unavailable is allowed (the plugin knows better) and is reported in ``status()``.
    """


@hookspec(firstresult=True)
def choose_store(url: str, candidates: Sequence[type[Store]]) -> type[Store] | None:
    """Pick the store class for ``url`` among ``candidates`` (those whose scheme matches).

    Return ``None`` to leave the choice to others; the built-in rule takes the first candidate.
    """


# --- the command line ----------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``rubix-integration`` command line.

    Called once when the CLI starts, with the top-level :class:`click.Group`; add commands with
    ``cli.command()`` or ``cli.add_command()``. Errors raised by a command that are
    :class:`~rubix_integration.errors.RubixError` become a one-line message and exit status 1.
    """


# --- workflow ------------------------------------------------------------------------------------


@hookspec
def register_task_handlers() -> Mapping[str, Callable[..., Any]]:
    """Return the workflow task handlers this plugin provides, as ``{task_type: handler}``.

    Called when a worker starts (``rubix-integration tasks worker`` without ``--handler``, or
    :class:`~rubix_integration.workflow.Worker` built from the plugins). A handler is called as
    ``handler(task)`` with the claimed :class:`~rubix_integration.workflow.Task` and returns the
    task's result (JSON-serialisable: DAG-JSON, so bytes and CIDs are allowed too); raising an
    exception fails the attempt, which is retried with backoff up to the task's ``max_attempts``.
    The worker claims only the task types some plugin handles; two plugins registering one task
    type stop the worker with a :class:`~rubix_integration.errors.PluginError` naming both.
    """


# --- events --------------------------------------------------------------------------------------


@hookspec
def token_synced(manager: Host, record: Mapping[str, Any]) -> None:
    """Announce one token row written to the store by a sync.

    ``record`` holds the row's columns (``token_id``, ``node_name``, ``ipfs_fetched``, ...).
    Called from the sync's writer thread after the row's batch is committed; keep it fast. An
    exception is reported with the plugin's name and does not stop the sync.
    """


@hookspec
def database_processed(manager: Host, result: Mapping[str, Any]) -> None:
    """Announce that one node database was synced (or failed).

    ``result`` holds ``db_path``, ``node_name``, ``status`` (``"processed"``, ``"skipped"`` or
    ``"failed"``), ``record_count``, ``ipfs_success_count``, ``ipfs_fail_count`` and ``error``.
    An exception is reported with the plugin's name and does not stop the sync.
    """


@hookspec
def provenance_recorded(manager: Host, record: Mapping[str, Any]) -> None:
    """Announce a provenance record appended to the log.

    ``record`` holds ``cid``, ``prev`` (the previous record's CID or ``None``), ``type``,
    ``timestamp`` and ``data``. Use it to forward records elsewhere. An exception is reported with
    the plugin's name and does not undo the record.
    """


@hookspec
def task_state_changed(
    manager: Host,
    task: Mapping[str, Any],
    old_state: str | None,
    new_state: str,
) -> None:
    """Announce a workflow task's state change (``None`` -> ``"pending"`` on submit, ...).

    ``task`` holds the task's fields after the change. An exception is reported with the plugin's
    name and does not undo the change.
    """


# --- lifecycle -----------------------------------------------------------------------------------


@hookspec
def startup(manager: Host) -> None:
    """Announce that the host opened its store (its schema and the plugins' tables exist).

    Fired once each time the store is opened (the first use of ``manager.store``, again after
    :meth:`~rubix_integration.Manager.close`). An exception is reported with the plugin's name
    and does not stop the host.
    """


@hookspec
def shutdown(manager: Host) -> None:
    """Announce that the host is closing its store (it is still open during the call).

    Fired by :meth:`~rubix_integration.Manager.close` when :func:`startup` was fired. An exception
    is reported with the plugin's name and the close goes on.
    """


# --- HTTP ----------------------------------------------------------------------------------------


@hookspec
def register_routes(manager: Host) -> Sequence[Any]:
    """Return HTTP routes this plugin serves, for the host's web application.

    Called when the host builds its HTTP application. Return Starlette-style ``Route`` or
    ``Mount`` objects (``path``, ``endpoint`` or ``app``, ``methods``); the host mounts them as
    they are, under the paths they name. The server of ``rubix-integration serve`` is a
    Starlette application (a runtime dependency), so plugins can build their routes with it.
    """
