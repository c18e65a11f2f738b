"""Configuration: resolved once, in one place, into an immutable :class:`Settings`.

Precedence: keyword arguments > environment variables (``RUBIX_*``) > the config file
(``config.toml`` in the platformdirs config dir, or ``RUBIX_CONFIG_FILE``) > defaults.
Each value remembers where it came from so that ``status()`` can say so.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from rubix_integration._plugin_settings import PluginSettingsInput
from rubix_integration.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published separately before it joined the standard library
    import tomli as tomllib

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
    "sync_db_timeout": "RUBIX_SYNC_DB_TIMEOUT",
}
CONFIG_FILE_ENV = "RUBIX_CONFIG_FILE"
#: Other names a setting's environment variable answers to, read only when the ``RUBIX_*`` one
#: is not set: ``IPFS_DATASETS_ENABLED`` is the name the datasets integration layer uses.
ENV_ALIASES: dict[str, tuple[str, ...]] = {"enabled": ("IPFS_DATASETS_ENABLED",)}
#: The config file's table of plugin sections: ``[plugins.<name>]``.
PLUGINS_TABLE = "plugins"


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved. Build it with :func:`resolve_settings`.

    - ``enabled``: ``"auto"`` detect IPFS; ``"1"`` require it (warn loudly when missing); ``"0"``
      use only the embedded fallbacks. Read from ``RUBIX_INTEGRATION_ENABLED``, else from its alias
      ``IPFS_DATASETS_ENABLED`` (the source then says ``environment (IPFS_DATASETS_ENABLED)``);
      ours wins when both are set.
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
    - ``sync_db_timeout``: limit of the sync of one node database, seconds (default 600).
    - ``sources``: where each value came from (``default``, ``config file``, ``environment``,
      ``keyword``, or ``option --flag`` for a command-line option).
    - ``plugin_input``: the raw values of plugin sections (``[plugins.<name>]``,
      ``RUBIX_<PLUGIN>_<KEY>``, the ``plugin_settings`` keyword), checked by the plugin that owns
      them (see :meth:`Manager.plugin_settings <rubix_integration.Manager.plugin_settings>`).
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
    sync_db_timeout: float = 600.0
    sources: Mapping[str, str] = field(default_factory=dict)
    plugin_input: PluginSettingsInput = field(default_factory=PluginSettingsInput)

    @property
    def ipfs_enabled(self) -> bool:
        """Whether anything but the embedded fallback may be used."""
        return self.enabled != "0"

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values (the store URL's password masked)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("sources", "plugin_input"):
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

    def label(self, name: str) -> str:
        """How the user named setting ``name``: its variable, config key, option or keyword."""
        return _label(name, self.sources.get(name, "default"))

    def source_label(self, name: str) -> str:
        """The setting's name and, unless the name says it, where its value came from:
        ``RUBIX_STORE_URL (environment)``, ``--store``, ``store_url (default)``."""
        label = self.label(name)
        source = self.sources.get(name, "default")
        if source.startswith(OPTION_SOURCE) or source == "config file":
            return label
        return f"{label} ({source})"

    def origin(self, name: str) -> str:
        """Where the value of ``name`` came from, as a user would write it (``RUBIX_IPFS=http``,
        ``--ipfs http``, ``config file key 'ipfs_mode' = 'http'``)."""
        value = getattr(self, name)
        shown = mask_url(value) if name == "store_url" else value
        source = self.sources.get(name, "default")
        if source == "environment":
            return f"{ENV_VARS.get(name, name)}={shown}"
        if source.startswith("environment (") and _label(name, source) != name:
            return f"{_label(name, source)}={shown}"
        if source.startswith(OPTION_SOURCE):
            return f"{source[len(OPTION_SOURCE):]} {shown}"
        if source == "config file":
            return f"config file key {name!r} = {shown!r}"
        return f"{name}={shown} ({source})"


#: The source recorded for a value given by a command-line option: ``"option --ipfs"``.
OPTION_SOURCE = "option "

# a query parameter (or key=value pair) whose key holds one of these is a secret
_SECRET_KEY_PARTS = ("password", "passwd", "pwd", "secret", "token")
# ``key=value`` in libpq's conninfo text (``host=h password='x y'``)
_SECRET_PAIR = re.compile(r"(?P<key>[^\s&;=?#]+)\s*=\s*(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;]*)")
_MASK = "***"


def is_secret_key(key: str) -> bool:
    """Whether a URL query key (or conninfo keyword) names a secret: ``password``,
    ``sslpassword`` and any key containing ``password``, ``passwd``, ``pwd``, ``secret`` or
    ``token``, in any case and percent-encoding. ``passfile`` names a file and is not one."""
    from urllib.parse import unquote_plus

    text = unquote_plus(key).strip().lower()
    return any(part in text for part in _SECRET_KEY_PARTS)


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` ending the user info of ``rest`` (the URL after ``://``), or -1:
    the last ``@`` before the query that follows the first ``@``."""
    first = rest.find("@")
    if first < 0:
        return -1
    query = rest.find("?", first)
    return rest.rfind("@", 0, query) if query >= 0 else rest.rfind("@")


