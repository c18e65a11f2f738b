"""The ``provenance_records`` table.

A record is immutable and named by its CID, so the replication rule of
:mod:`rubix_integration.stores.replicated` applies only in part: the CID is its stable key and
``origin_node`` says which store wrote it, while change versions and tombstones have nothing to
track (a record never changes and is never deleted; its CID is its version). ``block`` holds the
exact canonical DAG-JSON bytes the CID was computed from, the source of truth that
:meth:`ProvenanceLogger.verify <rubix_integration.provenance.ProvenanceLogger.verify>` checks every
other column against.

Records are found by CID through ``ix_provenance_records_cid`` on ``(id >> 16, cid)``: the
records in groups of 65,536 by insertion order (:data:`CID_GROUP`), then the CID, and a lookup
probes every group (16 index seeks for a million records). A CID is a hash, so each new record
lands at a random place of an index on it; with the group first, those places all lie in the
newest group, about 5 MB of index pages however large the table grows. An index on the CID alone
makes each batch of appends rewrite pages all over an index that outgrows the caches, and appends
slow down as the table fills. Two rows with one CID hold one block, hence one chain and sequence
number, which the unique ``(chain, seq)`` refuses.

Schema creation leaves an existing table as it is: a table created before this index keeps its
unique index on ``cid`` (which the same lookups use) and the insert rate that comes with it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = ["CID_GROUP", "CID_GROUP_BITS", "JSON_TYPE", "PROVENANCE_TABLE", "ProvenanceRow"]

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
    cid: str = Field(max_length=128)
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

#: Records per lookup group is ``2 ** CID_GROUP_BITS``.
CID_GROUP_BITS = 16
#: A record's lookup group, ``id >> 16``: written as a literal so that queries repeat the indexed
#: expression exactly (a bound parameter would not match it).
CID_GROUP: sa.ColumnElement[Any] = PROVENANCE_TABLE.c.id.op(">>")(
    sa.literal_column(str(CID_GROUP_BITS)))
sa.Index("ix_provenance_records_cid", CID_GROUP, PROVENANCE_TABLE.c.cid)
