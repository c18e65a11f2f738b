"""Tables every store holds, and the convention replicated tables follow.

``rubix_meta`` is a small key/value table describing the store itself: ``schema_version`` and
``node_id``, a random UUID created once by :meth:`Store.create_schema
<rubix_integration.stores.Store.create_schema>` that names this store when it exchanges data with
others.

Replicated tables inherit :class:`ReplicatedMixin`; the rule they follow (stable key,
``origin_node``, a hybrid-logical-clock ``change_version``, ``deleted_at`` tombstones) is set out in
:mod:`rubix_integration.stores.replicated`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from rubix_integration.stores.replicated import ReplicatedMixin

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
#: 2: the token tables follow the replication rule (see
#: :mod:`~rubix_integration.stores.migrations`). 3: an index on the lease expiry of running
#: workflow tasks. 4: two workflow task indexes no query used dropped (every task change
#: wrote to them).
SCHEMA_VERSION = 4


class StoreMeta(SQLModel, table=True):
    """One fact about the store itself (``schema_version``, ``node_id``)."""

    __tablename__ = "rubix_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


#: The Core table of :class:`StoreMeta`.
META_TABLE: sa.Table = SQLModel.metadata.tables[StoreMeta.__tablename__]


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
