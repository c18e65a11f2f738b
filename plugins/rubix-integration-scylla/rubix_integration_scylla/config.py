"""The ScyllaDB state store's configuration: its JSON file as is, with its defaults.

Durations are Go duration text (``"10s"``, ``"100ms"``, ``"1m30s"``) or integer nanoseconds (what
Go's ``encoding/json`` writes for a ``time.Duration``); they are kept in seconds. An unknown key
or a value of the wrong type is a :class:`~rubix_integration.errors.ConfigError` naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rubix_integration.errors import ConfigError

__all__ = ["CONSISTENCY_LEVELS", "RetryPolicyConfig", "ScyllaConfig", "TLSConfig",
           "parse_duration"]

CONSISTENCY_LEVELS = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
                      "EACH_QUORUM", "LOCAL_ONE")
SERIAL_LEVELS = ("SERIAL", "LOCAL_SERIAL")
RETRYABLE = ("timeout", "unavailable", "overloaded", "no_hosts")

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: object, name: str) -> float:
    """Seconds from a Go duration (``"1m30s"``, ``"100ms"``) or integer nanoseconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not a duration", name=name, value=value)
    if isinstance(value, int):
        return value / 1e9
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        pos, total = 0, 0.0
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return sign * total
    raise ConfigError(f"{name}: {value!r} is not a duration (like \"10s\", \"100ms\")",
                      name=name, value=value)


