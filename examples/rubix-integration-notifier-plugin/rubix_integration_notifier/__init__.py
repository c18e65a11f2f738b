"""A ``notifier`` backend role with a file backend, configured by ``[plugins.notifier]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rubix_integration.hookspecs import Host, PluginSetting, hookimpl

__version__ = "0.1.0"

#: The plugin's name: its entry point, its config section and its variables' prefix.
PLUGIN = "notifier"
ROLE = "notifier"


class Notifier:
    """Base of the ``notifier`` role: deliver one message somewhere.

    A subclass sets ``name`` (unique within the role) and implements :meth:`send`; it is built
    with the plugin's resolved settings.
    """

    name: ClassVar[str] = ""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings

    def send(self, message: str) -> None:
        raise NotImplementedError


class FileNotifier(Notifier):
    """Append ``[channel] message`` lines to the file ``path``; without a path, send nothing."""

    name = "file"

    def send(self, message: str) -> None:
        path: Path | None = self.settings["path"]
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"[{self.settings['channel']}] {message}\n")


def notifier(manager: Host) -> Notifier:
    """The notifier the settings choose, built with them."""
    settings = manager.plugin_settings(PLUGIN)
    cls: type[Notifier] = manager.backend(ROLE, settings["backend"])
    return cls(settings)


@hookimpl
def register_roles() -> Mapping[str, type]:
    return {ROLE: Notifier}


@hookimpl
def register_backends() -> Mapping[str, Sequence[type]]:
    return {ROLE: [FileNotifier]}


@hookimpl
def plugin_settings_spec() -> Mapping[str, object]:
    return {
        "backend": FileNotifier.name,
        "channel": "ops",
        "path": PluginSetting(Path, None, help="the file the file notifier appends to"),
        "retries": 3,
        "token": PluginSetting(str, None, help="a credential for notifiers that need one"),
    }


@hookimpl
def startup(manager: Host) -> None:
    notifier(manager).send("store opened")


@hookimpl
def database_processed(manager: Host, result: Mapping[str, Any]) -> None:
    notifier(manager).send(f"{result.get('node_name')}: {result.get('status')}")
