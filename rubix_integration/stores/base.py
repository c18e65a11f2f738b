"""The contract every store fulfils.

A store is one SQL database reached through SQLAlchemy, holding the tables of
:data:`sqlmodel.SQLModel.metadata`. A subclass states which URL ``schemes`` it opens, how to build
its engine and how to write many rows fast; everything else is shared here.

What a store promises:

- ``Store(url, settings=...)`` does no I/O. The engine is built on first use of :attr:`engine`.
- :meth:`check` says whether the driver is installed, or raises
  :class:`~rubix_integration.errors.StoreMissingDependency` with the command that installs it.
- :meth:`create_schema` is idempotent and safe when several processes call it at the same moment;
  afterwards ``rubix_meta`` holds the schema version and this store's ``node_id``. A store of an
  older schema version is upgraded first (:mod:`rubix_integration.stores.migrations`).
- :meth:`transaction` yields a Core connection inside one transaction (commit on success, rollback
  on error); :meth:`session` yields a :class:`sqlmodel.Session` the caller commits.
- :meth:`bulk_insert` writes many plain rows in one transaction through the driver's fastest path
  (``executemany`` on SQLite, ``COPY`` on PostgreSQL), not through ORM objects. Given a connection
  from :meth:`transaction`, it joins that transaction, so a delete and an insert commit together.
- The dialect-dependent primitives capabilities need are the store's, never theirs (see
  :mod:`rubix_integration.stores.primitives`): :meth:`~StorePrimitives.upsert` (insert, or update
  a row whose values differ; returns rows inserted or changed), :meth:`~StorePrimitives.claim` /
  :meth:`~StorePrimitives.locked` (rows locked so that concurrent claimers get different ones),
  JSON conditions (:meth:`~StorePrimitives.json_path_equals` and the array tests) and
  :meth:`~StorePrimitives.stamp` (``origin_node`` and the next ``change_version`` of a
  replicated row). ``primitives`` lists those a store implements, and
  :meth:`~StorePrimitives.require` raises :class:`~rubix_integration.errors.StoreError` naming
  the store and the primitive it lacks: a capability calls it when it is built.
- :meth:`ping` and :meth:`describe` report reachability for ``status()``.
- Failures to reach or create the database raise
  :class:`~rubix_integration.errors.StoreUnavailableError` naming the masked URL (or the path) and
  the cause; a failed bulk insert raises :class:`~rubix_integration.errors.StoreError`. Driver
  exceptions are chained with ``from exc``.
- :meth:`close` disposes of the engine; a store is also a context manager.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel

from rubix_integration._settings import STORE_URL_FORMS, mask_url, redact
from rubix_integration.errors import (
    ConfigError,
    StoreError,
    StoreMissingDependency,
    StoreUnavailableError,
    UnknownStoreError,
)
from rubix_integration.stores.models import META_TABLE, SCHEMA_VERSION
from rubix_integration.stores.primitives import StorePrimitives

if TYPE_CHECKING:
    from rubix_integration._settings import Settings

__all__ = ["Row", "Store", "StoreRef", "url_scheme"]

#: A row for :meth:`Store.bulk_insert`: a mapping of column names, or a tuple in column order.
Row = Mapping[str, Any] | Sequence[Any]


def url_scheme(url: str) -> str:
    """The database part of a URL's scheme: ``postgresql+psycopg://…`` gives ``postgresql``."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    return scheme.split("+", 1)[0].strip().lower()


