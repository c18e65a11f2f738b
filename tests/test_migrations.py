"""Upgrading stores written by schema version 1, on both stores.

The version-1 token tables are built from a frozen copy of their definition (below), filled with
the rows a sync wrote then, upgraded by ``create_schema``, and synced again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rubix_integration import Manager
from rubix_integration._settings import Settings
from rubix_integration.stores.models import SCHEMA_VERSION, get_meta
from rubix_integration.tokens.demo import make_sample
from rubix_integration.tokens.models import PROCESSED_TABLE, TOKEN_TABLE
from rubix_integration.tokens.spool import COLUMNS
from tests.fixtures.stores import open_store

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NODE_ID = "00000000-0000-4000-8000-000000000001"


def _version_1() -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """``rubix_meta``, ``tokenrecords`` and ``processeddatabases`` as schema version 1 made them."""
    meta = sa.MetaData()
    sa.Table("rubix_meta", meta, sa.Column("key", sa.String(64), primary_key=True),
             sa.Column("value", sa.String, nullable=False))
    tokens = sa.Table(
        "tokenrecords", meta,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("source_ip", sa.String, index=True), sa.Column("node_name", sa.String,
                                                                 nullable=False, index=True),
        sa.Column("token_kind", sa.String(8), nullable=False), sa.Column("did", sa.String,
                                                                         index=True),
        sa.Column("token_id", sa.String, index=True), sa.Column("created_at", _TS),
        sa.Column("updated_at", _TS), sa.Column("token_status", sa.String),
        sa.Column("parent_token_id", sa.String), sa.Column("token_value", sa.Float),
        sa.Column("token_state_hash", sa.String), sa.Column("transaction_id", sa.String),
        sa.Column("added", sa.Boolean), sa.Column("sync_status", sa.Integer),
        sa.Column("ft_name", sa.String), sa.Column("owner_did", sa.String),
        sa.Column("creator_did", sa.String), sa.Column("ipfs_data", sa.Text),
        sa.Column("ipfs_encoding", sa.String(8)), sa.Column("ipfs_size", sa.BigInteger),
        sa.Column("ipfs_fetched", sa.Boolean, nullable=False), sa.Column("ipfs_error", sa.String),
        sa.Column("ipfs_mode", sa.String), sa.Column("content_name", sa.String),
        sa.Column("content_number", sa.String), sa.Column("content_creator", sa.String),
        sa.Column("db_path", sa.String, nullable=False), sa.Column("ipfs_path", sa.String),
        sa.Column("db_last_modified", _TS), sa.Column("synced_at", _TS, nullable=False),
        sa.UniqueConstraint("db_path", "token_kind", "token_id", name="uq_tokenrecords_db_token"),
        sa.Index("ix_tokenrecords_ipfs_failed", "ipfs_fetched",
                 sqlite_where=sa.text("NOT ipfs_fetched"),
                 postgresql_where=sa.text("NOT ipfs_fetched")),
    )
    processed = sa.Table(
        "processeddatabases", meta,
        sa.Column("db_path", sa.String, primary_key=True), sa.Column("node_name", sa.String),
        sa.Column("source_ip", sa.String), sa.Column("last_modified", _TS),
        sa.Column("fingerprint", sa.String), sa.Column("last_processed", _TS),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("ipfs_success_count", sa.Integer, nullable=False),
        sa.Column("ipfs_fail_count", sa.Integer, nullable=False),
        sa.Column("bad_timestamp_count", sa.Integer, nullable=False),
        sa.Column("status", sa.String, nullable=False), sa.Column("error", sa.Text),
        sa.Column("duration_s", sa.Float),
    )
    return meta, tokens, processed


def _reference_rows(root: Path, tmp: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The token and database rows a sync of ``root`` writes, in the order it writes them."""
    with Manager(store_url=f"sqlite:///{tmp / 'ref.sqlite'}", data_dir=tmp / "ref") as ref:
        assert ref.sync_tokens([root]).ok
        with ref.store.connect() as conn:
            tokens = [dict(r._mapping) for r in conn.execute(
                sa.select(*(TOKEN_TABLE.c[c] for c in COLUMNS)).order_by(sa.text("rowid")))]
            old_processed = [c for c in PROCESSED_TABLE.c if c.name not in (
                "origin_node", "change_version", "deleted_at")]
            processed = [dict(r._mapping) for r in conn.execute(sa.select(*old_processed))]
    return tokens, processed


