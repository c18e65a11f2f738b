"""The ``provenance_records`` table.

A record is immutable and named by its CID, so the replication convention of
:mod:`rubix_integration.stores.models` applies only in part: ``origin_node`` says which store wrote
it, while change versions and tombstones have nothing to track (a record never changes and is never
deleted; its CID is its version). ``block`` holds the exact canonical DAG-JSON bytes the CID was
computed from, the source of truth that :meth:`ProvenanceLogger.verify
<rubix_integration.provenance.ProvenanceLogger.verify>` checks every other column against.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = ["JSON_TYPE", "PROVENANCE_TABLE", "ProvenanceRow"]

#: JSON on SQLite (queried with ``json_extract``), JSONB on PostgreSQL (``@>``, GIN index).
JSON_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")
_ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class ProvenanceRow(SQLModel, table=True):
    """One provenance record as stored."""

    __tablename__ = "provenance_records"
    __table_args__ = (
        sa.UniqueConstraint("chain", "seq", name="uq_provenance_records_chain_seq"),
        sa.Index("ix_provenance_records_type_time", "type", "timestamp_us"),
        sa.Index("ix_provenance_records_time", "timestamp_us"),
        sa.Index("ix_provenance_records_unpublished", "published", "id"),
        sa.Index("ix_provenance_records_data_gin", "data", postgresql_using="gin",
                 postgresql_ops={"data": "jsonb_path_ops"}).ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(
        _ID_TYPE, primary_key=True, autoincrement=True))
    cid: str = Field(max_length=128, unique=True)
    chain: str = Field(max_length=128)
    seq: int = Field(sa_type=sa.BigInteger)
    prev: str | None = Field(default=None, max_length=128)
    type: str = Field(max_length=200)
    timestamp_us: int = Field(sa_type=sa.BigInteger)
    origin_node: str = Field(max_length=36, index=True)
    data: Any = Field(sa_column=sa.Column(JSON_TYPE, nullable=False))
    block: str = Field(sa_type=sa.Text)
    published: bool = Field(default=False)


#: The Core table of :class:`ProvenanceRow`.
PROVENANCE_TABLE: sa.Table = SQLModel.metadata.tables[ProvenanceRow.__tablename__]
