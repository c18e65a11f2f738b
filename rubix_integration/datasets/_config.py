"""The datasets layer's configuration: its four keys, and any of the package's settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rubix_integration.errors import ConfigError

if TYPE_CHECKING:
    from rubix_integration._manager import Manager

__all__ = ["DatasetsConfig", "manager_from_config", "split_config"]

#: The keys the datasets layer reads itself; every other key is a package setting.
OWN_KEYS = ("cache_dir", "enable_audit", "enable_provenance", "enable_p2p")


@dataclass(frozen=True)
class DatasetsConfig:
    """A datasets config, split: the switches the layer reads, and the Manager's settings.

    ``enable_audit`` (default on): :meth:`DatasetsManager.log_event` records events; off, it
    records nothing and returns ``None``. ``enable_provenance`` (default on): the same for
    :meth:`DatasetsManager.track_provenance`. ``enable_p2p`` (default off): see
    :class:`rubix_integration.WorkflowCoordinator`. ``cache_dir`` is the package's ``data_dir``
    (where the store, the embedded content store and the node key live).
    """

    enable_audit: bool = True
    enable_provenance: bool = True
    enable_p2p: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


def _switch(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not True or False", name=key, value=value,
                          allowed=("True", "False"), source="keyword")
    return value


def split_config(config: Mapping[str, Any] | None) -> DatasetsConfig:
    """Check ``config`` and split it; :class:`ConfigError` for a value or key nothing reads."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping of settings, not {type(config).__name__}",
                          name="config", source="keyword")
    settings = {str(k): v for k, v in config.items() if k not in OWN_KEYS}
    cache_dir = config.get("cache_dir")
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, Path)):
            raise ConfigError(f"cache_dir: {cache_dir!r} is not a path", name="cache_dir",
                              value=cache_dir, source="keyword")
        if settings.get("data_dir") is not None:
            raise ConfigError("cache_dir and data_dir name the same setting; give one",
                              name="cache_dir", source="keyword")
        settings["data_dir"] = Path(cache_dir).expanduser().absolute()
    if isinstance(settings.get("data_dir"), str):
        settings["data_dir"] = Path(settings["data_dir"]).expanduser().absolute()
    return DatasetsConfig(
        enable_audit=_switch(config, "enable_audit", True),
        enable_provenance=_switch(config, "enable_provenance", True),
        enable_p2p=_switch(config, "enable_p2p", False),
        settings=settings,
    )


def manager_from_config(config: Mapping[str, Any] | None,
                        env: Mapping[str, str] | None = None) -> Manager:
    """A :class:`~rubix_integration.Manager` on ``config``'s package settings (checked now,
    so that an unknown key fails here rather than on first use)."""
    from rubix_integration._manager import Manager

    manager = Manager(env=env, **split_config(config).settings)
    _ = manager.settings
    return manager