def _write_version_1(url: str, settings: Settings, tokens: list[dict[str, Any]],
                     processed: list[dict[str, Any]]) -> None:
    meta, token_table, processed_table = _version_1()
    store = open_store(url, settings)
    try:
        meta.create_all(store.engine)
        with store.transaction() as conn:
            conn.execute(sa.insert(meta.tables["rubix_meta"]),
                         [{"key": "schema_version", "value": "1"},
                          {"key": "node_id", "value": _NODE_ID}])
            conn.execute(sa.insert(token_table), tokens)
            conn.execute(sa.insert(processed_table), processed)
    finally:
        store.close()


def _live(manager: Manager) -> list[tuple[Any, ...]]:
    t = TOKEN_TABLE
    with manager.store.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(
            sa.select(t.c.db_path, t.c.token_kind, t.c.token_id, t.c.ipfs_data)
            .where(t.c.deleted_at.is_(None))))


def test_a_version_1_store_is_upgraded_and_syncs_without_duplicates_or_losses(
    store_url: str, store_settings: Settings, tmp_path: Path,
) -> None:
    sample = make_sample(tmp_path / "root", broken=False, nodes=3, tokens_per_node=6)
    tokens, processed = _reference_rows(sample.root, tmp_path)
    _write_version_1(store_url, store_settings, tokens, processed)

    # two processes starting at once: one upgrades, the other waits and finds nothing to do
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with open_store(store_url, store_settings) as other:
                other.create_schema()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        store = manager.store
        assert get_meta(store, "schema_version") == str(SCHEMA_VERSION)
        assert store.node_id == _NODE_ID
        t = TOKEN_TABLE
        with store.connect() as conn:
            migrated = {r.record_key: r for r in conn.execute(sa.select(t))}
            states = list(conn.execute(sa.select(PROCESSED_TABLE.c.origin_node,
                                                 PROCESSED_TABLE.c.change_version)))
        assert len(migrated) == len(tokens) == sample.tokens
        assert {r.origin_node for r in migrated.values()} == {_NODE_ID}
        assert len({r.change_version for r in migrated.values()}) == len(tokens)
        assert {tuple(r[c] for c in ("db_path", "token_kind", "token_id", "ipfs_data"))
                for r in tokens} == {(r.db_path, r.token_kind, r.token_id, r.ipfs_data)
                                     for r in migrated.values()}
        assert len(states) == len(processed) and all(s[0] == _NODE_ID for s in states)
        before = _live(manager)

        # nothing changed: nothing to do
        summary = manager.sync_tokens([sample.root])
        assert summary.databases_skipped == 3 and _live(manager) == before

        # one database changed: its rows keep their keys, the token that left is tombstoned
        db = sample.nodes[0] / "Rubix" / "rubix.db"
        with sqlite3.connect(db) as raw:
            gone = raw.execute("SELECT token_id FROM TokensTable LIMIT 1").fetchone()[0]
            raw.execute("DELETE FROM TokensTable WHERE token_id = ?", (gone,))
        os.utime(db, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        summary = manager.sync_tokens([sample.root])
        assert summary.databases_processed == 1 and summary.ok
        after = _live(manager)
        assert sorted(after + [r for r in before if r[2] == gone]) == before
        with store.connect() as conn:
            rows = {r.record_key: r for r in conn.execute(sa.select(t))}
        assert set(rows) == set(migrated)  # the same keys: nothing duplicated
        tombstones = [r for r in rows.values() if r.deleted_at is not None]
        assert [r.token_id for r in tombstones] == [gone]
        resynced = [k for k, r in rows.items() if r.db_path == str(db)]
        assert all(rows[k].change_version > migrated[k].change_version for k in resynced)
        untouched = [k for k, r in rows.items() if r.db_path != str(db)]
        assert all(rows[k].change_version == migrated[k].change_version for k in untouched)

    # upgrading again is a no-op
    with open_store(store_url, store_settings) as again:
        again.create_schema()
        with again.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == len(rows)


def test_a_version_2_store_gets_the_lease_index_and_keeps_its_tasks(
    store_url: str, store_settings: Settings,
) -> None:
    from rubix_integration.stores.migrations import MIGRATIONS
    from rubix_integration.workflow.models import LEASE_INDEX, TASK_TABLE

    assert SCHEMA_VERSION >= 3 and 2 in MIGRATIONS
    with Manager(store_url=store_url, load_plugins=()) as manager:
        manager.submit_task("held", "job")
        manager.submit_task("waiting", "job")
        held = manager.get_next_task("w")
        assert held is not None and held.task_id == "held"
    # what version 2 wrote: no lease index
    with open_store(store_url, store_settings) as store, store.transaction() as conn:
        conn.execute(sa.text(f'DROP INDEX "{LEASE_INDEX}"'))
        conn.execute(sa.text("UPDATE rubix_meta SET value = '2' WHERE key = 'schema_version'"))
    with open_store(store_url, store_settings) as store:
        with store.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes(TASK_TABLE.name)}
        assert LEASE_INDEX not in names
        store.create_schema()
        assert get_meta(store, "schema_version") == str(SCHEMA_VERSION)
        with store.connect() as conn:
            indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes(TASK_TABLE.name)}
            assert indexes[LEASE_INDEX]["column_names"] == ["lease_expires_at_us"]
            if conn.dialect.name == "postgresql":  # it serves the search for stalled work
                conn.exec_driver_sql("SET enable_seqscan = off")  # two rows: else a scan
                plan = "\n".join(conn.exec_driver_sql(
                    "EXPLAIN SELECT task_id FROM workflow_tasks WHERE state = 'running' AND "
                    "lease_expires_at_us <= 5 AND attempts >= max_attempts").scalars())
                assert LEASE_INDEX in plan, plan
        store.create_schema()  # again: a no-op
    with Manager(store_url=store_url, load_plugins=()) as manager:
        assert manager.get_task_status("held").state == "running"
        assert manager.get_next_task("w2") is not None
        assert manager.provenance.verify().ok