@dataclass(frozen=True)
class TLSConfig:
    """Client TLS: certificate and key for mutual TLS, the CA to trust, or no verification."""

    enabled: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class RetryPolicyConfig:
    """Retries of retryable errors, with exponential backoff between ``min_retry_delay`` and
    ``max_retry_delay`` (seconds)."""

    num_retries: int = 3
    min_retry_delay: float = 0.1
    max_retry_delay: float = 10.0
    retryable_errors: tuple[str, ...] = ("timeout", "unavailable")

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (0 for the first)."""
        return float(min(self.max_retry_delay, self.min_retry_delay * (2 ** attempt)))


@dataclass(frozen=True)
class ScyllaConfig:
    """The ``Config`` of IPFS-Cluster's ScyllaDB state store: connection, timeouts (seconds),
    pool, consistency, routing, paging, TLS, retries, metrics and tracing; ``replication_factor``
    (SimpleStrategy) or ``datacenters`` (``{dc: replicas}``, NetworkTopologyStrategy) for keyspace
    creation."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "ipfs_pins"
    username: str = ""
    password: str = ""
    timeout: float = 10.0
    connect_timeout: float = 5.0
    num_conns: int = 4
    max_wait_time: float = 10.0
    consistency: str = "QUORUM"
    serial_consistency: str = "SERIAL"
    token_aware_routing: bool = True
    dc_aware_routing: bool = False
    local_dc: str = ""
    page_size: int = 5000
    prepared_statement_cache_size: int = 1000
    tls: TLSConfig = field(default_factory=TLSConfig)
    retry_policy: RetryPolicyConfig = field(default_factory=RetryPolicyConfig)
    metrics_enabled: bool = True
    tracing_enabled: bool = False
    table: str = "pins"
    replication_factor: int = 1
    datacenters: Mapping[str, int] = field(default_factory=dict)
    #: Statements per LOGGED batch (each batch is atomic; a commit may take several).
    batch_size: int = 100

    @classmethod
    def from_file(cls, path: str | Path) -> ScyllaConfig:
        """Read the JSON configuration file (the format of IPFS-Cluster's ScyllaDB state store)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read ScyllaDB config {path}: {exc.strerror}",
                              name="config", value=str(path)) from exc
        except ValueError as exc:
            raise ConfigError(f"ScyllaDB config {path} is not JSON: {exc}", name="config",
                              value=str(path)) from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"ScyllaDB config {path} is not a JSON object", name="config")
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "config") -> ScyllaConfig:
        """A configuration from decoded JSON; defaults fill what is missing."""
        values = _check(cls, data, where, "")
        return cls(**values).validated()

    def with_overrides(self, **changes: Any) -> ScyllaConfig:
        """A copy with ``changes`` applied and checked."""
        return replace(self, **changes).validated()

    def validated(self) -> ScyllaConfig:
        """Check the values that have a closed set or a range."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"ScyllaDB config {name}: {why}", name=name,
                               value=getattr(self, name, None))

        if not self.hosts or not all(isinstance(h, str) and h for h in self.hosts):
            raise bad("hosts", "give at least one host")
        if not 0 < self.port < 65536:
            raise bad("port", f"{self.port} is not a port")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,47}", self.keyspace):
            raise bad("keyspace", f"{self.keyspace!r} is not a CQL identifier")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,47}", self.table):
            raise bad("table", f"{self.table!r} is not a CQL identifier")
        if self.consistency.upper() not in CONSISTENCY_LEVELS:
            raise bad("consistency", f"{self.consistency!r}; one of "
                                     f"{', '.join(CONSISTENCY_LEVELS)}")
        if self.serial_consistency.upper() not in SERIAL_LEVELS:
            raise bad("serial_consistency", f"{self.serial_consistency!r}; one of "
                                            f"{', '.join(SERIAL_LEVELS)}")
        for name in ("timeout", "connect_timeout", "max_wait_time"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        for name in ("num_conns", "page_size", "prepared_statement_cache_size",
                     "replication_factor", "batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.dc_aware_routing and not self.local_dc:
            raise bad("local_dc", "dc_aware_routing needs local_dc")
        unknown = [e for e in self.retry_policy.retryable_errors if e not in RETRYABLE]
        if unknown:
            raise ConfigError(f"ScyllaDB config retry_policy.retryable_errors: unknown "
                              f"{', '.join(unknown)}; known: {', '.join(RETRYABLE)}",
                              name="retry_policy.retryable_errors", allowed=RETRYABLE)
        if self.retry_policy.num_retries < 0:
            raise ConfigError("ScyllaDB config retry_policy.num_retries: must be >= 0",
                              name="retry_policy.num_retries")
        return replace(self, consistency=self.consistency.upper(),
                       serial_consistency=self.serial_consistency.upper())

    def as_dict(self) -> dict[str, Any]:
        """The configuration as JSON values (durations as Go text), password masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value:
                value = "***"
            elif isinstance(value, (TLSConfig, RetryPolicyConfig)):
                value = {g.name: _jsonable(getattr(value, g.name)) for g in fields(value)}
            out[f.name] = _jsonable(value)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


_DURATIONS = {"timeout", "connect_timeout", "max_wait_time", "min_retry_delay",
              "max_retry_delay"}


def _check(cls: type, data: Mapping[str, Any], where: str, prefix: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"known: {', '.join(known)}", name=prefix + unknown[0],
                          allowed=tuple(known))
    out: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        label = prefix + name
        default = getattr(defaults, name)
        if name in _DURATIONS:
            out[name] = parse_duration(value, label)
        elif isinstance(default, (TLSConfig, RetryPolicyConfig)):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {label} must be an object", name=label, value=value)
            out[name] = type(default)(**_check(type(default), value, where, label + "."))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {label} must be true or false, not {value!r}",
                                  name=label, value=value)
            out[name] = value
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: {label} must be an integer, not {value!r}",
                                  name=label, value=value)
            out[name] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {label} must be text, not {value!r}", name=label,
                                  value=value)
            out[name] = value
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {label} must be a list of text, not {value!r}",
                                  name=label, value=value)
            out[name] = tuple(value)
        elif isinstance(default, Mapping):
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                    for k, v in value.items()):
                raise ConfigError(f"{where}: {label} must map names to integers", name=label,
                                  value=value)
            out[name] = dict(value)
        else:  # pragma: no cover - every field is one of the kinds above
            out[name] = value
    return out
