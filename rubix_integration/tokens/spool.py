"""The rows a sync writes to ``tokenrecords``: their column order and how a batch is built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rubix_integration.tokens.content import Content
    from rubix_integration.tokens.pool import Task
    from rubix_integration.tokens.reader import TokenRow

__all__ = ["COLUMNS", "records", "utc_text"]

#: Column order of the tuples written to ``tokenrecords``.
COLUMNS: tuple[str, ...] = (
    "source_ip", "node_name", "token_kind", "did", "token_id", "created_at", "updated_at",
    "token_status", "parent_token_id", "token_value", "token_state_hash", "transaction_id",
    "added", "sync_status", "ft_name", "owner_did", "creator_did", "ipfs_data", "ipfs_encoding",
    "ipfs_size", "ipfs_fetched", "ipfs_error", "ipfs_mode", "content_name", "content_number",
    "content_creator", "db_path", "ipfs_path", "db_last_modified", "synced_at",
)


def records(chunk: list[TokenRow], contents: list[Content], task: Task, synced_at: datetime,
            text_dates: bool) -> list[tuple[Any, ...]]:
    """The ``tokenrecords`` tuples (in :data:`COLUMNS` order) of one batch, with dates as the
    store's driver takes them: datetimes, or for SQLite the naive UTC text SQLAlchemy keeps."""
    source_ip, node_name, backend = task.source_ip, task.node_name, task.backend
    db_path, ipfs_path, modified = task.db_path, task.ipfs_path, task.last_modified
    synced: Any = synced_at
    iso: Callable[[Any], Any] | None = None
    if text_dates:
        iso = utc_text
        synced = utc_text(synced_at.astimezone(timezone.utc))
        if modified is not None:
            modified = utc_text(modified.astimezone(timezone.utc))  # type: ignore[assignment]
    out: list[tuple[Any, ...]] = []
    append = out.append
    for r, c in zip(chunk, contents, strict=True):
        (kind, token_id, parent, value, did, status, state_hash, transaction, added, sync_status,
         ft_name, owner_did, creator_did, created, updated) = r
        data, encoding, size, fetched, error, name, number, creator = c
        if iso is not None:
            # the reader gives UTC datetimes: their text without the "+00:00"
            created = None if created is None else iso(created)
            updated = None if updated is None else iso(updated)
        append((
            source_ip, node_name, kind, did if kind == "token" else owner_did, token_id, created,
            updated, status, parent, value, state_hash, transaction, added, sync_status,
            ft_name, owner_did, creator_did, data, encoding, size, fetched, error, backend, name,
            number, creator, db_path, ipfs_path, modified, synced,
        ))
    return out


def utc_text(value: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` of a UTC datetime (the form SQLAlchemy keeps in SQLite)."""
    return value.isoformat(" ", "microseconds")[:26]
