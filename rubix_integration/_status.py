"""What :meth:`Manager.status` returns: every choice the Manager made, and why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rubix_integration._plugins import PluginInfo
from rubix_integration.ipfs.base import FieldsAsMapping

__all__ = ["ComponentStatus", "Status", "enabled_by"]


def enabled_by(sources: Mapping[str, str]) -> str:
    """Where the ``enabled`` setting came from, as its variable when it came from one
    (``RUBIX_INTEGRATION_ENABLED`` or its alias ``IPFS_DATASETS_ENABLED``), else the source."""
    source = sources.get("enabled", "default")
    if source == "environment":
        return "RUBIX_INTEGRATION_ENABLED"
    if source.startswith("environment (") and source.endswith(")"):
        return source[len("environment ("):-1]
    return source


@dataclass(frozen=True)
class ComponentStatus(FieldsAsMapping):
    """One candidate for a role (``"ipfs"``, ``"store"``, ``"analytics"``).

    ``chosen`` marks the one in use; ``available`` says whether it could serve; ``reason`` says
    why it was chosen or rejected; ``plugin`` is the plugin that registered it.
    """

    _keys: ClassVar[tuple[str, ...]] = ("role", "name", "chosen", "available", "reason", "plugin")

    role: str
    name: str
    chosen: bool
    available: bool
    reason: str
    plugin: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "chosen": self.chosen,
            "available": self.available,
            "reason": self.reason,
            "plugin": self.plugin,
        }


@dataclass(frozen=True)
class Status:
    """A printable, JSON-able report of the Manager's set-up.

    ``str(status)`` gives a plain-text report; :meth:`as_dict` / :meth:`to_json` the same as data.
    """

    version: str
    enabled: str
    ipfs_path: str | None
    ipfs: tuple[ComponentStatus, ...]
    stores: tuple[ComponentStatus, ...]
    analytics: ComponentStatus
    plugins: tuple[PluginInfo, ...]
    data_dir: str
    config_dir: str
    config_file: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def ipfs_mode(self) -> str | None:
        """The chosen IPFS backend's name."""
        return next((c.name for c in self.ipfs if c.chosen), None)

    @property
    def store(self) -> str | None:
        """The chosen store's name."""
        return next((c.name for c in self.stores if c.chosen), None)

    @property
    def ipfs_available(self) -> bool:
        """Whether a backend other than the embedded fallback can serve."""
        return any(c.available and c.name != "local" for c in self.ipfs)

    @property
    def enabled_by(self) -> str:
        """Where ``enabled`` came from: ``RUBIX_INTEGRATION_ENABLED``, its alias
        ``IPFS_DATASETS_ENABLED``, a config file key, a keyword, or ``default``."""
        return enabled_by(self.sources)

    # read as a mapping too: ``status["enabled"]`` is ``status.as_dict()["enabled"]``

    def keys(self) -> list[str]:
        """The keys of :meth:`as_dict`."""
        return list(self.as_dict())

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``as_dict().get(key, default)``."""
        return self.as_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "enabled": self.enabled,
            "enabled_by": self.enabled_by,
            "ipfs_path": self.ipfs_path,
            "ipfs_mode": self.ipfs_mode,
            "ipfs_available": self.ipfs_available,
            "ipfs": [c.as_dict() for c in self.ipfs],
            "store": self.store,
            "stores": [c.as_dict() for c in self.stores],
            "analytics": self.analytics.as_dict(),
            "plugins": [p.as_dict() for p in self.plugins],
            "data_dir": self.data_dir,
            "config_dir": self.config_dir,
            "config_file": self.config_file,
            "settings": self.settings,
            "sources": self.sources,
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, sort_keys=False)

    def __str__(self) -> str:
        lines = [f"rubix_integration {self.version}",
                 f"integration enabled: {self.enabled} ({self.enabled_by})",
                 f"IPFS repo path: {self.ipfs_path or '-'}"]
        for title, items in (("IPFS access", self.ipfs), ("stores", self.stores),
                             ("analytics", (self.analytics,))):
            lines.append(f"{title}:")
            for c in items:
                mark = "*" if c.chosen else ("+" if c.available else "-")
                lines.append(f"  {mark} {c.name:<12} {c.reason}")
        lines.append("plugins:")
        for p in self.plugins:
            state = f"FAILED: {p.error}" if p.error else f"{p.source}, {p.origin}"
            lines.append(f"  {p.name} {p.version or ''} ({state})")
        lines.append(f"data dir: {self.data_dir}")
        lines.append(f"config dir: {self.config_dir} (file: {self.config_file or 'none'})")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)
