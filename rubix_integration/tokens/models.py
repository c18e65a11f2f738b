"""The tables of the token sync: ``tokenrecords``, ``processeddatabases`` and the staging table.

Names are lower-case so that plain unquoted SQL works the same on SQLite and PostgreSQL.
Timestamps are stored in UTC. Both tables follow the rule of
:mod:`rubix_integration.stores.replicated`:

- ``tokenrecords`` is keyed by ``record_key``, built from what names a token everywhere: its kind,
  its node database (``db_path``) and its token id (see :func:`record_key`). A re-sync of a
  database upserts the rows it still holds and tombstones the ones that disappeared, so one token
  held by several nodes stays one row per node database;
- ``processeddatabases`` is keyed by ``db_path``.

``tokenrecords_staging`` holds one database's spooled rows for the length of the transaction that
merges them; its unique key refuses two rows of one token id, as ``tokenrecords`` would.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from rubix_integration.stores.replicated import ReplicatedMixin

__all__ = [
    "PROCESSED_TABLE",
    "STAGING_TABLE",
    "TOKEN_TABLE",
    "ProcessedDatabase",
    "TokenRecord",
    "record_key",
]

_TS = sa.DateTime(timezone=True)

#: Change versions of ``tokenrecords`` and ``processeddatabases`` on PostgreSQL.
TOKEN_SEQUENCE = sa.Sequence("tokenrecords_change_version_seq", metadata=SQLModel.metadata)
PROCESSED_SEQUENCE = sa.Sequence("processeddatabases_change_version_seq",
                                 metadata=SQLModel.metadata)


class _TokenColumns(SQLModel):
    """The columns a sync writes for one token (the spool's, see ``tokens.spool.COLUMNS``)."""

    source_ip: str | None = Field(default=None)
    node_name: str
    token_kind: str = Field(default="token", max_length=8)  # "token" (TokensTable) or "ft"
    did: str | None = None
    token_id: str | None = None
    created_at: datetime | None = Field(default=None, sa_type=_TS)
    updated_at: datetime | None = Field(default=None, sa_type=_TS)
    token_status: str | None = None
    parent_token_id: str | None = None
    token_value: float | None = None
    token_state_hash: str | None = None
    transaction_id: str | None = None
    added: bool | None = None
    sync_status: int | None = None
    ft_name: str | None = None
    owner_did: str | None = None
    creator_did: str | None = None
    ipfs_data: str | None = Field(default=None, sa_type=sa.Text)
    ipfs_encoding: str | None = Field(default=None, max_length=8)  # "utf-8" or "base64"
    ipfs_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    ipfs_fetched: bool = Field(default=False)
    ipfs_error: str | None = None
    ipfs_mode: str | None = None
    content_name: str | None = None
    content_number: str | None = None
    content_creator: str | None = None
    db_path: str
    ipfs_path: str | None = None
    db_last_modified: datetime | None = Field(default=None, sa_type=_TS)
    synced_at: datetime = Field(sa_type=_TS)


class TokenRecord(ReplicatedMixin, _TokenColumns, table=True):
    """One token of one node, with the content its CID resolves to."""

    __tablename__ = "tokenrecords"
    # the unique index leads with db_path, so it also serves lookups by db_path; ipfs_fetched is
    # indexed only where it is false: the failures are what queries select, and an index over the
    # successful majority would cost every insert and serve no query
    __table_args__ = (
        sa.Index("ix_tokenrecords_db_token", "db_path", "token_kind", "token_id"),
        sa.Index("ix_tokenrecords_source_ip", "source_ip"),
        sa.Index("ix_tokenrecords_node_name", "node_name"),
        sa.Index("ix_tokenrecords_did", "did"),
        sa.Index("ix_tokenrecords_token_id", "token_id"),
        sa.Index("ix_tokenrecords_ipfs_failed", "ipfs_fetched",
                 sqlite_where=sa.text("NOT ipfs_fetched"),
                 postgresql_where=sa.text("NOT ipfs_fetched")),
    )

    record_key: str = Field(primary_key=True)


class TokenStaging(_TokenColumns, table=True):
    """One database's rows on their way into ``tokenrecords`` (emptied by the same transaction)."""

    __tablename__ = "tokenrecords_staging"
    __table_args__ = (
        sa.UniqueConstraint("db_path", "token_kind", "token_id", name="uq_tokenstaging_db_token"),
    )

    staging_id: int | None = Field(default=None, primary_key=True)


class ProcessedDatabase(ReplicatedMixin, SQLModel, table=True):
    """What the last sync of one node database found; decides whether it must be synced again."""

    __tablename__ = "processeddatabases"

    db_path: str = Field(primary_key=True)
    node_name: str | None = None
    source_ip: str | None = None
    last_modified: datetime | None = Field(default=None, sa_type=_TS)
    fingerprint: str | None = None
    last_processed: datetime | None = Field(default=None, sa_type=_TS)
    record_count: int = 0
    ipfs_success_count: int = 0
    ipfs_fail_count: int = 0
    bad_timestamp_count: int = 0
    status: str = "processed"  # "processed" or "failed"
    error: str | None = Field(default=None, sa_type=sa.Text)
    duration_s: float | None = None


TOKEN_TABLE: sa.Table = SQLModel.metadata.tables["tokenrecords"]
STAGING_TABLE: sa.Table = SQLModel.metadata.tables["tokenrecords_staging"]
PROCESSED_TABLE: sa.Table = SQLModel.metadata.tables["processeddatabases"]


def record_key(kind: Any, db_path: Any, token_id: Any, ordinal: Any) -> Any:
    """The ``record_key`` of a token, as an SQL expression of its parts (columns or values).

    ``kind:<length of db_path>:<db_path>:=<token id>``; a token without an id (one too long to
    index, or blank) is named by its ``ordinal`` among its database's rows instead,
    ``…:#<ordinal>``. The length prefix keeps any two different parts from joining to one key.
    """
    text = sa.String()
    return (sa.cast(kind, text) + ":" + sa.cast(sa.func.length(db_path), text) + ":"
            + sa.cast(db_path, text) + ":"
            + sa.case((token_id.is_(None), "#" + sa.cast(ordinal, text)),
                      else_="=" + sa.cast(token_id, text)))
