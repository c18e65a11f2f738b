"""The tables of the token sync: ``tokenrecords`` and ``processeddatabases``.

Names are lower-case so that plain unquoted SQL works the same on SQLite and PostgreSQL. Every row
of ``tokenrecords`` belongs to one node database (``db_path``); a re-sync of that database replaces
its rows in one transaction, so one token held by several nodes stays one row per node.
Timestamps are stored in UTC.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = ["PROCESSED_TABLE", "TOKEN_TABLE", "ProcessedDatabase", "TokenRecord"]

_TS = sa.DateTime(timezone=True)
# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class TokenRecord(SQLModel, table=True):
    """One token of one node, with the content its CID resolves to."""

    __tablename__ = "tokenrecords"
    # the unique index leads with db_path, so it also serves lookups by db_path; ipfs_fetched is
    # indexed only where it is false: the failures are what queries select, and an index over the
    # successful majority would cost every insert and serve no query
    __table_args__ = (
        sa.UniqueConstraint("db_path", "token_kind", "token_id", name="uq_tokenrecords_db_token"),
        sa.Index("ix_tokenrecords_ipfs_failed", "ipfs_fetched",
                 sqlite_where=sa.text("NOT ipfs_fetched"),
                 postgresql_where=sa.text("NOT ipfs_fetched")),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    source_ip: str | None = Field(default=None, index=True)
    node_name: str = Field(index=True)
    token_kind: str = Field(default="token", max_length=8)  # "token" (TokensTable) or "ft"
    did: str | None = Field(default=None, index=True)
    token_id: str | None = Field(default=None, index=True)
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


class ProcessedDatabase(SQLModel, table=True):
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
PROCESSED_TABLE: sa.Table = SQLModel.metadata.tables["processeddatabases"]