class Store(StorePrimitives):
    """A SQL database holding the package's tables. Subclass it for each kind of database.

    Subclasses set ``name``, ``schemes``, ``driver`` (the module that must import) and
    ``install_hint``, and implement :meth:`_create_engine`, :meth:`_copy_rows` and
    :meth:`_schema_lock`. They may override :meth:`normalise_url`, :meth:`_unavailable_reason` and
    :meth:`_server_version`. A store that implements more primitives (upsert, claim, JSON
    conditions, change versions) lists them in ``primitives`` and implements their hooks.
    """

    name: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()
    driver: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""

    metadata: ClassVar[sa.MetaData] = SQLModel.metadata
    primitives: ClassVar[frozenset[str]] = frozenset({"bulk_insert"})

    def __init__(self, url: str, *, settings: Settings) -> None:
        try:
            self.url = self.normalise_url(url)
        except ConfigError as exc:
            if url != settings.store_url:
                raise
            # name the setting as the user gave it: RUBIX_STORE_URL, --store, a config key
            label = settings.label("store_url")
            raise ConfigError(f"{label}: {exc}", name=label, value=exc.value,
                              allowed=exc.allowed,
                              source=settings.sources.get("store_url")) from exc
        self.settings = settings
        self._engine: Engine | None = None
        self._node_id_cache: str | None = None

    # --- identity ------------------------------------------------------------------------------

    @classmethod
    def handles(cls, url: str) -> bool:
        """Whether this class opens ``url``: its scheme, less any ``+driver``, is in ``schemes``."""
        return url_scheme(url) in cls.schemes

    @classmethod
    def normalise_url(cls, url: str) -> str:
        """Return the URL SQLAlchemy is given (scheme in lower case); raise UnknownStoreError
        for a foreign scheme and ConfigError for a URL that cannot be parsed."""
        if not cls.handles(url):
            raise UnknownStoreError(
                f"store {cls.name!r} does not open {mask_url(url)} "
                f"(schemes: {', '.join(cls.schemes)})",
                url=mask_url(url), backend=cls.name,
            )
        scheme, sep, rest = url.partition("://")
        url = f"{scheme.lower()}{sep}{rest}"
        try:
            sa.engine.make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            # the parser's message may quote a part of the URL: a password, say
            raise cls.url_error(url, "cannot be parsed as a URL") from None
        return url

    @classmethod
    def url_error(cls, url: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` saying what is wrong with ``url`` (masked) and what is allowed."""
        return ConfigError(
            f"{mask_url(url)!r} {problem}; expected a URL such as {', '.join(STORE_URL_FORMS)}",
            name="store_url", value=mask_url(url), allowed=STORE_URL_FORMS,
        )

    @classmethod
    def check(cls, url: str | None = None) -> str:
        """Return the driver and its version; raise StoreMissingDependency when it is missing."""
        import importlib

        try:
            module = importlib.import_module(cls.driver)
        except ImportError as exc:
            masked = mask_url(url) if url else None
            raise StoreMissingDependency(
                f"store {cls.name!r} needs the {cls.driver!r} module, which cannot be imported "
                f"({exc}); install it with: {cls.install_hint}",
                url=masked, backend=cls.name,
            ) from exc
        version = getattr(module, "__version__", None) or getattr(module, "sqlite_version", "")
        return f"{cls.driver} {version}".strip()

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.masked_url}>"

    # --- engine --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, built on first use."""
        if self._engine is None:
            self.check(self.url)
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        raise NotImplementedError

    def _unavailable(self, exc: BaseException, doing: str) -> StoreUnavailableError:
        reason = self._unavailable_reason(exc)
        return StoreUnavailableError(
            f"{self.name} store {self.masked_url} is unavailable while {doing}: {reason}",
            url=self.masked_url, backend=self.name,
        )

    def _unavailable_reason(self, exc: BaseException) -> str:
        orig = getattr(exc, "orig", None) or exc
        # a driver may quote the connection parameters it rejects
        return redact(" ".join(str(orig).split()), self.url) or type(orig).__name__

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Yield a Core connection (no transaction begun); connection failures are translated."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc, "connecting") from exc
        with conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Yield a connection inside one transaction: committed on success, rolled back on error.

        The connection runs Core statements and can be passed to :meth:`bulk_insert`.
        """
        with self.connect() as conn, self._transaction_on(conn):
            yield conn

    @contextmanager
    def transaction_on(self, conn: Connection) -> Iterator[Connection]:
        """One transaction on ``conn`` (from :meth:`connect`), begun as :meth:`transaction`
        begins its own (a write lock on SQLite): committed on success, rolled back on error."""
        with self._transaction_on(conn):
            yield conn

    @contextmanager
    def _transaction_on(self, conn: Connection) -> Iterator[None]:
        """One transaction on ``conn`` (prepared by :meth:`_begin`): committed on success."""
        self._begin(conn)
        try:
            trans = conn.begin()
        except sa.exc.OperationalError as exc:
            raise self._unavailable(exc, "beginning a transaction") from exc
        with trans:
            yield

    def _begin(self, conn: Connection) -> None:
        """Prepare ``conn`` before its transaction begins (SQLite asks for a write lock)."""

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a :class:`sqlmodel.Session` on this store; the caller commits."""
        engine = self.engine
        with Session(engine) as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    # --- schema --------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create every table of :attr:`metadata` that is missing, and the store's identity.

        Idempotent; serialised across processes by :meth:`_schema_lock`, so concurrent callers
        all succeed and agree on one ``node_id``.
        """
        try:
            with self.transaction() as conn:
                self._schema_lock(conn)
                table = META_TABLE
                found = self._stored_version(conn)
                if found is not None and found < SCHEMA_VERSION:
                    from rubix_integration.stores.migrations import migrate

                    migrate(self, conn, found)
                    conn.execute(sa.update(table).where(table.c.key == "schema_version")
                                 .values(value=str(SCHEMA_VERSION)))
                self.metadata.create_all(conn)
                present = set(conn.execute(sa.select(table.c.key)).scalars())
                wanted = {"schema_version": str(SCHEMA_VERSION), "node_id": str(uuid.uuid4())}
                missing = [{"key": k, "value": v} for k, v in wanted.items() if k not in present]
                if missing:
                    conn.execute(sa.insert(table), missing)
        except StoreError:
            raise
        except sa.exc.OperationalError as exc:
            raise self._unavailable(exc, "creating the schema") from exc
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"{self.name} store {self.masked_url}: cannot create the schema: "
                f"{self._unavailable_reason(exc)}",
                url=self.masked_url, backend=self.name,
            ) from exc

    @staticmethod
    def _stored_version(conn: Connection) -> int | None:
        """``rubix_meta.schema_version`` as stored, or ``None`` for a store without one."""
        table = META_TABLE
        if not sa.inspect(conn).has_table(table.name, schema=table.schema):
            return None
        value = conn.execute(sa.select(table.c.value)
                             .where(table.c.key == "schema_version")).scalar()
        return None if value is None else int(value)

    def _schema_lock(self, conn: Connection) -> None:
        """Serialise schema creation across processes for the rest of ``conn``'s transaction."""
        raise NotImplementedError

    # --- bulk writes ---------------------------------------------------------------------------

    def bulk_insert(
        self,
        table: sa.Table,
        rows: Iterable[Row],
        *,
        columns: Sequence[str] | None = None,
        connection: Connection | None = None,
        convert: bool = True,
    ) -> int:
        """Insert ``rows`` into ``table`` in one transaction; return how many were written.

        Rows are mappings (their keys, taken from the first row unless ``columns`` is given, name
        the columns) or tuples (in ``columns`` order, default every column of ``table``). Values
        go through each column type's bind processing, so they are what a Core ``insert`` would
        store. With ``connection`` (from :meth:`transaction`) the rows join its transaction;
        otherwise a transaction of their own is used. Any failure writes nothing.

        ``convert=False`` skips the column types' bind processing for tuples whose values the
        driver takes as they are (the caller's promise; the hot path of large syncs).
        """
        iterator = iter(rows)
        first = next(iterator, None)
        if first is None:
            return 0
        names = self._column_names(table, first, columns)
        converters = (self._converters(table, names) if convert
                      else [None] * len(names))
        as_tuples = self._tuple_maker(first, names, converters)

        def produce() -> Iterator[tuple[Any, ...]]:
            yield as_tuples(first)
            for row in iterator:
                yield as_tuples(row)

        if connection is not None:
            return self._bulk_on(connection, table, names, produce())
        with self.transaction() as conn:
            return self._bulk_on(conn, table, names, produce())

    def _bulk_on(
        self, conn: Connection, table: sa.Table, names: Sequence[str],
        rows: Iterator[tuple[Any, ...]],
    ) -> int:
        if not conn.in_transaction():
            self._begin(conn)
            with conn.begin():
                return self._bulk_on(conn, table, names, rows)
        try:
            return self._copy_rows(conn, table, names, rows)
        except StoreError:
            raise
        except Exception as exc:
            orig = getattr(exc, "orig", None) or exc
            if type(orig).__module__.split(".")[0] not in ("sqlite3", "psycopg", "sqlalchemy"):
                raise
            raise StoreError(
                f"{self.name} store {self.masked_url}: bulk insert into {table.name!r} failed, "
                f"nothing written: {' '.join(str(orig).split())}",
                url=self.masked_url, backend=self.name,
            ) from exc

    def _copy_rows(
        self, conn: Connection, table: sa.Table, names: Sequence[str],
        rows: Iterator[tuple[Any, ...]],
    ) -> int:
        """Write ``rows`` (already converted tuples) through the driver; return the count."""
        raise NotImplementedError

    def _column_names(
        self, table: sa.Table, first: Row, columns: Sequence[str] | None
    ) -> list[str]:
        if columns is not None:
            names = list(columns)
        elif isinstance(first, Mapping):
            names = [str(k) for k in first]
        else:
            names = [c.name for c in table.columns]
        unknown = [n for n in names if n not in table.c]
        if unknown:
            raise StoreError(
                f"bulk insert into {table.name!r}: unknown column(s) {', '.join(unknown)}",
                url=self.masked_url, backend=self.name,
            )
        if not isinstance(first, Mapping) and len(first) != len(names):
            raise StoreError(
                f"bulk insert into {table.name!r}: a row has {len(first)} values for "
                f"{len(names)} columns ({', '.join(names)})",
                url=self.masked_url, backend=self.name,
            )
        return names

    def _converters(
        self, table: sa.Table, names: Sequence[str]
    ) -> list[Callable[[Any], Any] | None]:
        dialect = self.engine.dialect
        return [table.c[n].type.bind_processor(dialect) for n in names]

    @staticmethod
    def _tuple_maker(
        first: Row, names: Sequence[str], converters: Sequence[Callable[[Any], Any] | None]
    ) -> Callable[[Any], tuple[Any, ...]]:
        plain = all(conv is None for conv in converters)
        if isinstance(first, Mapping):
            getter = operator.itemgetter(*names)
            pick: Callable[[Any], tuple[Any, ...]]
            if len(names) == 1:
                def pick(row: Any) -> tuple[Any, ...]:
                    return (getter(row),)
            else:
                pick = getter
            if plain:
                return pick
            return lambda row: tuple(
                v if c is None else c(v) for v, c in zip(pick(row), converters, strict=True)
            )
        if plain:
            return tuple
        return lambda row: tuple(
            v if c is None else c(v) for v, c in zip(row, converters, strict=True)
        )

    def _quoted_insert_target(self, conn: Connection, table: sa.Table, names: Sequence[str]) -> str:
        """``"schema"."table" ("a", "b")`` quoted by the dialect, safe for any name."""
        preparer = conn.dialect.identifier_preparer
        cols = ", ".join(preparer.quote(n) for n in names)
        return f"{preparer.format_table(table)} ({cols})"

    # --- status --------------------------------------------------------------------------------

    def ping(self) -> float:
        """Run a trivial query; return the round trip in seconds or raise StoreUnavailableError."""
        start = time.perf_counter()
        with self.connect() as conn:
            try:
                conn.execute(sa.text("SELECT 1"))
            except sa.exc.DBAPIError as exc:
                raise self._unavailable(exc, "pinging") from exc
        return time.perf_counter() - start

    def _server_version(self, conn: Connection) -> str:
        info = conn.dialect.server_version_info
        return ".".join(str(p) for p in info) if info else ""

    def describe(self) -> dict[str, Any]:
        """What ``status()`` shows: backend, masked URL, driver, server version, reachability."""
        out: dict[str, Any] = {
            "backend": self.name,
            "url": self.masked_url,
            "driver": None,
            "server_version": None,
            "reachable": False,
            "reason": "",
        }
        try:
            out["driver"] = self.check(self.url)
            latency = self.ping()
            with self.connect() as conn:
                out["server_version"] = self._server_version(conn)
        except StoreError as exc:
            out["reason"] = str(exc)
            return out
        out["reachable"] = True
        out["reason"] = f"answered in {latency * 1000:.1f} ms"
        return out

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection. The store may be used again afterwards."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StoreRef:
    """A capability's store, given open or as a callable opening it on first use.

    The primitives the capability ``needs`` are required of the store as soon as it is open
    (:meth:`Store.require`), so a store lacking one fails at start-up, naming ``by``.
    """

    def __init__(self, source: Store | Callable[[], Store], needs: Sequence[str], *,
                 by: str) -> None:
        self._needs = tuple(needs)
        self._by = by
        self._source = source
        if isinstance(source, Store):
            source.require(*self._needs, by=by)

    def __call__(self) -> Store:
        source = self._source
        if not isinstance(source, Store):
            source = source()
            source.require(*self._needs, by=self._by)
            self._source = source
        return source
