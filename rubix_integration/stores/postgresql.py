"""PostgreSQL, for many machines writing to one place, through psycopg 3.

``postgresql://`` and ``postgres://`` URLs are read as ``postgresql+psycopg://``. Bulk writes use
``COPY ... FROM STDIN``; schema creation is serialised by a transaction-scoped advisory lock, since
two concurrent ``CREATE TABLE`` of one name would otherwise fail in the loser.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rubix_integration._settings import mask_url
from rubix_integration.errors import UnknownStoreError
from rubix_integration.stores import _json
from rubix_integration.stores.base import Store, url_scheme
from rubix_integration.stores.primitives import PRIMITIVES

__all__ = ["PostgreSQLStore"]

CONNECT_TIMEOUT_S = 5
# a fixed key: every process creating this package's schema takes the same lock
_SCHEMA_LOCK_KEY = zlib.crc32(b"rubix_integration.schema")


class PostgreSQLStore(Store):
    """A PostgreSQL database (``postgresql+psycopg://user:password@host:port/dbname``)."""

    name: ClassVar[str] = "postgresql"
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    driver: ClassVar[str] = "psycopg"
    install_hint: ClassVar[str] = "pip install 'psycopg[binary]'"
    primitives: ClassVar[frozenset[str]] = frozenset(PRIMITIVES)
    json_numbers_as_numeric: ClassVar[bool] = True
    reuses_connections: ClassVar[bool] = True

    @contextmanager
    def load_spool(self, table: sa.Table, path: str, columns: Sequence[str], *,
                   key: tuple[str, Any]) -> Iterator[Connection]:
        """Replace the rows of ``table`` whose ``key[0]`` is ``key[1]`` with a pickle spool's
        (``COPY``), in one transaction that yields before it commits."""
        from rubix_integration.stores.spools import delete_rows, unspool

        with self.transaction() as conn:
            # two machines replacing the same rows take turns instead of interleaving
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:p))"),
                         {"p": str(key[1])})
            delete_rows(conn, table, key)
            for chunk in unspool(path):
                self.bulk_insert(table, chunk, columns=columns, connection=conn, convert=False)
            yield conn

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

    # --- primitives ----------------------------------------------------------------------------

    def _upsert(self, conn: Connection, table: sa.Table, names: list[str], keys: list[str],
                update: list[str], rows: list[Mapping[str, Any]]) -> int:
        # COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT
        if not conn.in_transaction():
            with conn.begin():
                return self._upsert(conn, table, names, keys, update, rows)
        preparer = conn.dialect.identifier_preparer
        staging = preparer.quote(f"rubix_upsert_{uuid.uuid4().hex}")
        target = preparer.format_table(table)
        cols = ", ".join(preparer.quote(n) for n in names)
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "
            f"SELECT {cols} FROM {target} WITH NO DATA")
        converters = self._upsert_converters(conn, table, names)
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([v if c is None else c(v)
                                for v, c in zip((row[n] for n in names), converters,
                                                strict=True)])
        conflict = ", ".join(preparer.quote(k) for k in keys)
        if update:
            targets = ", ".join(f"{target}.{preparer.quote(c)}" for c in update)
            incoming = ", ".join(f"EXCLUDED.{preparer.quote(c)}" for c in update)
            sets = ", ".join(f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}"
                             for c in update)
            # a row whose values are all the same is not rewritten (no dead tuple, not counted)
            action = (f"DO UPDATE SET {sets} WHERE ROW({targets}) IS DISTINCT FROM "
                      f"ROW({incoming})")
        else:
            action = "DO NOTHING"
        result = conn.exec_driver_sql(
            f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT ({conflict}) {action}")
        conn.exec_driver_sql(f"DROP TABLE {staging}")
        return max(0, result.rowcount)

    def _upsert_converters(self, conn: Connection, table: sa.Table,
                           names: Sequence[str]) -> list[Callable[[Any], Any] | None]:
        # psycopg adapts JSON values itself, which COPY's text rows do not do: encode them as a
        # Core insert would (None is JSON null unless the type says otherwise)
        out: list[Callable[[Any], Any] | None] = []
        for name, convert in zip(names, self._converters(table, names), strict=True):
            kind = table.c[name].type.dialect_impl(conn.dialect)
            if isinstance(kind, sa.JSON):
                out.append(_json_text(None if kind.none_as_null else "null"))
            else:
                out.append(convert)
        return out

    def _dialect_insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def _locked(self, query: sa.Select[Any], skip_locked: bool) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=skip_locked)

    def _claim_update(self, conn: Connection, table: sa.Table, query: sa.Select[Any],
                      values: dict[str, Any], per_row: dict[str, Sequence[Any]],
                      carry: list[str], returning: list[sa.ColumnElement[Any]],
                      hints: list[str]) -> list[tuple[Any, ...]]:
        from sqlalchemy.dialects.postgresql import ARRAY

        # one statement: claim (skipping rows other claimers hold), number, change, return
        claimed = query.with_for_update(skip_locked=True).cte("rubix_claimed")
        numbered = sa.select(*claimed.c, sa.func.row_number().over().label("rubix_i")).cte(
            "rubix_numbered")
        key = query.selected_columns[0].name
        sets = dict(values)
        where = [table.c[key] == numbered.c[key]]
        for name, seq in per_row.items():
            # the i-th claimed row takes the i-th value
            given = sa.func.unnest(sa.bindparam(f"rubix_{name}", list(seq),
                                                type_=ARRAY(table.c[name].type))
                                   ).table_valued("value", with_ordinality="ord").render_derived(
                                       name=f"rubix_{name}")
            where.append(given.c.ord == numbered.c.rubix_i)
            sets[name] = given.c.value
        if "change_version" in table.c:
            sets = self.stamp(table, [sets])[0]
        stmt = (sa.update(table).where(*where).values(sets)
                .returning(*returning, *(numbered.c[c] for c in carry)))
        for hint in hints:
            conn.exec_driver_sql(f"SET LOCAL {hint}")
        return [tuple(r) for r in conn.execute(stmt)]

    def _update_each(self, conn: Connection, table: sa.Table, key: str,
                     items: list[Mapping[str, Any]], assign: list[str], expect: dict[str, str],
                     values: dict[str, Any], where: list[sa.ColumnElement[bool]],
                     returning: list[sa.ColumnElement[Any]]) -> list[sa.Row[Any]]:
        from sqlalchemy.dialects.postgresql import ARRAY

        # the items as parallel arrays unnested and joined on the key: one statement for the
        # whole batch, the same text for every batch (so compiled once)
        fields = [key, *assign, *(f for f in expect.values() if f not in assign and f != key)]
        column_of = {f: f for f in (key, *assign)} | {f: c for c, f in expect.items()}
        arrays = []
        for f in fields:
            kind = table.c[column_of[f]].type.dialect_impl(conn.dialect)
            if isinstance(kind, sa.JSON):  # as text, cast back where it is assigned
                arrays.append(sa.bindparam(f"rubix_{f}", [json.dumps(item[f]) for item in items],
                                           type_=ARRAY(sa.Text())))
            else:
                arrays.append(sa.bindparam(f"rubix_{f}", [item[f] for item in items],
                                           type_=ARRAY(table.c[column_of[f]].type)))
        given = sa.func.unnest(*arrays).table_valued(*fields).render_derived(name="rubix_items")
        conditions = [table.c[key] == given.c[key], *where]
        conditions += [sa.or_(given.c[f].is_(None), table.c[c] == given.c[f])
                       for c, f in expect.items()]
        sets = {**values, **{col: sa.cast(given.c[col], table.c[col].type) for col in assign}}
        if "change_version" in table.c:
            sets = self.stamp(table, [sets])[0]
        stmt = sa.update(table).where(*conditions).values(sets).returning(*returning)
        return list(conn.execute(stmt).all())

    def _json_path_equals(self, column: Any, path: tuple[str, ...],
                          value: Any) -> sa.ColumnElement[bool]:
        return _json.pg_path_equals(column, path, value)

    def _json_array(self, op: str, column: Any, arg: Any) -> sa.ColumnElement[bool]:
        build = {"contains": _json.pg_array_contains, "within": _json.pg_array_within,
                 "overlaps": _json.pg_array_overlaps}[op]
        return build(column, arg)

    def _next_versions(self, conn: Connection | None, table: sa.Table,
                       count: int) -> list[Any]:
        # one sequence per replicated table, declared with its model, kept on the hybrid clock
        # (see rubix_integration.stores.replicated)
        sequence = sa.Sequence(f"{table.name}_change_version_seq")
        clock = self.store_clock
        if clock.due(sequence.name):
            with self.transaction() as own:
                clock.sync_sequence(own, sequence.name)
        if conn is None:
            return [sequence.next_value() for _ in range(count)]
        # numbers for many rows at once: plain values suit executemany and COPY alike
        return list(conn.execute(sa.select(sequence.next_value()).select_from(
            sa.func.generate_series(1, count))).scalars())

    def _stamp_each(self, conn: Connection, table: sa.Table, count: int,
                    ordinal: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # nextval is evaluated once per row written
        return self._next_versions(None, table, 1)[0]  # type: ignore[no-any-return]


def _json_text(none: str | None) -> Callable[[Any], Any]:
    """A converter writing a value as JSON text, ``None`` as ``none``."""
    def convert(value: Any) -> Any:
        return none if value is None else json.dumps(value)

    return convert