def test_a_version_3_store_loses_the_unused_task_indexes_and_keeps_working(
    store_url: str, store_settings: Settings,
) -> None:
    from rubix_integration.stores.migrations import MIGRATIONS
    from rubix_integration.workflow.models import DROPPED_INDEXES, LEASE_INDEX, TASK_TABLE

    assert SCHEMA_VERSION == 4 and 3 in MIGRATIONS
    with Manager(store_url=store_url, load_plugins=()) as manager:
        manager.submit_tasks([{"task_id": f"t{i}", "task_type": "job"} for i in range(3)])
        held = manager.get_next_task("w")
        assert held is not None and held.task_id == "t0"
    with open_store(store_url, store_settings) as store, store.transaction() as conn:
        names = {i["name"] for i in sa.inspect(conn).get_indexes(TASK_TABLE.name)}
        assert not names & set(DROPPED_INDEXES)  # a new store never has them
        # what version 3 wrote: the two indexes as it defined them
        conn.execute(sa.text('CREATE INDEX "ix_workflow_tasks_due" ON workflow_tasks '
                             "(due_at_us)"))
        conn.execute(sa.text('CREATE INDEX "ix_workflow_tasks_state" ON workflow_tasks '
                             "(state, updated_at_us)"))
        conn.execute(sa.text("UPDATE rubix_meta SET value = '3' WHERE key = 'schema_version'"))
    with open_store(store_url, store_settings) as store:
        with store.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes(TASK_TABLE.name)}
        assert set(DROPPED_INDEXES) <= names
        store.create_schema()
        assert get_meta(store, "schema_version") == "4"
        with store.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes(TASK_TABLE.name)}
        assert not names & set(DROPPED_INDEXES)
        assert {LEASE_INDEX, "ix_workflow_tasks_claim"} <= names
        store.create_schema()  # again: a no-op
        assert get_meta(store, "schema_version") == "4"
    with Manager(store_url=store_url, load_plugins=()) as manager:
        assert manager.get_task_status("t0").state == "running"
        assert [t.task_id for t in manager.workflow.get_next_tasks("w2", limit=5)] == ["t1", "t2"]
        assert manager.provenance.verify().ok
