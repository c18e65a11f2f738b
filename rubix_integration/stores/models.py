"""Tables every store holds, and the convention replicated tables follow.

``rubix_meta`` is a small key/value table describing the store itself: ``schema_version`` and
``node_id``, a random UUID created once by :meth:`Store.create_schema
<rubix_integration.stores.Store.create_schema>` that names this store when it exchanges data with
others.

Replicated tables (added with later capabilities) inherit :class:`ReplicatedMixin` so that
replication needs no reshaping of them:

- ``origin_node``: the ``node_id`` of the store that wrote this version of the row. Rows written
  locally carry this store's id; rows received from a peer keep the peer's.
- ``change_version``: a number that only grows per origin node. Each local write takes the next
  value, so a peer asks "everything from node N after version V" and resolves two versions of one
  row deterministically (higher version wins; equal versions are ordered by ``origin_node``).
- ``deleted_at``: a tombstone. Deleting replicated data sets this UTC timestamp (and a new
  ``change_version``) instead of removing the row, so the deletion travels to peers like any other
  change. Readers filter ``deleted_at IS NULL``; tombstones are purged only once every peer has
  seen them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

if TYPE_CHECKING:
    from rubix_integration.stores.base import Store

__all__ = [
    "META_TABLE",
    "SCHEMA_VERSION",
    "ReplicatedMixin",
    "StoreMeta",
    "get_meta",
    "get_node_id",
]

#: Version of the tables this package creates; stored under ``rubix_meta.schema_version``.
SCHEMA_VERSION = 1


class StoreMeta(SQLModel, table=True):
    """One fact about the store itself (``schema_version``, ``node_id``)."""

    __tablename__ = "rubix_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


#: The Core table of :class:`StoreMeta`.
META_TABLE: sa.Table = SQLModel.metadata.tables[StoreMeta.__tablename__]


class ReplicatedMixin(SQLModel):
    """Columns of a replicated row: who wrote it, its change version, its tombstone.

    Mix it into a table model (``class Pin(ReplicatedMixin, table=True)``); see the module
    docstring for the rules.
    """

    origin_node: str = Field(index=True, max_length=36)
    change_version: int = Field(default=0, index=True, sa_type=sa.BigInteger)
    deleted_at: datetime | None = Field(default=None)


def get_meta(store: Store, key: str) -> str | None:
    """Return the ``rubix_meta`` value for ``key``, or ``None`` when it is not set."""
    table = META_TABLE
    with store.connect() as conn:
        value = conn.execute(sa.select(table.c.value).where(table.c.key == key)).scalar()
    return None if value is None else str(value)


def get_node_id(store: Store) -> str:
    """Return the store's ``node_id``, creating the schema first if it is missing."""
    table = META_TABLE
    with store.connect() as conn:
        has_table = sa.inspect(conn).has_table(table.name, schema=table.schema)
    node_id = get_meta(store, "node_id") if has_table else None
    if node_id is None:
        store.create_schema()
        node_id = get_meta(store, "node_id")
    if node_id is None:  # pragma: no cover - create_schema always writes it
        raise RuntimeError("create_schema() did not record a node_id")
    return node_id
