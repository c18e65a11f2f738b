"""The default store: one SQLite file, zero set-up.

Each connection runs in WAL mode with a busy timeout, ``synchronous=NORMAL`` and foreign keys on.
Python's sqlite3 module is told not to manage transactions; SQLAlchemy emits ``BEGIN`` itself, and
:meth:`SQLiteStore.transaction` asks for ``BEGIN IMMEDIATE`` so that concurrent writers queue on
the busy timeout instead of failing when a read lock cannot be upgraded.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from rubix_integration.errors import StoreError, StoreUnavailableError
from rubix_integration.stores import _json
from rubix_integration.stores.base import Store
from rubix_integration.stores.primitives import PRIMITIVES, UPSERT_BATCH

__all__ = ["SQLiteStore"]

_BEGIN_OPTION = "rubix_sqlite_begin"
_BUSY_TIMEOUT_S = 30.0


class SQLiteStore(Store):
    """A SQLite file (``sqlite:///path/to.db``), or memory (``sqlite://``) for throwaway use."""

    name: ClassVar[str] = "sqlite"
    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    driver: ClassVar[str] = "sqlite3"
    install_hint: ClassVar[str] = "a Python built with the sqlite3 module"
    primitives: ClassVar[frozenset[str]] = frozenset(PRIMITIVES)

    @property
    def database_path(self) -> Path | None:
        """The database file, or ``None`` for an in-memory database."""
        database = sa.engine.make_url(self.url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database).expanduser()

    def _prepare_folder(self, path: Path) -> None:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"sqlite store {self.masked_url}: cannot create the folder {folder}: "
                f"{exc.strerror or exc}",
                url=self.masked_url, backend=self.name,
            ) from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreUnavailableError(
                f"sqlite store {self.masked_url}: the folder {folder} is not writable",
                url=self.masked_url, backend=self.name,
            )

    def _unavailable_reason(self, exc: BaseException) -> str:
        reason = super()._unavailable_reason(exc)
        path = self.database_path
        return f"{reason} (file {path})" if path is not None else reason

    def _create_engine(self) -> Engine:
        path = self.database_path
        kwargs: dict[str, Any] = {}
        if path is None:
            # every connection to ":memory:" would be a different database
            kwargs["poolclass"] = StaticPool
        else:
            self._prepare_folder(path)
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False},
            **kwargs,
        )
        sa.event.listen(engine, "connect", _on_connect)
        sa.event.listen(engine, "begin", _on_begin)
        return engine

    def _begin(self, conn: Connection) -> None:
        conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})

    #: Row spools this store loads in C (see :mod:`rubix_integration.stores.spools`).
    spool_kind: ClassVar[str] = "sqlite"

    @contextmanager
    def load_spool(self, table: sa.Table, path: str, columns: Sequence[str], *,
                   key: tuple[str, Any]) -> Iterator[Connection]:
        """Replace the rows of ``table`` whose ``key[0]`` is ``key[1]`` with a SQLite spool's,
        in one transaction that yields before it commits; no row passes through Python."""
        from rubix_integration.stores.spools import SQLiteSpool, delete_rows

        with self.attached({SQLiteSpool.schema: path}) as conn:
            delete_rows(conn, table, key)
            conn.exec_driver_sql(SQLiteSpool.copy_sql(table.name, columns))
            yield conn

    @contextmanager
    def attached(self, databases: Mapping[str, str | os.PathLike[str]]) -> Iterator[Connection]:
        """Like :meth:`transaction`, with other SQLite files attached under the given schema
        names for the transaction's length (``INSERT INTO t SELECT … FROM name.t`` copies rows
        without passing them through Python). They are detached afterwards."""
        with self.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            done: list[str] = []
            try:
                for name, path in databases.items():
                    if not name.isidentifier():
                        raise ValueError(f"not a schema name: {name!r}")
                    try:
                        raw.execute(f'ATTACH DATABASE ? AS "{name}"', (os.fspath(path),))
                    except sqlite3.Error as exc:
                        raise StoreError(
                            f"sqlite store {self.masked_url}: cannot attach {path}: {exc}",
                            backend=self.name) from exc
                    done.append(name)
                with self._transaction_on(conn):
                    yield conn
            finally:
                for name in done:
                    try:
                        raw.execute(f'DETACH DATABASE "{name}"')
                    except sqlite3.Error:
                        conn.invalidate()  # never hand the pool a connection still attached
                        break

    def _schema_lock(self, conn: Connection) -> None:
        # the transaction already holds the write lock (BEGIN IMMEDIATE), and SQLite DDL is
        # transactional: a second process waits, then sees the tables and creates nothing
        if not conn.in_transaction():  # pragma: no cover - create_schema always runs in one
            raise RuntimeError("schema lock outside a transaction")

    def _copy_rows(
        self, conn: Connection, table: sa.Table, names: Sequence[str],
        rows: Iterator[tuple[Any, ...]],
    ) -> int:
        target = self._quoted_insert_target(conn, table, names)
        marks = ", ".join("?" for _ in names)
        count = 0

        def counted() -> Iterator[tuple[Any, ...]]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        raw: Any = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.executemany(f"INSERT INTO {target} VALUES ({marks})", counted())
        finally:
            cursor.close()
        return count

    def _server_version(self, conn: Connection) -> str:
        return sqlite3.sqlite_version

    # --- primitives ----------------------------------------------------------------------------

    def _upsert(self, conn: Connection, table: sa.Table, names: list[str], keys: list[str],
                update: list[str], rows: list[Mapping[str, Any]]) -> int:
        from sqlalchemy.dialects.sqlite import insert

        def on_conflict(stmt: Any) -> Any:
            if not update:
                return stmt.on_conflict_do_nothing(index_elements=keys)
            excluded = stmt.excluded
            # rows whose values are all the same are skipped: no write, not counted
            return stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c: excluded[c] for c in update},
                where=sa.or_(*(table.c[c].is_distinct_from(excluded[c]) for c in update)))

        if len(rows) > UPSERT_BATCH:
            # one single-row statement run by executemany: compiled once (and cached), where a
            # multi-row VALUES statement is compiled again for every batch; the driver sums the
            # rows each execution changed, so the count is the same
            return max(0, conn.execute(on_conflict(insert(table)), rows).rowcount)
        count = 0
        for start in range(0, len(rows), UPSERT_BATCH):
            stmt = on_conflict(insert(table).values(list(rows[start:start + UPSERT_BATCH])))
            count += max(0, conn.execute(stmt).rowcount)
        return count

    def _upsert_stamped(self, conn: Connection, table: sa.Table, names: list[str],
                        rows: Sequence[tuple[Any, ...]], values: dict[str, Any]) -> int:
        # one single-row statement, built once, run by the driver's executemany over the tuples
        # as given, each followed by the fixed values and its stamp (a block of consecutive
        # stamps, reserved under the write lock as for stamp_each): no mapping per row. Columns
        # whose type converts values for the driver take the general path.
        plan = _stamped_plan(conn.dialect, table, tuple(names), tuple(values))
        if plan is None:
            return super()._upsert_stamped(conn, table, names, rows, values)
        sql, processors = plan
        width = len(names)
        if set(map(type, rows)) != {tuple}:
            rows = [tuple(r) for r in rows]
        if set(map(len, rows)) != {width}:
            raise ValueError(f"every row gives {width} values ({', '.join(names)})")
        fixed = (itertools.repeat(p(v) if p is not None else v)
                 for v, p in zip(values.values(), processors, strict=True))
        count = len(rows)
        first = self.store_clock.reserve(conn, table, count)
        # each row's tail: the fixed values, the node id, its stamp
        tails = zip(*fixed, itertools.repeat(self.node_id), range(first, first + count))
        return max(0, conn.exec_driver_sql(sql, list(map(operator.add, rows, tails))).rowcount)

    def _dialect_insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def _locked(self, query: sa.Select[Any], skip_locked: bool) -> sa.Select[Any]:
        # SQLite locks the whole database for writing: the transaction (BEGIN IMMEDIATE) already
        # keeps other claimers out until it ends
        return query

    def _claim_update(self, conn: Connection, table: sa.Table, query: sa.Select[Any],
                      values: dict[str, Any], per_row: dict[str, Sequence[Any]],
                      carry: list[str], returning: list[sa.ColumnElement[Any]],
                      hints: list[str]) -> list[tuple[Any, ...]]:
        # the write lock is held: read the rows, then change them one by one (no round trips)
        key = query.selected_columns[0]
        found = conn.execute(query).all()
        out: list[tuple[Any, ...]] = []
        for i, row in enumerate(found):
            sets = {**values, **{name: seq[i] for name, seq in per_row.items()}}
            if "change_version" in table.c:
                sets = self.stamp(table, [sets])[0]
            changed = conn.execute(
                sa.update(table).where(table.c[key.name] == row[0]).values(sets)
                .returning(*returning)).one()
            out.append((*changed, *(row._mapping[c] for c in carry)))
        return out

    def _update_each(self, conn: Connection, table: sa.Table, key: str,
                     items: list[Mapping[str, Any]], assign: list[str], expect: dict[str, str],
                     values: dict[str, Any], where: list[sa.ColumnElement[bool]],
                     returning: list[sa.ColumnElement[Any]]) -> list[sa.Row[Any]]:
        out: list[sa.Row[Any]] = []
        for item in items:
            conditions = [table.c[key] == item[key], *where]
            conditions += [table.c[col] == item[field] for col, field in expect.items()
                           if item[field] is not None]
            sets = {**values, **{col: item[col] for col in assign}}
            if "change_version" in table.c:
                sets = self.stamp(table, [sets])[0]
            row = conn.execute(sa.update(table).where(*conditions).values(sets)
                               .returning(*returning)).first()
            if row is not None:
                out.append(row)
        return out

    def _json_path_equals(self, column: Any, path: tuple[str, ...],
                          value: Any) -> sa.ColumnElement[bool]:
        return _json.sqlite_path_equals(column, path, value)

    def _json_array(self, op: str, column: Any, arg: Any) -> sa.ColumnElement[bool]:
        build = {"contains": _json.sqlite_array_contains, "within": _json.sqlite_array_within,
                 "overlaps": _json.sqlite_array_overlaps}[op]
        return build(column, arg)

    def _next_versions(self, conn: Connection | None, table: sa.Table,
                       count: int) -> list[Any]:
        # the write lock the transaction holds keeps the table's greatest version still while
        # the stamps above it are written
        if count == 1 and conn is None:
            return [self.store_clock.stamp_expression(table)]
        if conn is None:
            raise StoreError("stamping several rows needs the connection that writes them",
                             url=self.masked_url, backend=self.name)
        return list(self.store_clock.stamps(conn, table, count))

    def _stamp_each(self, conn: Connection, table: sa.Table, count: int,
                    ordinal: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # a block of consecutive stamps, numbered by the statement (the write lock is held)
        first = self.store_clock.reserve(conn, table, count)
        return sa.literal(first - 1, sa.BigInteger()) + ordinal


@functools.lru_cache(maxsize=64)
def _stamped_plan(dialect: sa.engine.Dialect, table: sa.Table, names: tuple[str, ...],
                  fixed: tuple[str, ...]) -> tuple[str, tuple[Any, ...]] | None:
    """The upsert :meth:`SQLiteStore._upsert_stamped` runs for rows of ``names`` followed by the
    ``fixed`` columns and the stamp columns (the statement ``_upsert`` builds: by primary key,
    every given column updated where one differs), and the bind processors of the ``fixed``
    columns; ``None`` when a column of ``names`` has a processor (its values need converting)."""
    def processor(name: str) -> Any:
        return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

    if any(processor(n) is not None for n in names):
        return None
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    columns = [*names, *fixed, "origin_node", "change_version"]
    keys = [c.name for c in table.primary_key.columns]
    update = [quote(c) for c in columns if c not in keys]
    sql = (f"INSERT INTO {target} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)}) "
           f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in update)
           + " WHERE " + " OR ".join(f"{target}.{c} IS NOT excluded.{c}" for c in update))
    return sql, tuple(processor(c) for c in fixed)


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event emit BEGIN instead of the sqlite3 module's implicit one
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        _enable_wal(cursor)
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # switching a fresh file to WAL needs a moment of exclusive access; another process opening
    # it at the same instant can make the switch fail at once rather than wait
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")
