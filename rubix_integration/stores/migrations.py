"""Upgrade a store written by an earlier version of this package, in place.

:meth:`Store.create_schema <rubix_integration.stores.base.Store.create_schema>` calls
:func:`migrate` when ``rubix_meta.schema_version`` is older than
:data:`~rubix_integration.stores.models.SCHEMA_VERSION`, inside its own transaction and under the
schema lock: a second process starting at the same moment waits, then finds the version current
and does nothing. A failed step rolls the whole upgrade back.

Version 1 to 2 brings the token tables under the rule of
:mod:`rubix_integration.stores.replicated`. Each table is rebuilt (create, copy, drop, the same
on SQLite and PostgreSQL): the old one is renamed aside and stripped of its named indexes and
constraints, the new one created from the model, the rows copied with their new columns filled
in (the store's ``node_id`` as ``origin_node``, a stamp each as ``change_version``, and for
``tokenrecords`` the ``record_key`` a sync computes, numbering rows without a token id in their
original order), and the old table dropped.

Version 2 to 3 adds the partial index over the lease expiry of running workflow tasks (how
stalled work is found without scanning the table) to a store that has the task table.

Version 3 to 4 drops the workflow task indexes on ``due_at_us`` and on ``(state,
updated_at_us)`` (:data:`~rubix_integration.workflow.models.DROPPED_INDEXES`): no query of the
workflow used them (claims walk the claim index, stalled work the lease index), and every claim
and completion had to update both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = ["MIGRATIONS", "migrate"]


def migrate(store: Store, conn: Connection, found: int) -> int:
    """Run every step from version ``found`` to the current one on ``conn`` (in the schema
    transaction); return the version reached."""
    from rubix_integration.stores.models import SCHEMA_VERSION

    version = found
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](store, conn)
        version += 1
    return version


def _to_2(store: Store, conn: Connection) -> None:
    from rubix_integration.stores.models import META_TABLE
    from rubix_integration.tokens.models import PROCESSED_TABLE, TOKEN_TABLE, record_key

    meta = META_TABLE
    node = str(conn.execute(sa.select(meta.c.value).where(meta.c.key == "node_id")).scalar_one())
    inspector = sa.inspect(conn)
    if inspector.has_table(TOKEN_TABLE.name) and "record_key" not in {
            c["name"] for c in inspector.get_columns(TOKEN_TABLE.name)}:
        def token_extra(old: sa.Table) -> dict[str, Any]:
            ordinal = sa.func.row_number().over(partition_by=old.c.db_path, order_by=old.c.id)
            return {"record_key": record_key(old.c.token_kind, old.c.db_path, old.c.token_id,
                                             ordinal)}
        _rebuild(store, conn, TOKEN_TABLE, node, token_extra, order="id")
    if inspector.has_table(PROCESSED_TABLE.name) and "change_version" not in {
            c["name"] for c in inspector.get_columns(PROCESSED_TABLE.name)}:
        _rebuild(store, conn, PROCESSED_TABLE, node, lambda old: {}, order="db_path")


def _rebuild(store: Store, conn: Connection, table: sa.Table, node: str,
             extra: Callable[[sa.Table], dict[str, Any]], *, order: str) -> None:
    """Replace ``table`` as stored by one built from its model, keeping every row."""
    aside = f"{table.name}_v1"
    conn.execute(sa.text(f'ALTER TABLE "{table.name}" RENAME TO "{aside}"'))
    inspector = sa.inspect(conn)
    old = sa.Table(aside, sa.MetaData(), autoload_with=conn)
    # index and constraint names are unique per schema: free them for the new table
    if conn.dialect.name == "postgresql":
        constraints = [str(u["name"] or "") for u in inspector.get_unique_constraints(aside)]
        constraints.append(str(inspector.get_pk_constraint(aside).get("name") or ""))
        for name in filter(None, constraints):
            conn.execute(sa.text(f'ALTER TABLE "{aside}" DROP CONSTRAINT "{name}"'))
        inspector = sa.inspect(conn)
        inspector.clear_cache()
    for index in inspector.get_indexes(aside):
        if index.get("name"):
            conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index["name"]}"'))
    sequence = sa.Sequence(f"{table.name}_change_version_seq")
    if conn.dialect.name == "postgresql":
        sequence.create(conn, checkfirst=True)
    table.create(conn)
    count = int(conn.execute(sa.select(sa.func.count()).select_from(old)).scalar_one())
    if count:
        ordinal = sa.func.row_number().over(order_by=old.c[order])
        if conn.dialect.name == "postgresql":
            # the sequence is created in this transaction: its values, as they come
            version: Any = sequence.next_value()
        else:
            first = store.store_clock.reserve(conn, table, count)
            version = sa.literal(first - 1, sa.BigInteger()) + ordinal
        kept = [c.name for c in table.columns if c.name in old.c]
        values: dict[str, Any] = {str(name): old.c[name] for name in kept}
        values.update(extra(old))
        values.update(origin_node=sa.literal(node, sa.String()), change_version=version,
                      deleted_at=sa.null())
        conn.execute(sa.insert(table).from_select(list(values), sa.select(*values.values())))
    conn.execute(sa.text(f'DROP TABLE "{aside}"'))


def _to_3(store: Store, conn: Connection) -> None:
    from rubix_integration.workflow.models import LEASE_INDEX, TASK_TABLE

    inspector = sa.inspect(conn)
    if not inspector.has_table(TASK_TABLE.name):
        return  # created whole, index included, by create_schema
    if LEASE_INDEX in {i["name"] for i in inspector.get_indexes(TASK_TABLE.name)}:
        return
    index = next(i for i in TASK_TABLE.indexes if i.name == LEASE_INDEX)
    index.create(conn)


def _to_4(store: Store, conn: Connection) -> None:
    from rubix_integration.workflow.models import DROPPED_INDEXES

    # IF EXISTS: a store without the task table (or created without them) has nothing to drop
    for name in DROPPED_INDEXES:
        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))


#: The step that upgrades a store from each version to the next.
MIGRATIONS: dict[int, Callable[[Store, Connection], None]] = {1: _to_2, 2: _to_3, 3: _to_4}
