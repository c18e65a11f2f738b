"""The behaviour every store shares, as a pytest class to subclass.

A store passes when it creates the schema idempotently (also from several processes at once),
writes many rows in one transaction, joins a caller's transaction, reports and translates its
failures as :mod:`rubix_integration.stores.base` says, and keeps the primitives it declares
(upsert, claim, JSON conditions, change versions; see :mod:`._store_primitives`)::

    import pytest
    from rubix_integration.testing import StoreContract

    class TestMyStore(StoreContract):
        store_name = "mystore"              # the name the plugin registers

        @pytest.fixture
        def contract_store_url(self, tmp_path):
            url = ...                       # an empty database, for this test only
            yield url
            ...                             # drop it

The suite builds the registered class on that URL with settings whose data dir is in
``tmp_path``, creates the schema and closes the store after each test.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlmodel import select

from rubix_integration._settings import Settings, resolve_settings
from rubix_integration.errors import StoreError, UnknownStoreError
from rubix_integration.stores.base import Store
from rubix_integration.stores.models import SCHEMA_VERSION, StoreMeta, get_meta, get_node_id
from rubix_integration.testing._store_primitives import StorePrimitivesContract

__all__ = ["StoreContract"]

_FOREIGN_URL = "rubix-contract-nothing://someone:hunter2secret@host/db"


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


def _create_schema_in_child(
    store_class: type[Store], url: str, data_dir: str, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    try:
        settings = resolve_settings(env={}, store_url=url, data_dir=data_dir)
        with store_class(url, settings=settings) as store:
            barrier.wait(timeout=30)
            store.create_schema()
            results.put(("ok", get_node_id(store)))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


class StoreContract(StorePrimitivesContract):
    """The store contract; subclass it as ``Test…`` and provide ``contract_store_url``.

    Class attributes to set:

    - ``store_name``: the name the store registers;
    - ``load_plugins``: the installed plugins the registry loads to find it (``None``: every
      entry point of the group ``rubix_integration``; ``()``: only the built-ins);
    - ``plugins``: plugin objects registered directly, for a store that has no entry point.
    """

    store_name: ClassVar[str] = ""
    load_plugins: ClassVar[Sequence[str] | None] = None
    plugins: ClassVar[Sequence[object]] = ()

    # --- fixtures --------------------------------------------------------------------------------

    @pytest.fixture
    def contract_store_class(self) -> type[Store]:
        """The class registered under ``store_name`` through the plugin hooks."""
        from rubix_integration._plugins import Plugins

        assert self.store_name, f"{type(self).__name__}: set store_name"
        registry = Plugins(load_plugins=self.load_plugins, extra=self.plugins).stores()
        assert self.store_name in registry, (
            f"no plugin registers a store named {self.store_name!r} "
            f"(registered: {', '.join(registry)})")
        return registry[self.store_name]

    @pytest.fixture
    def contract_settings(self, contract_store_url: str, tmp_path: Path) -> Settings:
        """Settings on ``contract_store_url`` with a data dir in ``tmp_path``."""
        return resolve_settings(env={}, store_url=contract_store_url,
                                data_dir=tmp_path / "contract-data")

    @pytest.fixture
    def contract_store(
        self, contract_store_class: type[Store], contract_store_url: str,
        contract_settings: Settings,
    ) -> Iterator[Store]:
        """The store under test with its schema created; closed afterwards."""
        with contract_store_class(contract_store_url, settings=contract_settings) as store:
            store.create_schema()
            yield store

    @pytest.fixture
    def contract_items(self, contract_store: Store) -> sa.Table:
        """An empty plain table ``bulk_items (id, name, size)`` in the store."""
        table = _items_table()
        table.metadata.create_all(contract_store.engine)
        return table

    # --- identity --------------------------------------------------------------------------------

    def test_registered_class_handles_its_url(
        self, contract_store_class: type[Store], contract_store_url: str,
        contract_settings: Settings,
    ) -> None:
        cls = contract_store_class
        assert cls.name == self.store_name
        assert cls.schemes and all(s == s.lower() and "+" not in s for s in cls.schemes)
        assert cls.handles(contract_store_url)
        normalised = cls.normalise_url(contract_store_url)
        assert cls.handles(normalised)
        assert cls.normalise_url(normalised) == normalised
        assert cls(contract_store_url, settings=contract_settings).url == normalised

    def test_foreign_url_is_refused_without_its_password(
        self, contract_store_class: type[Store], contract_settings: Settings
    ) -> None:
        assert not contract_store_class.handles(_FOREIGN_URL)
        with pytest.raises(UnknownStoreError) as info:
            contract_store_class(_FOREIGN_URL, settings=contract_settings)
        assert "hunter2secret" not in str(info.value)
        assert info.value.backend == self.store_name

    def test_check_names_the_driver(self, contract_store_class: type[Store]) -> None:
        found = contract_store_class.check()
        assert isinstance(found, str) and found.strip()

    # --- schema ----------------------------------------------------------------------------------

    def test_create_schema_is_idempotent(self, contract_store: Store) -> None:
        node_id = get_node_id(contract_store)
        contract_store.create_schema()
        contract_store.create_schema()
        assert get_node_id(contract_store) == node_id
        assert get_meta(contract_store, "schema_version") == str(SCHEMA_VERSION)
        with contract_store.session() as session:
            keys = sorted(m.key for m in session.exec(select(StoreMeta)))
        assert keys == ["node_id", "schema_version"]

    def test_get_node_id_creates_the_schema(
        self, contract_store_class: type[Store], contract_store_url: str,
        contract_settings: Settings,
    ) -> None:
        with contract_store_class(contract_store_url, settings=contract_settings) as fresh:
            node_id = get_node_id(fresh)
            assert len(node_id) == 36
            assert sa.inspect(fresh.engine).has_table("rubix_meta")

    def test_concurrent_create_schema_agrees_on_one_node_id(
        self, contract_store_class: type[Store], contract_store_url: str,
        contract_settings: Settings,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        workers = 4
        barrier = ctx.Barrier(workers)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_create_schema_in_child,
                args=(contract_store_class, contract_store_url,
                      str(contract_settings.data_dir), barrier, results),
            )
            for _ in range(workers)
        ]
        for proc in procs:
            proc.start()
        try:
            outcomes = [results.get(timeout=90) for _ in procs]
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.exitcode is None:  # pragma: no cover - only when a child hangs
                    proc.kill()
        assert [p.exitcode for p in procs] == [0] * workers
        assert [kind for kind, _ in outcomes] == ["ok"] * workers, outcomes
        assert len({node_id for _, node_id in outcomes}) == 1
        with contract_store_class(contract_store_url, settings=contract_settings) as store:
            assert get_node_id(store) == outcomes[0][1]

    # --- bulk writes -----------------------------------------------------------------------------

    def test_bulk_insert_10k_mappings(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items
        rows = ({"id": i, "name": f"item-{i}", "size": i * 3} for i in range(10_000))
        assert store.bulk_insert(items, rows) == 10_000
        assert _count(store, items) == 10_000
        with store.connect() as conn:
            got = conn.execute(sa.select(items).where(items.c.id == 9_999)).one()
            total = conn.execute(sa.select(sa.func.sum(items.c.size))).scalar_one()
        assert tuple(got) == (9_999, "item-9999", 29_997)
        assert total == 3 * sum(range(10_000))

    def test_bulk_insert_tuples_columns_and_nulls(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items
        assert store.bulk_insert(items, [(1, "a", None), (2, "b'\"\\\t\n", 5)]) == 2
        assert store.bulk_insert(items, [(3, "c")], columns=["id", "name"]) == 1
        assert store.bulk_insert(items, []) == 0
        with store.connect() as conn:
            rows = conn.execute(sa.select(items).order_by(items.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, "a", None), (2, "b'\"\\\t\n", 5), (3, "c", None)]

    def test_bulk_insert_rejects_unknown_columns(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        with pytest.raises(StoreError, match="nope"):
            contract_store.bulk_insert(contract_items, [{"id": 1, "nope": 2}])

    def test_bulk_insert_is_one_transaction(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items

        def rows() -> Iterator[dict[str, Any]]:
            for i in range(10_000):
                # row 7000 repeats an id: the primary key rejects it after 7000 good rows
                yield {"id": 42 if i == 7_000 else i, "name": f"item-{i}", "size": None}

        with pytest.raises(StoreError, match="nothing written") as info:
            store.bulk_insert(items, rows())
        assert info.value.backend == store.name
        assert _count(store, items) == 0
        # the store is still usable afterwards
        assert store.bulk_insert(items, [{"id": 1, "name": "x", "size": 1}]) == 1

    def test_bulk_insert_with_special_table_name(self, contract_store: Store) -> None:
        meta = sa.MetaData()
        odd = sa.Table('odd "name"; drop', meta, sa.Column("v a l", sa.Integer))
        meta.create_all(contract_store.engine)
        assert contract_store.bulk_insert(odd, [{"v a l": 1}, {"v a l": 2}]) == 2
        assert _count(contract_store, odd) == 2

    # --- transactions ----------------------------------------------------------------------------

    def test_transaction_delete_and_insert_commit_together(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items
        store.bulk_insert(items, [(i, "old", None) for i in range(10)])
        with store.transaction() as conn:
            conn.execute(sa.delete(items).where(items.c.id < 5))
            written = store.bulk_insert(items, [(i, "new", None) for i in range(5)],
                                        connection=conn)
            assert written == 5
        with store.connect() as conn:
            names = {i: n for i, n in conn.execute(sa.select(items.c.id, items.c.name))}
        assert names == {i: ("new" if i < 5 else "old") for i in range(10)}

    def test_transaction_rolls_back_delete_and_insert(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items
        store.bulk_insert(items, [(i, "old", None) for i in range(10)])
        with pytest.raises(RuntimeError, match="boom"), store.transaction() as conn:
            conn.execute(sa.delete(items))
            store.bulk_insert(items, [(i, "new", None) for i in range(100, 200)], connection=conn)
            raise RuntimeError("boom")
        with store.connect() as conn:
            rows = conn.execute(sa.select(items.c.id, items.c.name).order_by(items.c.id)).all()
        assert [tuple(r) for r in rows] == [(i, "old") for i in range(10)]

    def test_bulk_insert_failure_inside_transaction_undoes_the_delete(
        self, contract_store: Store, contract_items: sa.Table
    ) -> None:
        store, items = contract_store, contract_items
        store.bulk_insert(items, [(i, "old", None) for i in range(3)])
        with pytest.raises(StoreError), store.transaction() as conn:
            conn.execute(sa.delete(items))
            store.bulk_insert(items, [(1, "a", None), (1, "dup", None)], connection=conn)
        assert _count(store, items) == 3

    def test_session_reads_and_writes(self, contract_store: Store) -> None:
        with contract_store.session() as session:
            session.add(StoreMeta(key="test_key", value="v"))
            session.commit()
        assert get_meta(contract_store, "test_key") == "v"

    # --- status and lifetime ---------------------------------------------------------------------

    def test_describe_and_ping(self, contract_store: Store) -> None:
        info = contract_store.describe()
        assert info["backend"] == contract_store.name
        assert info["reachable"] is True, info["reason"]
        assert info["server_version"]
        assert info["driver"]
        assert contract_store.ping() >= 0

    def test_close_then_reuse(self, contract_store: Store) -> None:
        node_id = get_node_id(contract_store)
        contract_store.close()
        contract_store.close()
        assert get_node_id(contract_store) == node_id
