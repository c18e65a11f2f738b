"""The pin state in a ScyllaDB (or Cassandra) table, through ``scylla-driver``.

One row per CID (the partition key). Reads and writes use prepared statements; a commit is
written as LOGGED batches of at most ``batch_size`` statements (each batch atomic); ``list``
pages with the configured ``page_size`` and resumes with ``token(cid) > token(?)``. Errors the
configuration names as retryable are retried with exponential backoff; a cluster that cannot be
reached raises :class:`~rubix_integration.errors.PinStateUnavailableError` naming the hosts and
the timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from rubix_integration.errors import ConfigError, PinStateError, PinStateUnavailableError
from rubix_integration.pins import PIN_TYPES, Pin, PinStateBackend
from rubix_integration_scylla.config import ScyllaConfig

__all__ = ["ScyllaPinState"]

log = logging.getLogger("rubix_integration.pins.scylla")
T = TypeVar("T")

_TYPE_NAMES = {number: name for name, number in PIN_TYPES.items()}
COLUMNS = ("cid", "pin_type", "allocations", "max_depth", "reference", "ts", "rmin", "rmax",
           "name", "shard_size", "user_allocations", "expire_at", "meta", "pin_update",
           "origins")
INSTALL_HINT = "pip install 'rubix-integration[scylla]' (scylla-driver)"


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def _to_pin(row: Sequence[Any]) -> Pin:
    (cid, kind, allocations, depth, reference, ts, rmin, rmax, name, shard, user, expire, meta,
     update, origins) = tuple(row)
    return Pin(cid, _TYPE_NAMES[kind], _split(allocations), depth, reference, ts, rmin, rmax,
               name or "", shard, _split(user), expire, json.loads(meta) if meta else {},
               update, _split(origins))


def _values(pin: Pin) -> tuple[Any, ...]:
    return (pin.cid, PIN_TYPES[pin.type], ",".join(pin.allocations), pin.max_depth,
            pin.reference, pin.timestamp, pin.replication_factor_min,
            pin.replication_factor_max, pin.name, pin.shard_size,
            ",".join(pin.user_allocations), pin.expire_at,
            json.dumps(pin.metadata, sort_keys=True, separators=(",", ":"))
            if pin.metadata else None, pin.pin_update, ",".join(pin.origins))


def _driver() -> Any:
    try:
        import cassandra.cluster
    except ImportError as exc:
        raise ImportError(f"the scylla pin state needs the ScyllaDB driver: {INSTALL_HINT}"
                          ) from exc
    return cassandra.cluster


def error_kind(exc: BaseException) -> str | None:
    """The retry class of a driver error: ``timeout``, ``unavailable``, ``overloaded``,
    ``no_hosts`` or ``None`` (not retryable)."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    if isinstance(exc, (OperationTimedOut, ReadTimeout, WriteTimeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, Unavailable):
        return "unavailable"
    if isinstance(exc, NoHostAvailable):
        return "no_hosts"
    if type(exc).__name__ in ("OverloadedErrorMessage", "Overloaded") \
            or "overloaded" in str(exc).lower():
        return "overloaded"
    return None


