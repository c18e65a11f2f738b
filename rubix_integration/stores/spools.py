"""Row spools: rows written to a scratch file by one process, loaded into the store by another.

A spool holds rows in a fixed column order. Which kind a store takes is the store's choice
(``spool_kind``); how it replaces rows with a spool's is the store's ``load_spool``. A store that
declares neither gets the defaults here: pickled batches, bulk-inserted in one transaction.

- ``"pickle"``: batches of tuples, pickled one after the other; dates as ``datetime`` objects.
- ``"sqlite"``: a SQLite file with one unindexed table ``rows``; dates as the naive UTC text
  SQLAlchemy keeps in SQLite, so a SQLite store can attach the file and copy every row with one
  ``INSERT … SELECT`` without a row passing through Python.

:func:`spooled_rows` makes a spool's rows selectable inside one transaction, for a writer that
merges them with one ``INSERT … SELECT`` of its own: a SQLite store attaches a SQLite spool and
the statement reads the file directly; any other store loads the spool into a staging table
first (and empties it of those rows before the commit).

The kind a run's workers write is chosen before the store is open (:func:`spool_kind_for_url`,
from the URL's scheme); a spool of another kind than the store's still loads, through
:func:`spool_batches`, only slower.
"""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = [
    "PickleSpool",
    "SQLiteSpool",
    "Spool",
    "SpooledRows",
    "load_spool",
    "spool_batches",
    "spool_class",
    "spool_kind",
    "spool_kind_for_url",
    "spooled_rows",
    "unspool",
]


class Spool(Protocol):
    """A spool being written: batches of rows in the spool's column order."""

    suffix: ClassVar[str]
    text_dates: ClassVar[bool]

    def write(self, rows: list[tuple[Any, ...]]) -> None: ...

    def close(self) -> None: ...


