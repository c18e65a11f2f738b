"""Configuration: resolved once, in one place, into an immutable :class:`Settings`.

Precedence: keyword arguments > environment variables (``RUBIX_*``) > the config file
(``config.toml`` in the platformdirs config dir, or ``RUBIX_CONFIG_FILE``) > defaults.
Each value remembers where it came from so that ``status()`` can say so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs
import tomllib

from rubix_integration.errors import ConfigError

APP_NAME = "rubix_integration"

ENABLED_VALUES = ("auto", "1", "0")
IPFS_MODES = ("auto", "http", "cli", "repo", "local")

# setting name -> environment variable
ENV_VARS: dict[str, str] = {
    "enabled": "RUBIX_INTEGRATION_ENABLED",
    "ipfs_mode": "RUBIX_IPFS",
    "ipfs_api": "RUBIX_IPFS_API",
    "ipfs_bin": "RUBIX_IPFS_BIN",
    "ipfs_bin_args": "RUBIX_IPFS_BIN_ARGS",
    "ipfs_path": "RUBIX_IPFS_PATH",
    "ipfs_timeout": "RUBIX_IPFS_TIMEOUT",
    "store_url": "RUBIX_STORE_URL",
    "data_dir": "RUBIX_DATA_DIR",
    "load_plugins": "RUBIX_LOAD_PLUGINS",
    "source_ip": "RUBIX_SOURCE_IP",
}
CONFIG_FILE_ENV = "RUBIX_CONFIG_FILE"


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved. Build it with :func:`resolve_settings`.

    - ``enabled``: ``"auto"`` detect IPFS; ``"1"`` require it (warn loudly when missing); ``"0"``
      use only the embedded fallbacks.
    - ``ipfs_mode``: ``"auto"`` or the name of an IPFS backend (``http``, ``cli``, ``repo``,
      ``local`` or one added by a plugin).
    - ``ipfs_api``: the daemon's RPC address (multiaddr ``/ip4/127.0.0.1/tcp/5001`` or URL).
    - ``ipfs_bin`` / ``ipfs_bin_args``: the IPFS CLI binary and extra arguments placed before the
      sub-command.
    - ``ipfs_path``: the default IPFS repo (``IPFS_PATH``, else ``~/.ipfs``).
    - ``ipfs_timeout``: default limit of every IPFS call, seconds.
    - ``store_url``: SQLAlchemy URL of the store; default a SQLite file in ``data_dir``.
    - ``load_plugins``: ``None`` loads every installed entry-point plugin; a tuple loads only those
      names; an empty tuple loads none.
    - ``source_ip``: the address recorded as the source of synced rows (``None``: detect).
    - ``sources``: where each value came from (``default``, ``config file``, ``environment``,
      ``keyword``).
    """

    enabled: str = "auto"
    ipfs_mode: str = "auto"
    ipfs_api: str | None = None
    ipfs_bin: str | None = None
    ipfs_bin_args: tuple[str, ...] = ()
    ipfs_path: Path | None = None
    ipfs_timeout: float = 10.0
    store_url: str = ""
    data_dir: Path = Path()
    config_dir: Path = Path()
    config_file: Path | None = None
    load_plugins: tuple[str, ...] | None = None
    source_ip: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def ipfs_enabled(self) -> bool:
        """Whether anything but the embedded fallback may be used."""
        return self.enabled != "0"

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values (the store URL's password masked)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            if f.name == "store_url":
                value = mask_url(value)
            out[f.name] = value
        return out


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``postgresql://user:secret@host/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _choice(allowed: tuple[str, ...]) -> Callable[[str, object, str], object]:
    def convert(name: str, value: object, source: str) -> object:
        text = str(value).strip().lower()
        if text in ("true", "yes", "on") and "1" in allowed:
            text = "1"
        if text in ("false", "no", "off") and "0" in allowed:
            text = "0"
        if text not in allowed:
            raise ConfigError(
                f"{_label(name, source)}: {value!r} is not one of {', '.join(allowed)}",
                name=_label(name, source), value=value, allowed=allowed, source=source,
            )
        return text
    return convert


def _ipfs_mode(name: str, value: object, source: str) -> object:
    text = str(value).strip().lower()
    # plugin backends may add modes; the name is validated against the registry by the Manager
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise ConfigError(
            f"{_label(name, source)}: {value!r} is not a backend name "
            f"(one of {', '.join(IPFS_MODES)}, or a plugin's)",
            name=_label(name, source), value=value, allowed=IPFS_MODES, source=source,
        )
    return text


def _optional_str(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _path(name: str, value: object, source: str) -> object:
    if value is None or str(value).strip() == "":
        return None
    return Path(str(value)).expanduser()


def _float(name: str, value: object, source: str) -> object:
    try:
        number = float(str(value))
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(
            f"{_label(name, source)}: {value!r} is not a positive number of seconds",
            name=_label(name, source), value=value, source=source,
        )
    return number


def _names(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    items = ([str(v) for v in value] if isinstance(value, (list, tuple))
             else str(value).split(","))
    return tuple(i.strip() for i in items if i.strip())


def _args(name: str, value: object, source: str) -> object:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    import shlex

    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        raise ConfigError(f"{_label(name, source)}: cannot split {value!r}: {exc}",
                          name=_label(name, source), value=value, source=source) from exc


def _store_url(name: str, value: object, source: str) -> object:
    text = str(value).strip() if value is not None else ""
    if text and "://" not in text and not text.startswith("sqlite:"):
        raise ConfigError(
            f"{_label(name, source)}: {value!r} is not a URL (expected e.g. sqlite:///path/to.db "
            "or postgresql+psycopg://user@host/db)",
            name=_label(name, source), value=value, source=source,
        )
    return text


_CONVERTERS: dict[str, Callable[[str, object, str], object]] = {
    "enabled": _choice(ENABLED_VALUES),
    "ipfs_mode": _ipfs_mode,
    "ipfs_api": _optional_str,
    "ipfs_bin": _optional_str,
    "ipfs_bin_args": _args,
    "ipfs_path": _path,
    "ipfs_timeout": _float,
    "store_url": _store_url,
    "data_dir": _path,
    "load_plugins": _names,
    "source_ip": _optional_str,
}


def _label(name: str, source: str) -> str:
    if source == "environment":
        return ENV_VARS.get(name, name)
    if source == "config file":
        return f"config file key {name!r}"
    return name


def default_config_file(env: Mapping[str, str]) -> Path:
    explicit = env.get(CONFIG_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc}", name=str(path),
                          source="config file") from exc
    unknown = sorted(set(data) - set(_CONVERTERS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(_CONVERTERS))}",
            name=str(path), allowed=sorted(_CONVERTERS), source="config file",
        )
    return data


def resolve_settings(
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve every setting from keywords, environment, config file and defaults.

    ``env`` defaults to ``os.environ``. Unknown keywords raise :class:`ConfigError`.
    """
    env = os.environ if env is None else env
    unknown = sorted(set(overrides) - set(_CONVERTERS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_CONVERTERS))}", name=unknown[0],
                          allowed=sorted(_CONVERTERS), source="keyword")
    config_file = default_config_file(env)
    file_values = _read_config_file(config_file)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, convert in _CONVERTERS.items():
        if name in overrides and overrides[name] is not None:
            values[name] = convert(name, overrides[name], "keyword")
            sources[name] = "keyword"
        elif ENV_VARS[name] in env:
            values[name] = convert(name, env[ENV_VARS[name]], "environment")
            sources[name] = "environment"
        elif name in file_values:
            values[name] = convert(name, file_values[name], "config file")
            sources[name] = "config file"
        else:
            sources[name] = "default"

    data_dir = values.get("data_dir") or Path(platformdirs.user_data_dir(APP_NAME))
    values["data_dir"] = data_dir
    if values.get("ipfs_path") is None:
        ipfs_env = env.get("IPFS_PATH")
        values["ipfs_path"] = Path(ipfs_env).expanduser() if ipfs_env else Path.home() / ".ipfs"
        if ipfs_env:
            sources["ipfs_path"] = "environment (IPFS_PATH)"
    if not values.get("store_url"):
        values["store_url"] = f"sqlite:///{data_dir / 'rubix.sqlite'}"
    return Settings(
        **values,
        config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
        config_file=config_file if config_file.is_file() else None,
        sources=dict(sources),
    )