def _port_span(host: str) -> tuple[int, int] | None:
    """The span of a port that is not a number (a password that lost its ``@``, perhaps)."""
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            return (1, len(host))
        colon = close + 1 if host[close + 1:close + 2] == ":" else -1
    else:
        colon = host.find(":")
    if colon < 0 or host[colon + 1:].isdigit():
        return None
    return (colon + 1, len(host))


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where ``url`` holds secrets, under every reading of it.

    Characters left unencoded in a password (``@``, ``?``, ``/``) make a URL ambiguous, so each
    ``@`` is tried as the end of the user info and whatever any reading calls a secret is one:
    hiding too much beats showing a password.
    """
    spans: list[tuple[int, int]] = []
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL: libpq conninfo text, or anything else
        head, at, _ = url.rpartition("@")
        if at and ":" in head:
            spans.append((head.index(":") + 1, len(head)))
        spans += [m.span("value") for m in _SECRET_PAIR.finditer(url)
                  if is_secret_key(m.group("key"))]
        return spans
    base = len(scheme) + len(sep)
    for end in [-1] + [i for i, c in enumerate(rest) if c == "@"]:
        colon = rest.find(":", 0, end) if end >= 0 else -1
        if colon >= 0:
            spans.append((base + colon + 1, base + end))
        start = base + end + 1
        after = url[start:]
        hostpath, q, query = after.partition("?")
        host = hostpath.partition("/")[0]
        port = None if "@" in host else _port_span(host)  # no host holds '@': another reading
        if port is not None:
            spans.append((start + port[0], start + port[1]))
        if not q:
            continue
        pos = start + len(hostpath) + 1
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            if eq and is_secret_key(key):
                spans.append((pos + len(key) + 1, pos + len(item)))
            pos += len(item) + 1
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def mask_url(url: str) -> str:
    """Hide every secret in a store URL, even a malformed one, keeping the rest readable.

    Masked with ``***``: the password of the user info (``user:***@host``), the value of every
    secret query parameter (see :func:`is_secret_key`), a port that is not a number (a password
    that lost its ``@``). Text that is not a URL has its ``user:…@`` and secret ``key=value``
    pairs masked.
    """
    out: list[str] = []
    last = 0
    for a, b in _merged(_secret_spans(url)):
        out += [url[last:a], _MASK]
        last = b
    out.append(url[last:])
    return "".join(out)


def url_secrets(url: str) -> list[str]:
    """The secret values a store URL holds (as written and percent-decoded), longest first."""
    from urllib.parse import unquote_plus

    found = [url[a:b].strip("'\"") for a, b in _merged(_secret_spans(url))]
    found += [unquote_plus(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***`` (for driver error messages)."""
    for secret in url_secrets(url):
        text = text.replace(secret, _MASK)
    return text


#: The longest ``ipfs_timeout`` accepted, seconds: one day (clocks and sockets refuse far more).
MAX_TIMEOUT_S = 86400.0
STORE_URL_FORMS = ("sqlite:///path/to.db", "sqlite:// (in memory)",
                   "postgresql+psycopg://user@host:5432/dbname")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_PORT = re.compile(r"[0-9]{1,5}")

Converter = Callable[[str, object, str], object]


def _error(name: str, source: str, value: object, problem: str,
           allowed: tuple[str, ...] | None = None) -> ConfigError:
    label = _label(name, source)
    shown = mask_url(value) if name == "store_url" and isinstance(value, str) else value
    return ConfigError(f"{label}: {shown!r} {problem}", name=label, value=shown,
                       allowed=allowed, source=source)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _text(name: str, value: object, source: str, expected: str) -> str:
    """``value`` as text; anything else (a list, a number, a table) is refused, never str()-ed."""
    if not isinstance(value, str):
        raise _error(name, source, value, f"is {_kind(value)}; expected {expected}")
    if "\x00" in value:
        raise _error(name, source, value, f"contains a NUL character; expected {expected}")
    return value


