"""Stores: schema creation, concurrent start-up, bulk writes, transactions, error translation.

Each behaviour runs on SQLite and on the real PostgreSQL server (``store`` fixtures).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlmodel import select

import rubix_integration.stores as stores_pkg
from rubix_integration._settings import Settings, resolve_settings
from rubix_integration.errors import (
    StoreError,
    StoreMissingDependency,
    StoreUnavailableError,
    UnknownStoreError,
)
from rubix_integration.stores import PostgreSQLStore, SQLiteStore, Store
from rubix_integration.stores import postgresql as pg_module
from rubix_integration.stores import sqlite as sqlite_module
from rubix_integration.stores.models import (
    SCHEMA_VERSION,
    ReplicatedMixin,
    StoreMeta,
    get_meta,
    get_node_id,
)
from tests.fixtures.stores import open_store


def _items_table() -> sa.Table:
    meta = sa.MetaData()
    return sa.Table(
        "bulk_items",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
    )


def _count(store: Store, table: sa.Table) -> int:
    with store.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.fixture
def items(store: Store) -> sa.Table:
    table = _items_table()
    table.metadata.create_all(store.engine)
    return table


# --- package surface -----------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    assert stores_pkg.__all__ == sorted(stores_pkg.__all__)
    assert set(stores_pkg.__all__) == {"Analytics", "PostgreSQLStore", "SQLiteStore", "Store"}


def test_hooks_register_the_builtin_stores() -> None:
    assert sqlite_module.register_stores() == [SQLiteStore]
    assert pg_module.register_stores() == [PostgreSQLStore]


def test_schemes_and_url_normalisation() -> None:
    assert SQLiteStore.handles("sqlite:///x.db")
    assert not SQLiteStore.handles("postgresql://h/db")
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert PostgreSQLStore.handles(url)
        assert PostgreSQLStore.normalise_url(url) == "postgresql+psycopg://u@h/db"
    with pytest.raises(UnknownStoreError, match="psycopg2"):
        PostgreSQLStore.normalise_url("postgresql+psycopg2://u:pw@h/db")
    with pytest.raises(UnknownStoreError) as info:
        SQLiteStore("postgresql://u:secret@h/db", settings=resolve_settings())
    assert "secret" not in str(info.value)


def test_check_reports_driver_and_missing_dependency() -> None:
    assert SQLiteStore.check().startswith("sqlite3 ")
    assert PostgreSQLStore.check().startswith("psycopg 3")

    class NoDriverStore(SQLiteStore):
        name: ClassVar[str] = "nodriver"
        driver: ClassVar[str] = "rubix_no_such_driver_module"
        install_hint: ClassVar[str] = "pip install rubix-no-such-driver"

    with pytest.raises(StoreMissingDependency, match="pip install rubix-no-such-driver") as info:
        NoDriverStore("sqlite://", settings=resolve_settings()).engine  # noqa: B018
    assert isinstance(info.value, ImportError)


# --- schema --------------------------------------------------------------------------------------


def test_create_schema_is_idempotent(store: Store) -> None:
    node_id = get_node_id(store)
    store.create_schema()
    store.create_schema()
    assert get_node_id(store) == node_id
    assert get_meta(store, "schema_version") == str(SCHEMA_VERSION)
    with store.session() as session:
        keys = sorted(m.key for m in session.exec(select(StoreMeta)))
    assert keys == ["node_id", "schema_version"]


def test_get_node_id_creates_the_schema(store_url: str, store_settings: Settings) -> None:
    with open_store(store_url, store_settings) as fresh:
        node_id = get_node_id(fresh)
        assert len(node_id) == 36
        assert sa.inspect(fresh.engine).has_table("rubix_meta")


def _create_schema_in_child(
    url: str, data_dir: str, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    try:
        settings = resolve_settings(store_url=url, data_dir=data_dir)
        with open_store(url, settings) as store:
            barrier.wait(timeout=30)
            store.create_schema()
            results.put(("ok", get_node_id(store)))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_concurrent_create_schema_agrees_on_one_node_id(
    store_url: str, store_settings: Settings
) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = 4
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_create_schema_in_child,
            args=(store_url, str(store_settings.data_dir), barrier, results),
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert [kind for kind, _ in outcomes] == ["ok"] * workers, outcomes
    assert len({node_id for _, node_id in outcomes}) == 1
    with open_store(store_url, store_settings) as store:
        assert get_node_id(store) == outcomes[0][1]


# --- bulk writes ---------------------------------------------------------------------------------


def test_bulk_insert_10k_mappings(store: Store, items: sa.Table) -> None:
    rows = ({"id": i, "name": f"item-{i}", "size": i * 3} for i in range(10_000))
    assert store.bulk_insert(items, rows) == 10_000
    assert _count(store, items) == 10_000
    with store.connect() as conn:
        got = conn.execute(sa.select(items).where(items.c.id == 9_999)).one()
        total = conn.execute(sa.select(sa.func.sum(items.c.size))).scalar_one()
    assert tuple(got) == (9_999, "item-9999", 29_997)
    assert total == 3 * sum(range(10_000))


def test_bulk_insert_tuples_columns_and_nulls(store: Store, items: sa.Table) -> None:
    assert store.bulk_insert(items, [(1, "a", None), (2, "b'\"\\\t\n", 5)]) == 2
    assert store.bulk_insert(items, [(3, "c")], columns=["id", "name"]) == 1
    assert store.bulk_insert(items, []) == 0
    with store.connect() as conn:
        rows = conn.execute(sa.select(items).order_by(items.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, "a", None), (2, "b'\"\\\t\n", 5), (3, "c", None)]


def test_bulk_insert_rejects_unknown_columns(store: Store, items: sa.Table) -> None:
    with pytest.raises(StoreError, match="nope"):
        store.bulk_insert(items, [{"id": 1, "nope": 2}])


def test_bulk_insert_is_one_transaction(store: Store, items: sa.Table) -> None:
    def rows() -> Any:
        for i in range(10_000):
            # row 7000 repeats an id: the primary key rejects it after 7000 good rows
            yield {"id": 42 if i == 7_000 else i, "name": f"item-{i}", "size": None}

    with pytest.raises(StoreError, match="nothing written") as info:
        store.bulk_insert(items, rows())
    assert info.value.backend == store.name
    assert _count(store, items) == 0
    # the store is still usable afterwards
    assert store.bulk_insert(items, [{"id": 1, "name": "x", "size": 1}]) == 1


def test_bulk_insert_with_special_table_name(store: Store) -> None:
    meta = sa.MetaData()
    odd = sa.Table('odd "name"; drop', meta, sa.Column("v a l", sa.Integer))
    meta.create_all(store.engine)
    assert store.bulk_insert(odd, [{"v a l": 1}, {"v a l": 2}]) == 2
    assert _count(store, odd) == 2


def test_transaction_delete_and_insert_commit_together(store: Store, items: sa.Table) -> None:
    store.bulk_insert(items, [(i, "old", None) for i in range(10)])
    with store.transaction() as conn:
        conn.execute(sa.delete(items).where(items.c.id < 5))
        assert store.bulk_insert(items, [(i, "new", None) for i in range(5)], connection=conn) == 5
    with store.connect() as conn:
        names = {i: n for i, n in conn.execute(sa.select(items.c.id, items.c.name))}
    assert names == {i: ("new" if i < 5 else "old") for i in range(10)}


def test_transaction_rolls_back_delete_and_insert(store: Store, items: sa.Table) -> None:
    store.bulk_insert(items, [(i, "old", None) for i in range(10)])
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as conn:
        conn.execute(sa.delete(items))
        store.bulk_insert(items, [(i, "new", None) for i in range(100, 200)], connection=conn)
        raise RuntimeError("boom")
    with store.connect() as conn:
        rows = conn.execute(sa.select(items.c.id, items.c.name).order_by(items.c.id)).all()
    assert [tuple(r) for r in rows] == [(i, "old") for i in range(10)]


def test_bulk_insert_failure_inside_transaction_undoes_the_delete(
    store: Store, items: sa.Table
) -> None:
    store.bulk_insert(items, [(i, "old", None) for i in range(3)])
    with pytest.raises(StoreError), store.transaction() as conn:
        conn.execute(sa.delete(items))
        store.bulk_insert(items, [(1, "a", None), (1, "dup", None)], connection=conn)
    assert _count(store, items) == 3


def test_replicated_mixin_declares_the_replication_columns() -> None:
    fields = ReplicatedMixin.model_fields
    assert {"origin_node", "change_version", "deleted_at"} <= set(fields)
    assert fields["deleted_at"].default is None
    assert fields["change_version"].default == 0


def test_session_reads_and_writes(store: Store) -> None:
    with store.session() as session:
        session.add(StoreMeta(key="test_key", value="v"))
        session.commit()
    assert get_meta(store, "test_key") == "v"


def test_describe_and_ping(store: Store) -> None:
    info = store.describe()
    assert info["backend"] == store.name
    assert info["reachable"] is True
    assert info["server_version"]
    assert store.ping() >= 0


def test_close_then_reuse(store: Store) -> None:
    node_id = get_node_id(store)
    store.close()
    assert get_node_id(store) == node_id


# --- errors at the boundary ----------------------------------------------------------------------


def test_unreachable_postgresql_is_unavailable_quickly() -> None:
    url = "postgresql+psycopg://rubix:hunter2secret@127.0.0.1:1/nothing"
    store = PostgreSQLStore(url, settings=resolve_settings())
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        store.create_schema()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "hunter2secret" not in message
    assert "postgresql+psycopg://rubix:***@127.0.0.1:1/nothing" in message
    assert info.value.url == "postgresql+psycopg://rubix:***@127.0.0.1:1/nothing"
    assert info.value.__cause__ is not None
    described = store.describe()
    assert described["reachable"] is False
    assert "hunter2secret" not in described["reason"]
    with pytest.raises(StoreUnavailableError):
        store.ping()


@pytest.mark.postgres
def test_missing_postgresql_database_is_unavailable(pg_server_url: str) -> None:
    url = sa.engine.make_url(pg_server_url).set(database="rubix_no_such_db_here")
    store = PostgreSQLStore(url.render_as_string(hide_password=False), settings=resolve_settings())
    with pytest.raises(StoreUnavailableError, match="rubix_no_such_db_here"):
        store.create_schema()


def test_sqlite_folder_under_a_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    db = blocker / "sub" / "rubix.sqlite"
    store = SQLiteStore(f"sqlite:///{db}", settings=resolve_settings())
    with pytest.raises(StoreUnavailableError) as info:
        store.create_schema()
    assert str(blocker / "sub") in str(info.value)
    assert info.value.backend == "sqlite"
    assert store.describe()["reachable"] is False


def test_sqlite_in_memory_works() -> None:
    with SQLiteStore("sqlite://", settings=resolve_settings()) as store:
        store.create_schema()
        table = _items_table()
        table.metadata.create_all(store.engine)
        assert store.bulk_insert(table, [(1, "a", 1)]) == 1
        assert _count(store, table) == 1


def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with SQLiteStore(url, settings=resolve_settings()) as store, store.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1,
                       "busy_timeout": 30_000}


def _spool_file(path: Path, rows: list[tuple[int, str, int | None]]) -> Path:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE rows (id, name, size)")
        conn.executemany("INSERT INTO rows VALUES (?, ?, ?)", rows)
    conn.close()
    return path


def test_sqlite_attached_copies_rows_in_one_transaction_then_detaches(tmp_path: Path) -> None:
    spool = _spool_file(tmp_path / "spool.sqlite", [(i, f"n{i}", i * 2) for i in range(500)])
    url = f"sqlite:///{tmp_path / 's.db'}"
    with SQLiteStore(url, settings=resolve_settings()) as store:
        table = _items_table()
        table.metadata.create_all(store.engine)
        store.bulk_insert(table, [(9999, "old", None)])
        with store.attached({"spool": spool}) as conn:
            conn.execute(sa.delete(table))
            conn.exec_driver_sql("INSERT INTO bulk_items SELECT id, name, size FROM spool.rows")
        assert _count(store, table) == 500
        with store.connect() as conn:
            names = [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")]
        assert "main" in names and "spool" not in names  # handed back to the pool detached
        # a failure rolls back the delete and still detaches
        with pytest.raises(sa.exc.IntegrityError), store.attached({"spool": spool}) as conn:
            conn.execute(sa.delete(table).where(table.c.id < 10))
            conn.exec_driver_sql("INSERT INTO bulk_items SELECT id, name, size FROM spool.rows")
        assert _count(store, table) == 500
        with store.connect() as conn:
            names = [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")]
        assert "spool" not in names


def test_sqlite_attached_refuses_bad_names_and_unopenable_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with SQLiteStore(url, settings=resolve_settings()) as store:
        store.create_schema()
        with pytest.raises(ValueError, match="schema name"), \
                store.attached({"bad name; --": tmp_path / "x.sqlite"}):
            pass  # pragma: no cover - refused before the block runs
        folder = tmp_path / "a-folder"
        folder.mkdir()
        with pytest.raises(StoreError, match="cannot attach"), \
                store.attached({"spool": folder}):
            pass  # pragma: no cover - refused before the block runs
        with store.connect() as conn:
            names = [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")]
        assert "spool" not in names
