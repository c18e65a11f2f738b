"""The ``pins`` table: one row per CID, the pin state of the embedded and PostgreSQL backends.

Rows follow the rule of :mod:`rubix_integration.stores.replicated`: ``cid`` (canonical text) is
the stable key; every write sets ``origin_node`` and a hybrid logical clock ``change_version``
through the store layer; removing a pin sets ``deleted_at`` (a tombstone) instead of deleting the
row, and re-adding it clears that. Lists of peer ids and multiaddresses are stored comma-joined
(neither can hold a comma), the metadata map as JSON text, times as the RFC 3339 text of the pin.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from rubix_integration.stores.replicated import ReplicatedMixin

__all__ = ["PIN_COLUMNS", "PIN_SEQUENCE", "PIN_TABLE", "PinRow"]

#: Change versions of pin rows on PostgreSQL, kept on the store's hybrid logical clock.
PIN_SEQUENCE = sa.Sequence("pins_change_version_seq", metadata=SQLModel.metadata)


class PinRow(ReplicatedMixin, table=True):
    """One pin as stored (``deleted_at`` set: removed)."""

    __tablename__ = "pins"

    cid: str = Field(primary_key=True, max_length=128)
    pin_type: int = Field(default=1, sa_type=sa.SmallInteger)
    allocations: str = Field(default="", sa_type=sa.Text)
    max_depth: int = Field(default=-1)
    reference: str | None = Field(default=None, max_length=128)
    timestamp: str = Field(max_length=40)
    replication_factor_min: int = Field(default=0)
    replication_factor_max: int = Field(default=0)
    name: str = Field(default="", sa_type=sa.Text)
    shard_size: int = Field(default=0, sa_type=sa.BigInteger)
    user_allocations: str = Field(default="", sa_type=sa.Text)
    expire_at: str = Field(max_length=40)
    meta: str | None = Field(default=None, sa_type=sa.Text)
    pin_update: str | None = Field(default=None, max_length=128)
    origins: str = Field(default="", sa_type=sa.Text)


#: The Core table of :class:`PinRow`.
PIN_TABLE: sa.Table = SQLModel.metadata.tables[PinRow.__tablename__]
#: The columns a pin is read from, in the order :func:`rubix_integration.pins._sql` reads them.
PIN_COLUMNS: tuple[str, ...] = (
    "cid", "pin_type", "allocations", "max_depth", "reference", "timestamp",
    "replication_factor_min", "replication_factor_max", "name", "shard_size",
    "user_allocations", "expire_at", "meta", "pin_update", "origins")
