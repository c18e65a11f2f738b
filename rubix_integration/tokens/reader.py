"""Reading a node's ``rubix.db`` without ever writing to the node's folder.

A database in rollback-journal mode with no journal beside it is read in place through a read-only
connection inside one read transaction (a consistent snapshot; SQLite creates no file). A
database in WAL mode, or with a ``-wal`` or ``-journal`` file beside it, cannot be opened read-only
without SQLite creating or writing ``-wal``/``-shm`` files next to it, so its files are copied
into a private folder first, and the copy is used only when the originals did not change while
they were copied (retried a bounded number of times). Only regular files are read: ``rubix.db``
may be a symbolic link to one, its ``-wal`` and ``-journal`` files may not be links at all, and
every copy stops at the size the file had when it was opened.

Values are checked as they are read, so that every store can hold them: NUL characters in text
become U+FFFD (PostgreSQL text cannot hold NUL; U+FFFD is what undecodable bytes already become),
and numbers out of their column's range, numbers that are not finite, text where a number belongs
and token ids or DIDs too long to index become NULL. Each such value is counted.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from rubix_integration.errors import NodeDatabaseError
from rubix_integration.tokens.discover import fingerprint

__all__ = [
    "FT_COLUMNS",
    "MAX_KEY_LENGTH",
    "TOKEN_COLUMNS",
    "TokenRow",
    "open_snapshot",
    "parse_timestamp",
    "read_tokens",
]

SQLITE_MAGIC = b"SQLite format 3\x00"

#: Longest token id or DID kept (a CID or a DID is under 100 characters); a longer one is stored
#: as NULL, since PostgreSQL cannot index it.
MAX_KEY_LENGTH = 512
# the range of the store's 32-bit integer columns (``sync_status``)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# SQLite calls the progress handler after this many virtual machine instructions
_PROGRESS_STEPS = 50_000
_COPY_CHUNK = 1 << 20

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
    if lowered == "interrupted":
        return _fail(db_path, "interrupted", "reading was interrupted")
    if "locked" in lowered or "busy" in lowered:
        return _fail(db_path, "busy", f"database is busy: {text}")
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return _fail(db_path, "corrupt", f"database is corrupt: {text}")
    if "unable to open" in lowered or "readonly" in lowered:
        return _fail(db_path, "cannot_open", f"cannot open: {text}")
    return _fail(db_path, "corrupt", f"cannot be read: {text}")


def _open_regular(db_path: Path, path: str, *, follow: bool) -> tuple[int, int]:
    """Open ``path`` for reading without blocking (a FIFO would wait for a writer forever);
    return the descriptor and the size, or refuse anything but a regular file (and, unless
    ``follow``, a symbolic link). ``FileNotFoundError`` passes through."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    name = Path(path).name
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise _fail(db_path, "unsafe_file",
                        f"{name} is a symbolic link; it is not followed") from exc
        if exc.errno == errno.ENXIO:  # a socket
            raise _fail(db_path, "not_a_file", f"{name} is not a regular file") from exc
        raise _fail(db_path, "cannot_open", f"cannot open {name}: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "not_a_file" if follow else "unsafe_file"
        raise _fail(db_path, kind, f"{name} is not a regular file")
    return fd, info.st_size


def _header(db_path: Path) -> bytes:
    try:
        fd, _ = _open_regular(db_path, str(db_path), follow=True)
    except FileNotFoundError as exc:
        raise _fail(db_path, "cannot_open", f"cannot open: {exc.strerror or exc}") from exc
    try:
        return os.read(fd, 100)
    except OSError as exc:
        raise _fail(db_path, "cannot_open", f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


@contextmanager
def open_snapshot(
    db_path: Path,
    *,
    tmp_dir: Path | None = None,
    retries: int = 5,
    busy_timeout: float = 5.0,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[sqlite3.Connection]:
    """Yield a connection seeing one consistent state of ``db_path``; never write beside it.

    ``cancelled`` is polled while files are copied and while SQLite works (from its progress
    handler); once it returns true, the work stops with kind ``interrupted``.

    Raises :class:`NodeDatabaseError` (``not_sqlite``, ``not_a_file``, ``unsafe_file``,
    ``corrupt``, ``cannot_open``, ``busy``, ``interrupted``).
    """
    header = _header(db_path)
    if len(header) == 0:
        raise _fail(db_path, "not_sqlite", "file is empty, not a SQLite database")
    if not header.startswith(SQLITE_MAGIC):
        raise _fail(db_path, "not_sqlite", "not a SQLite database (bad header)")
    wal_mode = len(header) > 19 and header[18] == 2
    # lexists: a link to nowhere is still a file SQLite would try to use
    beside = [s for s in ("-wal", "-journal") if os.path.lexists(f"{db_path}{s}")]
    if not wal_mode and not beside:
        opened = _open_in_place(db_path, busy_timeout)
    else:
        opened = _open_copy(db_path, tmp_dir, retries, busy_timeout, cancelled)
    with opened as conn:
        if cancelled is not None:
            conn.set_progress_handler(lambda: 1 if cancelled() else 0, _PROGRESS_STEPS)
        yield conn


@contextmanager
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


def _copy_bounded(db_path: Path, src: str, dst: str, *, follow: bool,
                  cancelled: Callable[[], bool] | None) -> None:
    """Copy at most as many bytes as ``src`` held when it was opened: a file that grows while
    it is copied (or a device that never ends) cannot fill the disk."""
    fd, size = _open_regular(db_path, src, follow=follow)
    try:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            left = size
            while left > 0:
                if cancelled is not None and cancelled():
                    raise _fail(db_path, "interrupted", "copying was interrupted")
                chunk = os.read(fd, min(_COPY_CHUNK, left))
                if not chunk:
                    break  # truncated meanwhile: the fingerprint check retries
                os.write(out, chunk)
                left -= len(chunk)
        finally:
            os.close(out)
    finally:
        os.close(fd)


@contextmanager
def _open_copy(
    db_path: Path, tmp_dir: Path | None, retries: int, busy_timeout: float,
    cancelled: Callable[[], bool] | None = None,
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
                    if os.path.lexists(src):
                        # the database may be a link to a regular file; its side files never
                        _copy_bounded(db_path, src, dst, follow=suffix == "",
                                      cancelled=cancelled)
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
        except sqlite3.Error as exc:
            raise _classify(db_path, exc) from exc
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
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
        # a zone offset can carry year 1 or 9999 past the range of a datetime
        return parsed.astimezone(timezone.utc), True
    except (ValueError, OverflowError):
        return None, False


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
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


# Each converter below takes ``bad``, a one-item counter of values that could not be kept as read.


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: object, bad: list[int]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    if not text.strip():
        return None
    if "\x00" in text:
        bad[0] += 1
        text = text.replace("\x00", "\ufffd")
    return text


def _key(value: object, bad: list[int]) -> str | None:
    """A token id or DID: text, NULL when too long to index."""
    text = _text(value, bad)
    if text is not None and len(text) > MAX_KEY_LENGTH:
        bad[0] += 1
        return None
    return text


def _float(value: object, bad: list[int]) -> float | None:
    if _blank(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        bad[0] += 1
        return None
    if not math.isfinite(number):
        bad[0] += 1
        return None
    return number


def _int32(value: object, bad: list[int]) -> int | None:
    """An integer that fits the store's 32-bit column (text such as ``"7"`` or ``"7.0"`` too)."""
    if _blank(value):
        return None
    number: int
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        try:
            number = int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # not a number, NaN, infinity
            bad[0] += 1
            return None
    if not _INT32_MIN <= number <= _INT32_MAX:
        bad[0] += 1
        return None
    return number


def _bool(value: object, bad: list[int]) -> bool | None:
    if _blank(value):
        return None
    if isinstance(value, (int, float)):
        return bool(value)
    text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    text = text.strip().lower()
    if text in ("1", "true", "t", "yes", "y"):
        return True
    if text in ("0", "false", "f", "no", "n"):
        return False
    bad[0] += 1
    return None


def _status(value: object, bad: list[int]) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _text(value, bad)


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
    batch: int = 2000, bad_values: list[int] | None = None,
) -> Iterator[TokenRow]:
    """Yield every token of ``TokensTable`` then ``FTTokenTable``, normalised, streaming.

    Raises :class:`NodeDatabaseError` ``no_tokens_table`` when ``TokensTable`` is missing and
    ``corrupt`` when a page cannot be read. ``bad_timestamps[0]`` counts unparsable timestamps
    (stored as NULL); ``bad_values[0]`` counts other values the store could not hold as read
    (see the module's docstring).
    """
    counter = bad_timestamps if bad_timestamps is not None else [0]
    if not counter:
        counter.append(0)
    bad = bad_values if bad_values is not None else [0]
    if not bad:
        bad.append(0)
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
                        yield _token_row(raw, counter, bad)
                else:
                    for raw in chunk:
                        yield _row(kind, dict(zip(wanted, raw, strict=True)), counter, bad)
    except sqlite3.Error as exc:
        raise _classify(db_path, exc) from exc


def _row(kind: str, values: dict[str, Any], counter: list[int], bad: list[int]) -> TokenRow:
    created, ok1 = parse_timestamp(values.get("created_at"))
    updated, ok2 = parse_timestamp(values.get("updated_at"))
    if not (ok1 and ok2):
        counter[0] += (not ok1) + (not ok2)
    return TokenRow(
        kind,
        _key(values.get("token_id"), bad),
        _text(values.get("parent_token_id"), bad),
        _float(values.get("token_value"), bad),
        _key(values.get("did"), bad),
        _status(values.get("token_status"), bad),
        _text(values.get("token_state_hash"), bad),
        _text(values.get("transaction_id"), bad),
        _bool(values.get("added"), bad),
        _int32(values.get("sync_status"), bad),
        _text(values.get("ft_name"), bad),
        _key(values.get("owner_did"), bad),
        _key(values.get("creator_did"), bad),
        created,
        updated,
    )


def _token_row(raw: tuple[Any, ...], counter: list[int], bad: list[int]) -> TokenRow:
    """A ``TokensTable`` row in :data:`TOKEN_COLUMNS` order (the hot path of a sync: the common
    value of each column is taken as it is after a few cheap checks)."""
    (token_id, parent, value, did, status, state_hash, transaction, added, sync_status,
     created_raw, updated_raw) = raw
    created, ok1 = parse_timestamp(created_raw)
    updated, ok2 = parse_timestamp(updated_raw)
    if not (ok1 and ok2):
        counter[0] += (not ok1) + (not ok2)
    return TokenRow(
        "token",
        token_id if type(token_id) is str and token_id.strip() and "\x00" not in token_id
        and len(token_id) <= MAX_KEY_LENGTH else _key(token_id, bad),
        parent if type(parent) is str and parent.strip() and "\x00" not in parent
        else _text(parent, bad),
        value if type(value) is float and math.isfinite(value) else _float(value, bad),
        did if type(did) is str and did.strip() and "\x00" not in did
        and len(did) <= MAX_KEY_LENGTH else _key(did, bad),
        str(status) if type(status) is int else _status(status, bad),
        state_hash if type(state_hash) is str and state_hash.strip() and "\x00" not in state_hash
        else _text(state_hash, bad),
        transaction if type(transaction) is str and transaction.strip()
        and "\x00" not in transaction else _text(transaction, bad),
        bool(added) if type(added) is int else _bool(added, bad),
        sync_status if type(sync_status) is int and _INT32_MIN <= sync_status <= _INT32_MAX
        else _int32(sync_status, bad),
        None,
        None,
        None,
        created,
        updated,
    )
