"""Settings of one plugin: the keys it declares, resolved from its own section.

A plugin declares its keys with the ``plugin_settings_spec`` hook. Values come from (highest
first) the ``plugin_settings={"<plugin>": {...}}`` keyword, the environment variables
``RUBIX_<PLUGIN>_<KEY>``, the config file's ``[plugins.<plugin>]`` section, then the declared
defaults. The raw inputs are captured by :func:`~rubix_integration.resolve_settings` (so the
:class:`~rubix_integration.Settings` object stays immutable) and checked here once the plugins are
known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rubix_integration.errors import ConfigError

__all__ = ["PluginSetting", "PluginSettings", "PluginSettingsInput", "env_name"]

#: The value types a plugin setting may declare.
SETTING_TYPES: tuple[type, ...] = (str, int, float, bool, Path, tuple)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MASK = "***"


@dataclass(frozen=True)
class PluginSetting:
    """One key of a plugin's section: its ``type``, ``default`` and whether it is ``secret``.

    ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``Path`` or ``tuple`` (a list of
    text; from the environment, text separated by commas). ``default`` may be ``None`` (the key
    is optional). ``secret=None`` decides by the key's name (see
    :func:`rubix_integration._settings.is_secret_key`); a secret is shown as ``***``.
    """

    type: type
    default: Any = None
    secret: bool | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in SETTING_TYPES:
            names = ", ".join(t.__name__ for t in SETTING_TYPES)
            raise TypeError(f"a plugin setting's type is one of {names}, not {self.type!r}")


@dataclass(frozen=True)
class PluginSettingsInput:
    """The raw plugin values one :func:`resolve_settings` call saw, before any plugin checks them.

    ``keywords`` and ``file`` map a plugin's name to its ``{key: value}``; ``env`` holds every
    ``RUBIX_*`` variable that no top-level setting claims.
    """

    keywords: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def env_name(plugin: str, key: str) -> str:
    """The environment variable of ``key`` in plugin ``plugin``'s section: ``RUBIX_FOO_BAR``."""
    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", text).upper()

    return f"RUBIX_{part(plugin)}_{part(key)}"


def _is_secret(key: str, spec: PluginSetting) -> bool:
    if spec.secret is not None:
        return spec.secret
    from rubix_integration._settings import is_secret_key

    return is_secret_key(key)


class PluginSettings(Mapping[str, Any]):
    """One plugin's resolved settings: an immutable mapping ``{key: value}``.

    ``sources[key]`` says where each value came from (``keyword``, ``environment``,
    ``config file``, ``default``); :meth:`as_dict` masks the secret ones.
    """

    __slots__ = ("_sources", "_values", "plugin", "secrets")

    plugin: str
    secrets: frozenset[str]
    _values: dict[str, Any]
    _sources: dict[str, str]

    def __init__(self, plugin: str, values: Mapping[str, Any], sources: Mapping[str, str],
                 secrets: frozenset[str] = frozenset()) -> None:
        for name, value in (("plugin", plugin), ("_values", dict(values)),
                            ("_sources", dict(sources)), ("secrets", secrets)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"plugin settings are read-only: cannot set {name!r}")

    @property
    def sources(self) -> Mapping[str, str]:
        """Where each value came from."""
        return MappingProxyType(self._sources)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            known = ", ".join(self._values) or "none"
            raise KeyError(f"[plugins.{self.plugin}] has no key {key!r}; known: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        """The values as JSON-friendly data, secrets shown as ``***``."""
        out: dict[str, Any] = {}
        for key, value in self._values.items():
            if key in self.secrets and value is not None:
                value = _MASK
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def __repr__(self) -> str:
        return f"PluginSettings({self.plugin!r}, {self.as_dict()!r})"


def normalise_spec(plugin: str, raw: Mapping[str, object]) -> dict[str, PluginSetting]:
    """A declared spec with plain defaults turned into :class:`PluginSetting` (type of default)."""
    spec: dict[str, PluginSetting] = {}
    for key, item in raw.items():
        if isinstance(item, PluginSetting):
            spec[key] = item
        elif isinstance(item, (list, tuple)):
            spec[key] = PluginSetting(tuple, tuple(str(v) for v in item))
        elif isinstance(item, SETTING_TYPES):
            spec[key] = PluginSetting(type(item), item)
        else:
            raise ConfigError(
                f"plugin {plugin!r} declares setting {key!r} with default {item!r}: give a "
                "str, int, float, bool, Path or list default, or a PluginSetting",
                name=f"plugins.{plugin}.{key}", source="plugin")
    return spec


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


_EXPECTED = {str: "text", int: "an integer", float: "a number", bool: "true or false",
             Path: "a path (text)", tuple: "a list of text"}


def _convert(spec: PluginSetting, value: object, *, from_text: bool) -> object:
    """``value`` as ``spec.type``; raises ``ValueError`` saying what was expected."""
    expected = _EXPECTED[spec.type]
    bad = ValueError(f"is {_kind(value)}; expected {expected}")
    if spec.type is str:
        if not isinstance(value, str):
            raise bad
        return value
    if spec.type is Path:
        if not isinstance(value, str) or not value.strip():
            raise bad
        return Path(value).expanduser()
    if spec.type is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"is not {expected}") if from_text else bad
    if spec.type is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if from_text and isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        raise bad
    # int or float: text only from the environment, never a boolean
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    if isinstance(value, str) and not from_text:
        raise bad
    try:
        number: float | int = int(value) if spec.type is int else float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"is not {expected}") from None
    if spec.type is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"is not {expected}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"is not {expected} (finite)")
    return number


def resolve_plugin_settings(plugin: str, spec: Mapping[str, PluginSetting],
                            inputs: PluginSettingsInput) -> PluginSettings:
    """Resolve plugin ``plugin``'s section against its declared ``spec``.

    Raises :class:`ConfigError` for a key the plugin does not declare (config file or keyword;
    ``[plugins.foo] bar: unknown key; known: ...``) and for a value of the wrong type, naming
    where the value came from.
    """
    known = ", ".join(sorted(spec)) or "none (the plugin declares no settings)"
    for source, given in (("keyword", inputs.keywords.get(plugin, {})),
                          ("config file", inputs.file.get(plugin, {}))):
        for key in given:
            if key not in spec:
                where = (f"[plugins.{plugin}]" if source == "config file"
                         else f"plugin_settings[{plugin!r}]")
                raise ConfigError(f"{where} {key}: unknown key; known: {known}",
                                  name=f"plugins.{plugin}.{key}", allowed=sorted(spec),
                                  source=source)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    secrets = frozenset(k for k, s in spec.items() if _is_secret(k, s))
    for key, item in spec.items():
        variable = env_name(plugin, key)
        candidates: tuple[tuple[str, str, Mapping[str, Any], bool], ...] = (
            ("keyword", f"plugin_settings[{plugin!r}][{key!r}]", inputs.keywords.get(plugin, {}),
             False),
            ("environment", variable, {key: inputs.env[variable]} if variable in inputs.env
             else {}, True),
            ("config file", f"[plugins.{plugin}] {key}", inputs.file.get(plugin, {}), False),
        )
        for source, label, given, from_text in candidates:
            if key not in given:
                continue
            value = given[key]
            try:
                values[key] = _convert(item, value, from_text=from_text)
            except ValueError as exc:
                shown = _MASK if key in secrets else value
                raise ConfigError(f"{label}: {shown!r} {exc}", name=label, value=shown,
                                  source=source) from None
            sources[key] = source
            break
        else:
            values[key] = item.default
            sources[key] = "default"
    return PluginSettings(plugin, values, sources, secrets)