def _choice(allowed: tuple[str, ...]) -> Converter:
    def convert(name: str, value: object, source: str) -> object:
        expected = f"one of {', '.join(allowed)}"
        if isinstance(value, bool):  # TOML ``enabled = false``
            value = "1" if value else "0"
        elif isinstance(value, int) and value in (0, 1):
            value = str(value)
        text = _text(name, value, source, expected).strip().lower()
        if text in ("true", "yes", "on") and "1" in allowed:
            text = "1"
        if text in ("false", "no", "off") and "0" in allowed:
            text = "0"
        if text not in allowed:
            raise _error(name, source, value, f"is not {expected}", allowed)
        return text
    return convert


def _ipfs_mode(name: str, value: object, source: str) -> object:
    expected = f"a backend name (one of {', '.join(IPFS_MODES)}, or a plugin's)"
    text = _text(name, value, source, expected).strip().lower()
    # plugin backends may add modes; the name is validated against the registry by the Manager
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise _error(name, source, value, f"is not {expected}", IPFS_MODES)
    return text


def _optional_str(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    text = _text(name, value, source, "text").strip()
    return text or None


def _path(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = _text(name, value, source, "a path (text)")
    if not text.strip():
        return None
    return Path(text).expanduser()


def _float(name: str, value: object, source: str) -> object:
    expected = f"a positive number of seconds, at most {MAX_TIMEOUT_S:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _error(name, source, value, f"is {_kind(value)}; expected {expected}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= MAX_TIMEOUT_S):
        raise _error(name, source, value, f"is not {expected}")
    return number


def _items(name: str, value: object, source: str, expected: str) -> list[str] | None:
    """The items of a list (each must be text), or ``None`` when ``value`` is not a list."""
    if not isinstance(value, (list, tuple)):
        return None
    bad = [v for v in value if not isinstance(v, str) or "\x00" in v]
    if bad:
        raise _error(name, source, value, f"holds {bad[0]!r}; expected {expected}")
    return [str(v) for v in value]


def _names(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    expected = "plugin names (a list of text, or text separated by commas)"
    items = _items(name, value, source, expected)
    if items is None:
        items = _text(name, value, source, expected).split(",")
    return tuple(i.strip() for i in items if i.strip())


def _args(name: str, value: object, source: str) -> object:
    expected = "arguments (a list of text, or text split like a shell does)"
    items = _items(name, value, source, expected)
    if items is not None:
        return tuple(items)
    import shlex

    text = _text(name, value, source, expected)
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise _error(name, source, value, f"cannot be split: {exc}") from exc


def check_store_url(url: str) -> str:
    """Check the syntax every store URL shares; return it with its scheme in lower case.

    Raises ``ValueError`` saying what is wrong (without repeating the URL). What a given store
    needs beyond that (a host or a database name) is checked by its class.
    """
    if "\x00" in url:
        raise ValueError("contains a NUL character")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("is not a URL (no '://')")
    if not _SCHEME.fullmatch(scheme):
        raise ValueError("has no valid scheme (a letter, then letters, digits, '+', '-', '.')")
    after = rest[_userinfo_end(rest) + 1:]
    host = after.partition("?")[0].partition("/")[0]
    port: str | None = None
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            raise ValueError("has an IPv6 address without its closing ']'")
        tail = host[close + 1:]
        if tail and not tail.startswith(":"):
            raise ValueError("has text after the ']' of its IPv6 address")
        port = tail[1:] if tail else None
    elif ":" in host:
        port = host.partition(":")[2]
    if port is not None and not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
        raise ValueError("has a port that is not a number from 1 to 65535")
    return f"{scheme.lower()}://{rest}"


def _store_url(name: str, value: object, source: str) -> object:
    if value is None:
        return ""
    expected = f"a URL such as {', '.join(STORE_URL_FORMS)}"
    text = _text(name, value, source, expected).strip()
    if not text:
        return ""
    try:
        return check_store_url(text)
    except ValueError as exc:
        raise _error(name, source, text, f"{exc}; expected {expected}",
                     STORE_URL_FORMS) from None


_CONVERTERS: dict[str, Converter] = {
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
    "sync_db_timeout": _float,
}


def _label(name: str, source: str) -> str:
    if source == "environment":
        return ENV_VARS.get(name, name)
    alias = source.removeprefix("environment (").removesuffix(")")
    if alias in ENV_ALIASES.get(name, ()):
        return alias
    if source == "config file":
        return f"config file key {name!r}"
    if source.startswith(OPTION_SOURCE):
        return source[len(OPTION_SOURCE):]
    return name


def default_config_file(env: Mapping[str, str]) -> Path:
    explicit = env.get(CONFIG_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _read_config_file(path: Path, *, explicit: bool) -> dict[str, Any]:
    if not path.is_file():
        if explicit:  # a mistyped RUBIX_CONFIG_FILE must not be silently ignored
            raise ConfigError(f"{CONFIG_FILE_ENV}: {str(path)!r} is not a file",
                              name=CONFIG_FILE_ENV, value=str(path), source="environment")
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: is not UTF-8 text (byte {exc.start} of the "
                          "file); TOML files are UTF-8", name=str(path),
                          source="config file") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc}", name=str(path),
                          source="config file") from exc
    unknown = sorted(set(data) - set(_CONVERTERS) - {PLUGINS_TABLE})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(_CONVERTERS))}",
            name=str(path), allowed=sorted(_CONVERTERS), source="config file",
        )
    sections = data.get(PLUGINS_TABLE, {})
    bad = ([PLUGINS_TABLE] if not isinstance(sections, dict) else
           [f"{PLUGINS_TABLE}.{k}" for k, v in sections.items() if not isinstance(v, dict)])
    if bad:
        raise ConfigError(f"config file {path}: {bad[0]} is not a table; write plugin settings "
                          "as [plugins.<name>] sections", name=bad[0], source="config file")
    return data


