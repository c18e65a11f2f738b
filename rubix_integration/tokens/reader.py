"""Reading a node's ``rubix.db`` without ever writing to the node's folder.

A database in rollback-journal mode with no journal beside it is read in place through a read-only
connection inside one read transaction (a consistent snapshot; SQLite creates no file). A
database in WAL mode, or with a ``-wal`` or ``-journal`` file beside it, cannot be opened read-only
without SQLite creating or writing ``-wal``/``-shm`` files next to it, so its files are copied
into a private folder first, and the copy is used only when the originals did not change while
they were copied (retried a bounded number of times).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from rubix_integration.errors import NodeDatabaseError
from rubix_integration.tokens.discover import fingerprint

__all__ = [
    "FT_COLUMNS",
    "TOKEN_COLUMNS",
    "TokenRow",
    "open_snapshot",
    "parse_timestamp",
    "read_tokens",
]

SQLITE_MAGIC = b"SQLite format 3\x00"

TOKEN_COLUMNS = ("token_id", "parent_token_id", "token_value", "did", "token_status",
                 "token_state_hash", "transaction_id", "added", "sync_status", "created_at",
                 "updated_at")
FT_COLUMNS = ("token_id", "ft_name", "owner_did", "creator_did", "token_status", "token_value",
              "token_state_hash", "transaction_id", "created_at", "updated_at")


class TokenRow(NamedTuple):
    """One row of ``TokensTable`` (kind ``"token"``) or ``FTTokenTable`` (kind ``"ft"``),
    normalised: empty strings are ``None``, timestamps are UTC datetimes or ``None``."""

    kind: str
    token_id: str | None
    parent_token_id: str | None
    token_value: float | None
    did: str | None
    token_status: str | None
    token_state_hash: str | None
    transaction_id: str | None
    added: bool | None
    sync_status: int | None
    ft_name: str | None
    owner_did: str | None
    creator_did: str | None
    created_at: datetime | None
    updated_at: datetime | None


# --- opening --------------------------------------------------------------------------------------


def _fail(db_path: Path, kind: str, message: str) -> NodeDatabaseError:
    return NodeDatabaseError(f"{db_path}: {message}", db_path=str(db_path), kind=kind)


def _classify(db_path: Path, exc: sqlite3.Error) -> NodeDatabaseError:
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return _fail(db_path, "busy", f"database is busy: {text}")
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return _fail(db_path, "corrupt", f"database is corrupt: {text}")
    if "unable to open" in lowered or "readonly" in lowered:
        return _fail(db_path, "cannot_open", f"cannot open: {text}")
    return _fail(db_path, "corrupt", f"cannot be read: {text}")


def _header(db_path: Path) -> bytes:
    try:
        with open(db_path, "rb") as fh:
            return fh.read(100)
    except OSError as exc:
        raise _fail(db_path, "cannot_open", f"cannot open: {exc.strerror or exc}") from exc


@contextmanager
def open_snapshot(
    db_path: Path,
    *,
    tmp_dir: Path | None = None,
    retries: int = 5,
    busy_timeout: float = 5.0,
) -> Iterator[sqlite3.Connection]:
    """Yield a connection seeing one consistent state of ``db_path``; never write beside it.

    Raises :class:`NodeDatabaseError` (``not_sqlite``, ``corrupt``, ``cannot_open``, ``busy``).
    """
    header = _header(db_path)
    if len(header) == 0:
        raise _fail(db_path, "not_sqlite", "file is empty, not a SQLite database")
    if not header.startswith(SQLITE_MAGIC):
        raise _fail(db_path, "not_sqlite", "not a SQLite database (bad header)")
    wal_mode = len(header) > 19 and header[18] == 2
    beside = [s for s in ("-wal", "-journal") if os.path.exists(f"{db_path}{s}")]
    if not wal_mode and not beside:
        yield from _open_in_place(db_path, busy_timeout)
    else:
        yield from _open_copy(db_path, tmp_dir, retries, busy_timeout)


def _open_in_place(db_path: Path, busy_timeout: float) -> Iterator[sqlite3.Connection]:
    uri = f"file:{quote(str(db_path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise _classify(db_path, exc) from exc
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the shared lock
    except sqlite3.Error as exc:
        conn.close()
        raise _classify(db_path, exc) from exc
    try:
        yield conn
    finally:
        conn.close()


def _open_copy(
    db_path: Path, tmp_dir: Path | None, retries: int, busy_timeout: float
) -> Iterator[sqlite3.Connection]:
    folder = Path(tempfile.mkdtemp(prefix="rubix-snapshot-", dir=tmp_dir))
    try:
        copy = folder / "rubix.db"
        delay = 0.05
        for attempt in range(retries + 1):
            before, _ = fingerprint(db_path)
            try:
                for suffix in ("", "-wal", "-journal"):
                    src = f"{db_path}{suffix}"
                    dst = f"{copy}{suffix}"
                    if os.path.exists(dst):
                        os.unlink(dst)
                    if os.path.exists(src):
                        shutil.copyfile(src, dst)
            except FileNotFoundError:
                pass  # a -wal vanished under a checkpoint: the fingerprint check retries
            except OSError as exc:
                raise _fail(db_path, "cannot_open", f"cannot copy: {exc.strerror or exc}") from exc
            after, _ = fingerprint(db_path)
            if before == after:
                break
            if attempt == retries:
                raise _fail(db_path, "busy",
                            f"still changing after {retries + 1} attempts to copy a snapshot")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        try:
            conn = sqlite3.connect(str(copy), timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise _classify(db_path, exc) from exc
        try:
            yield conn
        finally:
            conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- rows -----------------------------------------------------------------------------------------

_TS = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?(?:\s+[A-Za-z][A-Za-z0-9+-]*)?\s*$"
)


def parse_timestamp(value: object) -> tuple[datetime | None, bool]:
    """Parse a gorm/Go timestamp (``2025-01-15 10:30:00.123456789+05:30`` and kin) to UTC.

    Returns ``(value, ok)``: ``(None, True)`` for NULL/empty, ``(None, False)`` when the text
    cannot be parsed. Numbers are Unix seconds. Text without a zone is taken as UTC.
    """
    if value is None:
        return None, True
    if isinstance(value, str):
        text = value
        fast = _fast_timestamp(text)
        if fast is not None:
            return fast, True
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc), True
        except (OverflowError, OSError, ValueError):
            return None, False
    else:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not text.strip():
        return None, True
    m = _TS.match(text)
    if m is None:
        return None, False
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    tz = timezone.utc
    if zone and zone not in ("Z", "UTC"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if offset >= timedelta(hours=24):
            return None, False
        tz = timezone(sign * offset)
    try:
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second or 0), micro, tzinfo=tz)
    except ValueError:
        return None, False
    return parsed.astimezone(timezone.utc), True


_DIGITS = re.compile(r"\d*")


def _fast_timestamp(text: str) -> datetime | None:
    """The common shapes (gorm's, ISO 8601) through the C parser; ``None`` to use the slow path."""
    if len(text) < 19 or text[4] != "-" or text[10] not in " T":
        return None
    if len(text) > 26 and text[19] == ".":
        end = _DIGITS.match(text, 20).end()  # type: ignore[union-attr]
        if end > 26:  # gorm writes nanoseconds; Python keeps microseconds
            text = text[:26] + text[end:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if text.strip() else None


def _float(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        try:
            return int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None


def _bool(value: object) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y"):
        return True
    if text in ("0", "false", "f", "no", "n"):
        return False
    return None


def _status(value: object) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _text(value)


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, str] | None:
    rows = conn.execute(f"PRAGMA table_info({quote_name(table)})").fetchall()
    if not rows:
        return None
    return {str(r[1]).lower(): str(r[1]) for r in rows}


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_name(conn: sqlite3.Connection, wanted: str) -> str | None:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND lower(name) = ?",
        (wanted.lower(),),
    ).fetchone()
    return str(row[0]) if row else None


def count_tokens(conn: sqlite3.Connection, db_path: Path) -> int:
    """How many rows ``read_tokens`` will yield (for progress)."""
    total = 0
    try:
        for table in ("TokensTable", "FTTokenTable"):
            name = _table_name(conn, table)
            if name is not None:
                total += int(conn.execute(f"SELECT count(*) FROM {quote_name(name)}").fetchone()[0])
    except sqlite3.Error as exc:
        raise _classify(db_path, exc) from exc
    return total


def read_tokens(
    conn: sqlite3.Connection, db_path: Path, *, bad_timestamps: list[int] | None = None,
    batch: int = 2000,
) -> Iterator[TokenRow]:
    """Yield every token of ``TokensTable`` then ``FTTokenTable``, normalised, streaming.

    Raises :class:`NodeDatabaseError` ``no_tokens_table`` when ``TokensTable`` is missing and
    ``corrupt`` when a page cannot be read. ``bad_timestamps[0]`` counts unparsable timestamps.
    """
    counter = bad_timestamps if bad_timestamps is not None else [0]
    if not counter:
        counter.append(0)
    try:
        tokens = _table_name(conn, "TokensTable")
        if tokens is None:
            raise _fail(db_path, "no_tokens_table", "has no TokensTable")
        ft = _table_name(conn, "FTTokenTable")
        plans: list[tuple[str, str, Sequence[str]]] = [("token", tokens, TOKEN_COLUMNS)]
        if ft is not None:
            plans.append(("ft", ft, FT_COLUMNS))
        for kind, table, wanted in plans:
            present = _columns(conn, table) or {}
            if "token_id" not in present:
                if kind == "token":
                    raise _fail(db_path, "no_tokens_table", f"{table} has no token_id column")
                continue
            select = ", ".join(quote_name(present[c]) if c in present else "NULL" for c in wanted)
            cursor = conn.execute(f"SELECT {select} FROM {quote_name(table)}")
            while True:
                chunk = cursor.fetchmany(batch)
                if not chunk:
                    break
                if kind == "token":
                    for raw in chunk:
                        yield _token_row(raw, counter)
                else:
                    for raw in chunk:
                        yield _row(kind, dict(zip(wanted, raw, strict=True)), counter)
    except sqlite3.Error as exc:
        raise _classify(db_path, exc) from exc


def _row(kind: str, values: dict[str, Any], counter: list[int]) -> TokenRow:
    created, ok1 = parse_timestamp(values.get("created_at"))
    updated, ok2 = parse_timestamp(values.get("updated_at"))
    if not (ok1 and ok2):
        counter[0] += (not ok1) + (not ok2)
    return TokenRow(
        kind,
        _text(values.get("token_id")),
        _text(values.get("parent_token_id")),
        _float(values.get("token_value")),
        _text(values.get("did")),
        _status(values.get("token_status")),
        _text(values.get("token_state_hash")),
        _text(values.get("transaction_id")),
        _bool(values.get("added")),
        _int(values.get("sync_status")),
        _text(values.get("ft_name")),
        _text(values.get("owner_did")),
        _text(values.get("creator_did")),
        created,
        updated,
    )


def _token_row(raw: tuple[Any, ...], counter: list[int]) -> TokenRow:
    """A ``TokensTable`` row in :data:`TOKEN_COLUMNS` order (the hot path of a sync)."""
    (token_id, parent, value, did, status, state_hash, transaction, added, sync_status,
     created_raw, updated_raw) = raw
    created, ok1 = parse_timestamp(created_raw)
    updated, ok2 = parse_timestamp(updated_raw)
    if not (ok1 and ok2):
        counter[0] += (not ok1) + (not ok2)
    return TokenRow(
        "token",
        token_id if type(token_id) is str and token_id.strip() else _text(token_id),
        parent if type(parent) is str and parent.strip() else _text(parent),
        value if type(value) is float else _float(value),
        did if type(did) is str and did.strip() else _text(did),
        str(status) if type(status) is int else _status(status),
        state_hash if type(state_hash) is str and state_hash.strip() else _text(state_hash),
        transaction if type(transaction) is str and transaction.strip() else _text(transaction),
        bool(added) if type(added) is int else _bool(added),
        sync_status if type(sync_status) is int else _int(sync_status),
        None,
        None,
        None,
        created,
        updated,
    )