class PickleSpool:
    """Rows spooled as pickled batches (read back by the writer, for any store)."""

    suffix: ClassVar[str] = ".pickle"
    text_dates: ClassVar[bool] = False

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self._file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        pickle.dump(rows, self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        self._file.close()


class SQLiteSpool:
    """Rows spooled into a private SQLite file with one unindexed table, ``rows``."""

    suffix: ClassVar[str] = ".sqlite"
    text_dates: ClassVar[bool] = True
    #: The schema name a SQLite store attaches the file under.
    schema: ClassVar[str] = "rubix_spool"

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # a scratch file: nothing to recover after a crash, so no journal and no syncs
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute(f"CREATE TABLE rows ({', '.join(columns)})")
        self._conn.execute("BEGIN")
        self._insert = f"INSERT INTO rows VALUES ({', '.join('?' * len(columns))})"

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(self._insert, rows)

    def close(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
        finally:
            self._conn.close()

    @classmethod
    def copy_sql(cls, table: str, columns: Sequence[str]) -> str:
        """The statement copying the attached spool's rows into ``table``."""
        names = ", ".join(columns)
        return f"INSERT INTO {table} ({names}) SELECT {names} FROM {cls.schema}.rows"


_SPOOLS: dict[str, type[PickleSpool] | type[SQLiteSpool]] = {
    "pickle": PickleSpool, "sqlite": SQLiteSpool}


def spool_class(kind: str) -> type[PickleSpool] | type[SQLiteSpool]:
    """The spool class of ``kind`` (a store's ``spool_kind``)."""
    return _SPOOLS[kind]


def spool_kind(store: Store) -> str:
    """The kind of spool ``store`` loads fastest (``"pickle"`` unless it says otherwise)."""
    return str(getattr(store, "spool_kind", "pickle"))


#: The spool kind of each built-in store's URL scheme (any other scheme: ``"pickle"``).
_KIND_BY_SCHEME = {"sqlite": "sqlite"}


def spool_kind_for_url(url: str) -> str:
    """The spool kind the store of ``url`` most likely loads fastest, found without opening
    or importing it (from the scheme: ``sqlite`` for ``sqlite://``, else ``pickle``)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].strip().lower() if ":" in url else ""
    return _KIND_BY_SCHEME.get(scheme, "pickle")


def spool_kind_of(path: str) -> str:
    """The kind of the spool file at ``path``, from its suffix."""
    for kind, cls in _SPOOLS.items():
        if path.endswith(cls.suffix):
            return kind
    raise ValueError(f"not a spool file: {path}")


def spool_batches(path: str, table: sa.Table,
                  columns: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
    """The batches of the spool at ``path`` (either kind) in ``columns`` order, with values as
    the column types of ``table`` take them: a SQLite spool's date text is read back as UTC
    ``datetime`` objects and its 0/1 as booleans."""
    if spool_kind_of(path) == "pickle":
        yield from unspool(path)
        return
    import sqlalchemy as sa

    dates = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.DateTime)]
    flags = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.Boolean)]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM rows ORDER BY rowid")
        while batch := cursor.fetchmany(2000):
            out = []
            for row in batch:
                values = list(row)
                for i in dates:
                    if values[i] is not None:
                        values[i] = datetime.fromisoformat(values[i]).replace(
                            tzinfo=timezone.utc)
                for i in flags:
                    if values[i] is not None:
                        values[i] = bool(values[i])
                out.append(tuple(values))
            yield out


def unspool(path: str) -> Iterator[list[tuple[Any, ...]]]:
    """The batches of a pickle spool, in order."""
    with open(path, "rb", buffering=1 << 20) as spool:
        while True:
            try:
                yield pickle.load(spool)
            except EOFError:
                return


@contextmanager
def load_spool(store: Store, table: sa.Table, path: str, columns: Sequence[str], *,
               key: tuple[str, Any]) -> Iterator[Connection]:
    """Replace the rows of ``table`` whose column ``key[0]`` equals ``key[1]`` with the spool's,
    in one transaction; yield its connection before the commit, for more writes in it."""
    method = getattr(store, "load_spool", None)
    if method is not None:
        with method(table, path, columns, key=key) as conn:
            yield conn
        return
    with store.transaction() as conn:
        delete_rows(conn, table, key)
        for chunk in unspool(path):
            # the rows already hold what the driver takes
            store.bulk_insert(table, chunk, columns=columns, connection=conn, convert=False)
        yield conn


@dataclass(frozen=True)
class SpooledRows:
    """A spool's rows, selectable in the transaction of ``conn``: ``table`` holds them (with
    rows of other keys, for a staging table: select those of the key); ``order`` numbers them
    in the order they were spooled."""

    conn: Connection
    table: sa.Table
    order: sa.ColumnElement[Any]


@contextmanager
def spooled_rows(store: Store, path: str, columns: Sequence[str], *, staging: sa.Table,
                 order: str, key: tuple[str, Any]) -> Iterator[SpooledRows]:
    """One transaction in which the rows of the spool at ``path`` can be selected: a SQLite
    store attaches a SQLite spool and yields its table; otherwise the rows are loaded into
    ``staging`` (whose column ``order`` numbers them), replacing those of ``key``, and removed
    again before the commit. Leaving with an exception rolls everything back."""
    import sqlalchemy as sa

    attached = getattr(store, "attached", None)
    if spool_kind_of(path) == "sqlite" and spool_kind(store) == "sqlite" and attached:
        table = sa.Table("rows", sa.MetaData(), *(sa.Column(c) for c in columns),
                         sa.Column("rowid", sa.Integer), schema=SQLiteSpool.schema)
        with attached({SQLiteSpool.schema: path}) as conn:
            yield SpooledRows(conn, table, table.c.rowid)
        return
    if spool_kind_of(path) == spool_kind(store):
        loading = load_spool(store, staging, path, columns, key=key)
    else:
        loading = _load_converted(store, staging, path, columns, key=key)
    with loading as conn:
        yield SpooledRows(conn, staging, staging.c[order])
        delete_rows(conn, staging, key)


@contextmanager
def _load_converted(store: Store, table: sa.Table, path: str, columns: Sequence[str], *,
                    key: tuple[str, Any]) -> Iterator[Connection]:
    # a spool of another kind than the store takes: its rows go through the column types
    with store.transaction() as conn:
        delete_rows(conn, table, key)
        for chunk in spool_batches(path, table, columns):
            store.bulk_insert(table, chunk, columns=columns, connection=conn)
        yield conn


def delete_rows(conn: Connection, table: sa.Table, key: tuple[str, Any]) -> None:
    """Delete the rows of ``table`` whose column ``key[0]`` equals ``key[1]``."""
    conn.execute(table.delete().where(table.c[key[0]] == key[1]))