def _frozen_sections(sections: Mapping[str, Any], what: str) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(sections, Mapping) or not all(
            isinstance(v, Mapping) for v in sections.values()):
        raise ConfigError(f"{what}: expected {{plugin name: {{key: value}}}}", name=what,
                          source="keyword")
    # plain dicts (not proxies): Settings travel to worker processes by pickle
    return {str(k): dict(v) for k, v in sections.items()}


def resolve_settings(
    env: Mapping[str, str] | None = None,
    *,
    keyword_sources: Mapping[str, str] | None = None,
    plugin_settings: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve every setting from keywords, environment, config file and defaults.

    ``env`` defaults to ``os.environ``. Unknown keywords raise :class:`ConfigError`.
    ``keyword_sources`` says where keyword values came from when it was not the caller's code:
    the command line passes ``{"ipfs_mode": "option --ipfs"}``, so that errors and ``status()``
    name ``--ipfs``. ``plugin_settings`` gives plugin sections as ``{plugin: {key: value}}``,
    above their environment variables and config file sections.
    """
    env = os.environ if env is None else env
    keyword_sources = dict(keyword_sources or {})
    unknown = sorted((set(overrides) | set(keyword_sources)) - set(_CONVERTERS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_CONVERTERS))}", name=unknown[0],
                          allowed=sorted(_CONVERTERS), source="keyword")
    config_file = default_config_file(env)
    file_values = _read_config_file(config_file, explicit=bool(env.get(CONFIG_FILE_ENV)))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, convert in _CONVERTERS.items():
        if name in overrides and overrides[name] is not None:
            source = keyword_sources.get(name, "keyword")
            values[name] = convert(name, overrides[name], source)
            sources[name] = source
        elif ENV_VARS[name] in env:
            values[name] = convert(name, env[ENV_VARS[name]], "environment")
            sources[name] = "environment"
        elif alias := next((a for a in ENV_ALIASES.get(name, ()) if a in env), None):
            source = f"environment ({alias})"
            values[name] = convert(name, env[alias], source)
            sources[name] = source
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
    claimed = {*ENV_VARS.values(), CONFIG_FILE_ENV}
    plugin_input = PluginSettingsInput(
        keywords=_frozen_sections(plugin_settings or {}, "plugin_settings"),
        file=_frozen_sections(file_values.get(PLUGINS_TABLE, {}), "[plugins]"),
        env={k: v for k, v in env.items() if k.startswith("RUBIX_") and k not in claimed},
    )
    return Settings(
        **values,
        config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
        config_file=config_file if config_file.is_file() else None,
        sources=dict(sources),
        plugin_input=plugin_input,
    )
