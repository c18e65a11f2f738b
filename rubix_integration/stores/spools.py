"""Row spools: rows written to a scratch file by one process, loaded into the store by another.

A spool holds rows in a fixed column order. Which kind a store takes is the store's choice
(``spool_kind``); how it replaces rows with a spool's is the store's ``load_spool``. A store that
declares neither gets the defaults here: pickled batches, bulk-inserted in one transaction.

- ``"pickle"``: batches of tuples, pickled one after the other; dates as ``datetime`` objects.
- ``"sqlite"``: a SQLite file with one unindexed table ``rows``; dates as the naive UTC text
  SQLAlchemy keeps in SQLite, so a SQLite store can attach the file and copy every row with one
  ``INSERT … SELECT`` without a row passing through Python.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = ["PickleSpool", "SQLiteSpool", "Spool", "load_spool", "spool_class", "unspool"]


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


def delete_rows(conn: Connection, table: sa.Table, key: tuple[str, Any]) -> None:
    """Delete the rows of ``table`` whose column ``key[0]`` equals ``key[1]``."""
    conn.execute(table.delete().where(table.c[key[0]] == key[1]))
