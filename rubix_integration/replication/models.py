"""The bookkeeping tables of replication (never replicated themselves).

- ``replication_peers``: the peers this node pulls from (id, URL, role, priority). Secrets are
  never stored: they live in memory, given by configuration.
- ``replication_checkpoints``: per peer and table, the feed cursor pulled up to (written in the
  same transaction as the batch it follows) and the version that peer acknowledged of our feed
  (the cursor it last asked for), with when.
- ``replication_horizons``: per table, the greatest tombstone version collected; a peer whose
  checkpoint lies below it must resync fully.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = ["CHECKPOINT_TABLE", "HORIZON_TABLE", "PEER_TABLE"]

_TS = sa.DateTime(timezone=True)


class ReplicationPeerRow(SQLModel, table=True):
    """A peer this node pulls from."""

    __tablename__ = "replication_peers"

    peer_id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2048)
    node_id: str | None = Field(default=None, max_length=36)
    role: str = Field(default="peer", max_length=16)
    priority: int = Field(default=0)
    added_at: datetime = Field(sa_type=_TS)
    last_seen: datetime | None = Field(default=None, sa_type=_TS)


class ReplicationCheckpointRow(SQLModel, table=True):
    """How far this node pulled one peer's feed of one table, and what that peer acknowledged."""

    __tablename__ = "replication_checkpoints"

    peer_id: str = Field(primary_key=True, max_length=64)
    table_name: str = Field(primary_key=True, max_length=128)
    cursor: int = Field(default=0, sa_type=sa.BigInteger)
    acked: int = Field(default=0, sa_type=sa.BigInteger)
    acked_at: datetime | None = Field(default=None, sa_type=_TS)
    updated_at: datetime | None = Field(default=None, sa_type=_TS)


class ReplicationHorizonRow(SQLModel, table=True):
    """The greatest tombstone version collected from one table."""

    __tablename__ = "replication_horizons"

    table_name: str = Field(primary_key=True, max_length=128)
    horizon: int = Field(default=0, sa_type=sa.BigInteger)


PEER_TABLE: sa.Table = SQLModel.metadata.tables["replication_peers"]
CHECKPOINT_TABLE: sa.Table = SQLModel.metadata.tables["replication_checkpoints"]
HORIZON_TABLE: sa.Table = SQLModel.metadata.tables["replication_horizons"]
