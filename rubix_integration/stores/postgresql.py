"""PostgreSQL, for many machines writing to one place, through psycopg 3.

``postgresql://`` and ``postgres://`` URLs are read as ``postgresql+psycopg://``. Bulk writes use
``COPY ... FROM STDIN``; schema creation is serialised by a transaction-scoped advisory lock, since
two concurrent ``CREATE TABLE`` of one name would otherwise fail in the loser.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rubix_integration._settings import mask_url
from rubix_integration.errors import UnknownStoreError
from rubix_integration.hookspecs import hookimpl
from rubix_integration.stores.base import Store, url_scheme

__all__ = ["PostgreSQLStore", "register_stores"]

CONNECT_TIMEOUT_S = 5
# a fixed key: every process creating this package's schema takes the same lock
_SCHEMA_LOCK_KEY = zlib.crc32(b"rubix_integration.schema")


class PostgreSQLStore(Store):
    """A PostgreSQL database (``postgresql+psycopg://user:password@host:port/dbname``)."""

    name: ClassVar[str] = "postgresql"
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    driver: ClassVar[str] = "psycopg"
    install_hint: ClassVar[str] = "pip install 'psycopg[binary]'"

    @classmethod
    def normalise_url(cls, url: str) -> str:
        url = super().normalise_url(url)
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise UnknownStoreError(
                f"postgresql store: {mask_url(url)} is not a URL of the form "
                "postgresql+psycopg://user@host/dbname",
                url=mask_url(url), backend=cls.name,
            )
        _, plus, dbapi = scheme.partition("+")
        if plus and dbapi.lower() != "psycopg":
            raise UnknownStoreError(
                f"postgresql store: driver {dbapi!r} in {mask_url(url)} is not supported; "
                "use postgresql+psycopg:// (psycopg 3)",
                url=mask_url(url), backend=cls.name,
            )
        assert url_scheme(url) in cls.schemes
        url = f"postgresql+psycopg://{rest}"
        parsed = sa.engine.make_url(url)
        query = parsed.query
        if not (parsed.host or parsed.database
                or any(query.get(k) for k in ("host", "hostaddr", "dbname"))):
            # libpq would fill both in from its defaults and create the tables wherever it lands
            raise cls.url_error(url, "names neither a host nor a database (say which server "
                                     "and database: //user@host/dbname, or ///dbname for the "
                                     "local socket)")
        return url

    def _create_engine(self) -> Engine:
        query = sa.engine.make_url(self.url).query
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in query:
            connect_args["application_name"] = "rubix_integration"
        return sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)

    def libpq_conninfo(self) -> str:
        """The URL as a libpq connection string (``host=… dbname=…``), for other clients."""
        from psycopg.conninfo import make_conninfo

        url = sa.engine.make_url(self.url)
        params: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "dbname": url.database,
            "user": url.username,
            "password": url.password,
        }
        for key, value in url.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def _schema_lock(self, conn: Connection) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))

    def _copy_rows(
        self, conn: Connection, table: sa.Table, names: Sequence[str],
        rows: Iterator[tuple[Any, ...]],
    ) -> int:
        target = self._quoted_insert_target(conn, table, names)
        # the psycopg connection under SQLAlchemy's, inside the same transaction
        raw: Any = conn.connection.dbapi_connection
        count = 0
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def _server_version(self, conn: Connection) -> str:
        return str(conn.exec_driver_sql("SHOW server_version").scalar())


@hookimpl
def register_stores() -> list[type[Store]]:
    """Register :class:`PostgreSQLStore`."""
    return [PostgreSQLStore]
