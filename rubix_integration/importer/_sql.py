"""Plain SQL on a connection's driver cursor, in its transaction (both stores' dialects)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["batch_digest", "execute", "is_database_error", "json_cell", "release",
           "rollback_to", "row", "savepoint", "scalar", "short_error"]


def batch_digest() -> Any:
    """A running hash of row batches (their pickles, in order)."""
    return hashlib.blake2b(digest_size=16)


def execute(conn: Connection, sql: str) -> None:
    """Run ``sql`` (no parameters: nothing in it is read as a placeholder)."""
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def row(conn: Connection, sql: str) -> tuple[Any, ...]:
    """The first row of ``sql``."""
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
        found: tuple[Any, ...] = tuple(cursor.fetchone())
    finally:
        cursor.close()
    return found


def scalar(conn: Connection, sql: str) -> int:
    """The first value of ``sql`` as a number (``NULL``: 0)."""
    return int(row(conn, sql)[0] or 0)


def savepoint(conn: Connection) -> str:
    """Open a savepoint; return its name."""
    name = f"rubix_sp_{uuid.uuid4().hex[:10]}"
    execute(conn, f"SAVEPOINT {name}")
    return name


def rollback_to(conn: Connection, name: str) -> None:
    """Undo what followed savepoint ``name``, and drop it."""
    execute(conn, f"ROLLBACK TO SAVEPOINT {name}")
    release(conn, name)


def release(conn: Connection, name: str) -> None:
    """Keep what followed savepoint ``name``, and drop it."""
    execute(conn, f"RELEASE SAVEPOINT {name}")


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from a database driver (a row or statement the store refused)."""
    orig = getattr(exc, "orig", None) or exc
    root = type(orig).__module__.split(".")[0]
    return root in ("sqlite3", "psycopg", "sqlalchemy") or isinstance(exc, sa.exc.DBAPIError)


def short_error(exc: BaseException) -> str:
    """The driver's message on one line, with its class name."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}"[:500]


def json_cell(value: Any) -> Any:
    """A value for a JSON column: text as it is, anything else encoded (``None`` stays)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
