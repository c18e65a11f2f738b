"""Stores: the store contract on both built-in stores, then what is particular to each.

The contract (``rubix_integration.testing.StoreContract``: schema creation, concurrent start-up,
bulk writes, transactions, status) runs on SQLite and on the real PostgreSQL server; the rest
covers URL handling, drivers, error translation and SQLite's own features.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa

import rubix_integration.stores as stores_pkg
from rubix_integration._settings import resolve_settings
from rubix_integration.errors import (
    StoreError,
    StoreMissingDependency,
    StoreUnavailableError,
    UnknownStoreError,
)
from rubix_integration.stores import PostgreSQLStore, SQLiteStore
from rubix_integration.stores import postgresql as pg_module
from rubix_integration.stores import sqlite as sqlite_module
from rubix_integration.stores.models import ReplicatedMixin
from rubix_integration.testing import StoreContract
from rubix_integration.testing.store_contract import _count, _items_table

# --- the store contract ------------------------------------------------------------------------


class TestSQLiteContract(StoreContract):
    store_name = "sqlite"
    load_plugins = ()

    @pytest.fixture
    def contract_store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'store' / 'rubix.sqlite'}"


@pytest.mark.postgres
class TestPostgreSQLContract(StoreContract):
    store_name = "postgresql"
    load_plugins = ()

    @pytest.fixture
    def contract_store_url(self, pg_database: str) -> str:
        return pg_database


# --- package surface -----------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    assert stores_pkg.__all__ == sorted(stores_pkg.__all__)
    assert set(stores_pkg.__all__) == {"Analytics", "PostgreSQLStore", "SQLiteStore", "Store"}


def test_hooks_register_the_builtin_stores() -> None:
    from rubix_integration._plugins import Plugins

    stores = Plugins(load_plugins=()).stores()
    assert stores["sqlite"] is SQLiteStore
    assert stores["postgresql"] is PostgreSQLStore
    # registered by dotted path through the registry, not by hooks of their own modules
    assert not hasattr(sqlite_module, "register_stores")
    assert not hasattr(pg_module, "register_stores")


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


def test_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What CONTRIBUTING.md says of SQLite URLs: three slashes and a relative path resolve
    against the working directory, four slashes make an absolute path, ``sqlite://`` is memory,
    and a ``+driver`` suffix is passed through unchanged."""
    monkeypatch.chdir(tmp_path)
    settings = resolve_settings(env={})
    relative = SQLiteStore("sqlite:///rel/r.db", settings=settings)
    assert relative.database_path == Path("rel/r.db")
    absolute = SQLiteStore(f"sqlite:///{tmp_path / 'abs' / 'a.db'}", settings=settings)
    assert absolute.url.startswith("sqlite:////")
    assert absolute.database_path == tmp_path / "abs" / "a.db"
    driver = SQLiteStore("sqlite+pysqlite:///d.db", settings=settings)
    assert driver.url == "sqlite+pysqlite:///d.db"
    for store in (relative, absolute, driver):
        with store:
            store.create_schema()
    assert sorted(p.name for p in tmp_path.rglob("*.db")) == ["a.db", "d.db", "r.db"]
    assert (tmp_path / "rel" / "r.db").is_file()
    for url in ("sqlite://", "sqlite:///:memory:"):
        assert SQLiteStore(url, settings=settings).database_path is None


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


def test_replicated_mixin_declares_the_replication_columns() -> None:
    fields = ReplicatedMixin.model_fields
    assert {"origin_node", "change_version", "deleted_at"} <= set(fields)
    assert fields["deleted_at"].default is None
    assert fields["change_version"].default == 0


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


class _BareStore(SQLiteStore):
    """A store a plugin might register: SQLite underneath, but declaring no primitives."""

    name = "bare"
    schemes = ("bare",)
    primitives = frozenset({"bulk_insert"})

    @classmethod
    def normalise_url(cls, url: str) -> str:
        return "sqlite://" + url.split("://", 1)[1]


def test_a_store_lacking_a_primitive_is_refused_at_start_up(tmp_path: Path) -> None:
    from rubix_integration.errors import StoreError
    from rubix_integration.provenance import ProvenanceLogger
    from rubix_integration.workflow import WorkflowCoordinator

    url = f"bare:///{tmp_path}/bare.db"
    store = _BareStore(url, settings=resolve_settings(env={}, data_dir=tmp_path))
    with pytest.raises(StoreError, match=r"'bare'.*json.*provenance"):
        ProvenanceLogger(store)
    with pytest.raises(StoreError, match=r"'bare'.*upsert, claim, json, change_version.*workflow"):
        WorkflowCoordinator(store, provenance=lambda: ProvenanceLogger(store))
    with pytest.raises(StoreError, match="upsert"):
        store.upsert(sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer,
                                                            primary_key=True)), [{"id": 1}])
    store.close()


def test_no_capability_imports_the_manager() -> None:
    import rubix_integration

    root = Path(rubix_integration.__file__).parent
    for package in ("provenance", "workflow", "stores", "codecs"):
        for source in (root / package).glob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert "_manager" not in text, f"{source} imports the Manager"