class ScyllaPinState(PinStateBackend):
    """IPFS-Cluster's pin state on ScyllaDB/Cassandra.

    Build it from a :class:`ScyllaConfig` (``ScyllaPinState(config)``), or with
    :meth:`open` from ``scylla://[user:password@]host1,host2[:port]/keyspace?config=FILE``
    (the JSON file of IPFS-Cluster's ScyllaDB state store; the URL's parts override it) with
    ``create=1`` to create the keyspace and table. ``session`` passes a connected driver session
    (tests); otherwise one is opened on first use.
    """

    name = "scylla"
    schemes = ("scylla", "cassandra")

    def __init__(self, config: ScyllaConfig | None = None, *, session: Any = None,
                 create_schema: bool = False, log_json: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config or ScyllaConfig()
        self.consistency = self.config.consistency
        self.log_json = log_json
        self._session = session
        self._cluster: Any = None
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._create = create_schema
        self._ready = False
        self._sleep = sleep
        self._connected = False

    @classmethod
    def open(cls, url: str, **options: Any) -> ScyllaPinState:
        """The state for a ``scylla://`` URL (see the class docstring)."""
        options.pop("plugins", None)
        log_json = bool(options.pop("log_json", False))
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"config", "create", "consistency"}
        if unknown:
            raise ConfigError(f"{url.split('?')[0]}: unknown URL option(s) "
                              f"{', '.join(sorted(unknown))}; known: config, consistency, "
                              "create", name="url")
        config = ScyllaConfig.from_file(query["config"]) if "config" in query \
            else ScyllaConfig()
        changes: dict[str, Any] = {}
        netloc = parts.netloc.rpartition("@")[2]
        if parts.username:
            changes["username"] = unquote(parts.username)
        if parts.password:
            changes["password"] = unquote(parts.password)
        if netloc:
            hosts, port = [], None
            for item in netloc.split(","):
                host, sep, found = item.rpartition(":") if "]" not in item[-1:] and \
                    item.count(":") == 1 else ("", "", "")
                if sep:
                    hosts.append(host)
                    port = int(found)
                else:
                    hosts.append(item)
            changes["hosts"] = tuple(hosts)
            if port is not None:
                changes["port"] = port
        keyspace = parts.path.strip("/")
        if keyspace:
            changes["keyspace"] = keyspace
        if "consistency" in query:
            changes["consistency"] = query["consistency"]
        config = config.with_overrides(**changes)
        create = query.get("create", "0").lower() in ("1", "true", "yes")
        return cls(config, create_schema=create, log_json=log_json, **options)

    def describe(self) -> str:
        c = self.config
        return (f"scylla pin state {c.keyspace}.{c.table} on {','.join(c.hosts)}:{c.port}")

    # --- connection ----------------------------------------------------------------------------

    def _connect(self) -> Any:
        cluster_mod = _driver()
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            RoundRobinPolicy,
            TokenAwarePolicy,
        )

        c = self.config
        policy: Any = DCAwareRoundRobinPolicy(local_dc=c.local_dc) if c.dc_aware_routing \
            else RoundRobinPolicy()
        if c.token_aware_routing:
            policy = TokenAwarePolicy(policy)
        profile = cluster_mod.ExecutionProfile(
            load_balancing_policy=policy,
            consistency_level=getattr(ConsistencyLevel, c.consistency),
            serial_consistency_level=getattr(ConsistencyLevel, c.serial_consistency),
            request_timeout=c.timeout)
        kwargs: dict[str, Any] = {
            "contact_points": list(c.hosts), "port": c.port,
            "connect_timeout": c.connect_timeout,
            "execution_profiles": {cluster_mod.EXEC_PROFILE_DEFAULT: profile},
            "protocol_version": 4,
        }
        if c.username:
            kwargs["auth_provider"] = PlainTextAuthProvider(c.username, c.password)
        if c.tls.enabled:
            kwargs["ssl_context"] = self._ssl_context()
        cluster = cluster_mod.Cluster(**kwargs)
        try:
            session = cluster.connect()
        except Exception as exc:
            cluster.shutdown()
            raise PinStateUnavailableError(
                f"cannot reach ScyllaDB at {', '.join(c.hosts)} (port {c.port}) within the "
                f"connect timeout of {c.connect_timeout:g}s: {type(exc).__name__}: {exc}",
                backend=self.name) from exc
        self._cluster = cluster
        return session

    def _ssl_context(self) -> Any:
        import ssl

        tls = self.config.tls
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        return context

    @property
    def session(self) -> Any:
        """The driver session, connected (and the schema created when asked) on first use."""
        with self._lock:
            if self._session is None:
                self._session = self._connect()
            if not self._connected:
                from rubix_integration.pins._metrics import connections

                connections(self.name, len(self.config.hosts) * self.config.num_conns)
                self._connected = True
            if not self._ready:
                if self._create:
                    self._create_schema(self._session)
                self._ready = True
            return self._session

    def create_schema(self) -> None:
        """Create the keyspace (SimpleStrategy, or NetworkTopologyStrategy when
        ``datacenters`` is set) and the table, when missing."""
        self._create_schema(self.session)

    def _create_schema(self, session: Any) -> None:
        c = self.config
        if c.datacenters:
            replicas = ", ".join(f"'{dc}': {n}" for dc, n in sorted(c.datacenters.items()))
            replication = f"{{'class': 'NetworkTopologyStrategy', {replicas}}}"
        else:
            replication = (f"{{'class': 'SimpleStrategy', 'replication_factor': "
                           f"{c.replication_factor}}}")
        self._run(lambda: session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {c.keyspace} WITH REPLICATION = {replication}"))
        self._run(lambda: session.execute(
            f"CREATE TABLE IF NOT EXISTS {c.keyspace}.{c.table} (cid text PRIMARY KEY, "
            "pin_type int, allocations text, max_depth int, reference text, ts text, "
            "rmin int, rmax int, name text, shard_size bigint, user_allocations text, "
            "expire_at text, meta text, pin_update text, origins text)"))

    def close(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
            session, self._session = self._session, None
            self._prepared.clear()
            self._ready = False
            if self._connected:
                from rubix_integration.pins._metrics import connections

                connections(self.name, -len(self.config.hosts) * self.config.num_conns)
                self._connected = False
        if cluster is not None:
            cluster.shutdown()
        elif session is not None and hasattr(session, "shutdown"):
            session.shutdown()

    # --- statements, retries -------------------------------------------------------------------

    def _statement(self, key: str, cql: str) -> Any:
        found = self._prepared.get(key)
        if found is None:
            session = self.session
            found = self._run(lambda: session.prepare(cql))
            if len(self._prepared) >= self.config.prepared_statement_cache_size:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[key] = found
        return found

    def _run(self, call: Callable[[], T]) -> T:
        policy = self.config.retry_policy
        attempt = 0
        while True:
            try:
                return call()
            except PinStateError:
                raise
            except Exception as exc:
                kind = error_kind(exc)
                if kind is not None and kind in policy.retryable_errors \
                        and attempt < policy.num_retries:
                    delay = policy.delay(attempt)
                    log.debug("retrying after %s (%s) in %.3fs", type(exc).__name__, kind, delay)
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise self._translate(exc, attempt + 1) from exc

    def _translate(self, exc: BaseException, attempts: int) -> PinStateError:
        c = self.config
        kind = error_kind(exc)
        if kind is not None:
            return PinStateUnavailableError(
                f"ScyllaDB at {', '.join(c.hosts)} (port {c.port}, timeout {c.timeout:g}s) "
                f"failed after {attempts} attempt(s): {kind}: {type(exc).__name__}: {exc}",
                backend=self.name)
        return PinStateError(f"ScyllaDB {c.keyspace}.{c.table}: {type(exc).__name__}: {exc}",
                             backend=self.name)

    def _execute(self, statement: Any, params: Sequence[Any] | None = None) -> Any:
        session = self.session
        trace = self.config.tracing_enabled
        return self._run(lambda: session.execute(statement, params, trace=trace)
                         if trace else session.execute(statement, params))

    @property
    def _table(self) -> str:
        return f"{self.config.keyspace}.{self.config.table}"

    # --- the contract --------------------------------------------------------------------------

    def _iter(self, after: str | None, page_size: int) -> Iterator[Pin]:
        from cassandra.query import SimpleStatement

        cols = ", ".join(COLUMNS)
        size = min(page_size, self.config.page_size)
        if after is None:
            statement = SimpleStatement(f"SELECT {cols} FROM {self._table}", fetch_size=size)
            rows = self._execute(statement)
        else:
            statement = SimpleStatement(
                f"SELECT {cols} FROM {self._table} WHERE token(cid) > token(%s)",
                fetch_size=size)
            rows = self._execute(statement, (after,))
        # the driver fetches the next page as this loop reaches the end of the current one
        iterator = iter(rows)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # a page fetch failed: not retried mid-stream
                raise self._translate(exc, 1) from exc
            yield _to_pin(row)

    def _get(self, cid: str) -> Pin | None:
        statement = self._statement(
            "get", f"SELECT {', '.join(COLUMNS)} FROM {self._table} WHERE cid = ?")
        row = self._execute(statement, (cid,)).one()
        return None if row is None else _to_pin(row)

    def _has(self, cid: str) -> bool:
        statement = self._statement("has", f"SELECT cid FROM {self._table} WHERE cid = ?")
        return self._execute(statement, (cid,)).one() is not None

    def _apply(self, adds: Sequence[Pin], removes: Sequence[str]) -> None:
        from cassandra.query import BatchStatement, BatchType, PreparedStatement

        insert = self._statement(
            "insert", f"INSERT INTO {self._table} ({', '.join(COLUMNS)}) VALUES "
                      f"({', '.join('?' for _ in COLUMNS)})")
        delete = self._statement("delete", f"DELETE FROM {self._table} WHERE cid = ?")
        statements: list[tuple[Any, tuple[Any, ...]]] = [
            (insert, _values(p)) for p in adds]
        statements += [(delete, (cid,)) for cid in removes]
        if not isinstance(insert, PreparedStatement):
            # a session whose prepare() returns no driver PreparedStatement (an in-process fake)
            # gets the CQL text with the values bound by the driver, as for simple statements
            from cassandra.query import SimpleStatement

            insert_text = (f"INSERT INTO {self._table} ({', '.join(COLUMNS)}) VALUES "
                           f"({', '.join('%s' for _ in COLUMNS)})")
            delete_text = f"DELETE FROM {self._table} WHERE cid = %s"
            statements = [(SimpleStatement(insert_text if s is insert else delete_text), v)
                          for s, v in statements]
        from rubix_integration.pins._metrics import record

        for start in range(0, len(statements), self.config.batch_size):
            chunk = statements[start:start + self.config.batch_size]
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            for statement, values in chunk:
                batch.add(statement, values)
            began = time.perf_counter()
            self._execute(batch)
            record(self.name, "batch", time.perf_counter() - began, None, len(chunk))
