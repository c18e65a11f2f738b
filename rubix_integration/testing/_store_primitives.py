"""The store primitives' part of the store contract (see :mod:`.store_contract`).

Every test here runs on the store under test through :class:`~.store_contract.StoreContract`,
which inherits :class:`StorePrimitivesContract`; a store that does not declare a primitive skips
its tests and must refuse it through ``require``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from rubix_integration.errors import StoreError
from rubix_integration.stores.base import Store

__all__ = ["StorePrimitivesContract"]

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _tables() -> tuple[sa.Table, sa.Table, sa.Table]:
    meta = sa.MetaData()
    pairs = sa.Table(
        "contract_pairs", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("doc", _JSON, nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="free"),
        sa.Column("holder", sa.String(32), nullable=True),
    )
    sa.Sequence("contract_replicated_change_version_seq", metadata=meta)
    replicated = sa.Table(
        "contract_replicated", meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("origin_node", sa.String(36), nullable=False),
        sa.Column("change_version", sa.BigInteger, nullable=False),
    )
    plain = sa.Table("contract_plain", meta, sa.Column("id", sa.Integer, primary_key=True))
    return pairs, replicated, plain


def _need(store: Store, primitive: str) -> None:
    if primitive not in store.primitives:
        with pytest.raises(StoreError, match=primitive):
            store.require(primitive)
        pytest.skip(f"store {store.name!r} does not implement {primitive!r}")


class StorePrimitivesContract:
    """Upsert, claim, JSON conditions and change versions, on the store under test."""

    @pytest.fixture
    def contract_tables(self, contract_store: Store) -> tuple[sa.Table, sa.Table, sa.Table]:
        """Empty tables for the primitives: keyed pairs, a replicated table, a plain one."""
        tables = _tables()
        tables[0].metadata.create_all(contract_store.engine)
        return tables

    # --- declaration ---------------------------------------------------------------------------

    def test_require_names_store_and_primitive(self, contract_store: Store) -> None:
        contract_store.require(*contract_store.primitives, by="the contract")
        with pytest.raises(ValueError, match="no_such_primitive"):
            contract_store.require("no_such_primitive")
        assert "bulk_insert" in contract_store.primitives

    # --- upsert --------------------------------------------------------------------------------

    def test_upsert_counts_inserted_and_changed_rows_only(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "upsert")
        store, pairs = contract_store, contract_tables[0]
        rows = [{"id": i, "code": f"c{i}", "label": f"l{i}", "doc": {"n": i, "t": [i]}}
                for i in range(1200)]
        assert store.upsert(pairs, rows) == 1200
        assert store.upsert(pairs, rows) == 0  # nothing differs: nothing rewritten
        changed = [dict(r) for r in rows[:3]]
        changed[0]["label"] = "new"
        changed[1]["doc"] = {"n": -1}
        changed[2]["label"] = None
        fresh = {"id": 5000, "code": "c5000", "label": None, "doc": None}
        assert store.upsert(pairs, [*changed, fresh]) == 4
        with store.connect() as conn:
            got = {r.id: (r.label, r.doc) for r in conn.execute(
                sa.select(pairs.c.id, pairs.c.label, pairs.c.doc).where(
                    pairs.c.id.in_([0, 1, 2, 3, 5000])))}
            total = conn.execute(sa.select(sa.func.count()).select_from(pairs)).scalar_one()
        assert got == {0: ("new", {"n": 0, "t": [0]}), 1: ("l1", {"n": -1}),
                       2: (None, {"n": 2, "t": [2]}), 3: ("l3", {"n": 3, "t": [3]}),
                       5000: (None, None)}
        assert total == 1201

    def test_upsert_by_unique_key_and_chosen_columns(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "upsert")
        store, pairs = contract_store, contract_tables[0]
        store.upsert(pairs, [{"id": 1, "code": "a", "label": "x", "doc": None}])
        # the same code under another id: matched by code, only label taken
        assert store.upsert(pairs, [{"id": 99, "code": "a", "label": "y", "doc": [1]}],
                            key=["code"], update=["label"]) == 1
        with store.connect() as conn:
            row = conn.execute(sa.select(pairs.c.id, pairs.c.label, pairs.c.doc)).one()
        assert tuple(row) == (1, "y", None)
        with pytest.raises(StoreError, match="key"):
            store.upsert(pairs, [{"label": "no key"}])
        assert store.upsert(pairs, []) == 0

    def test_upsert_joins_a_transaction(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "upsert")
        store, pairs = contract_store, contract_tables[0]
        with pytest.raises(RuntimeError, match="boom"), store.transaction() as conn:
            assert store.upsert(pairs, [{"id": 1, "code": "a"}], connection=conn) == 1
            raise RuntimeError("boom")
        with store.transaction() as conn:
            store.upsert(pairs, [{"id": 1, "code": "a"}], connection=conn)
            store.upsert(pairs, [{"id": 2, "code": "b"}], connection=conn)
        with store.connect() as conn:
            ids = list(conn.execute(sa.select(pairs.c.id).order_by(pairs.c.id)).scalars())
        assert ids == [1, 2]

    # --- claim ---------------------------------------------------------------------------------

    def test_concurrent_claimers_get_different_rows(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "claim")
        store, pairs = contract_store, contract_tables[0]
        store.bulk_insert(pairs, [{"id": i, "code": f"c{i}", "state": "free"} for i in range(200)])
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def claimer(name: str) -> None:
            try:
                start.wait(timeout=30)
                while True:
                    with store.transaction() as conn:
                        rows = store.claim(conn, sa.select(pairs.c.id).where(
                            pairs.c.state == "free").order_by(pairs.c.id), limit=7)
                        if not rows:
                            return
                        ids = [r.id for r in rows]
                        done = conn.execute(sa.update(pairs).where(
                            pairs.c.id.in_(ids), pairs.c.state == "free").values(
                            state="taken", holder=name)).rowcount
                        assert done == len(ids), "a claimed row was taken by another claimer"
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        with store.connect() as conn:
            states = conn.execute(sa.select(pairs.c.state, sa.func.count()).group_by(
                pairs.c.state)).all()
        assert dict((s, n) for s, n in states) == {"taken": 200}

    def test_claim_needs_a_transaction_and_keeps_order(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "claim")
        store, pairs = contract_store, contract_tables[0]
        store.bulk_insert(pairs, [{"id": i, "code": f"c{i}"} for i in range(10)])
        query = sa.select(pairs.c.id).order_by(pairs.c.id.desc())
        with store.connect() as conn, pytest.raises(StoreError, match="transaction"):
            store.claim(conn, query, limit=3)
        with store.transaction() as conn:
            assert [r.id for r in store.claim(conn, query, limit=3)] == [9, 8, 7]
            locked = conn.execute(store.locked(sa.select(pairs.c.id).where(pairs.c.id == 4)))
            assert locked.scalar_one() == 4

    # --- JSON ----------------------------------------------------------------------------------

    def test_json_conditions(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "json")
        store, pairs = contract_store, contract_tables[0]
        docs: list[Any] = [
            {"a": {"b": 1}, "tags": ["x", "y"]},
            {"a": {"b": "1"}, "tags": ["y"]},
            {"a": {"b": True}, "tags": []},
            {"a": {"b": None}, "é ü": "wide", "tags": ["z"]},
            {"a": 1},
        ]
        with store.transaction() as conn:
            conn.execute(sa.insert(pairs), [{"id": i, "code": f"c{i}", "doc": d}
                                            for i, d in enumerate(docs)])
            # arrays: rows whose column holds the array itself
            conn.execute(sa.insert(pairs), [{"id": 10 + i, "code": f"t{i}", "doc": d["tags"]}
                                            for i, d in enumerate(docs[:4])])

        def ids(condition: sa.ColumnElement[bool]) -> list[int]:
            with store.connect() as conn:
                return list(conn.execute(sa.select(pairs.c.id).where(condition)
                                         .order_by(pairs.c.id)).scalars())

        doc = pairs.c.doc
        assert ids(store.json_path_equals(doc, ("a", "b"), 1)) == [0]
        assert ids(store.json_path_equals(doc, ("a", "b"), "1")) == [1]
        assert ids(store.json_path_equals(doc, ("a", "b"), True)) == [2]
        assert ids(store.json_path_equals(doc, ("a", "b"), None)) == [3]
        assert ids(store.json_path_equals(doc, ("é ü",), "wide")) == [3]
        assert ids(store.json_path_equals(doc, ("a",), 1)) == [4]
        assert ids(store.json_path_equals(doc, ("tags",), "y")) == []
        arrays = pairs.c.id >= 10
        assert ids(arrays & store.json_array_contains(doc, "y")) == [10, 11]
        assert ids(arrays & store.json_array_within(doc, ["y", "z"])) == [11, 12, 13]
        assert ids(arrays & store.json_array_overlaps(doc, ["x", "z"])) == [10, 13]
        assert ids(arrays & store.json_array_overlaps(doc, [])) == []

    # --- change versions -----------------------------------------------------------------------

    def test_stamp_gives_each_written_row_a_newer_version(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "change_version")
        store, replicated = contract_store, contract_tables[1]
        with store.transaction() as conn:
            rows = store.stamp(replicated, [{"id": f"r{i}", "value": i} for i in range(5)],
                               connection=conn)
            conn.execute(sa.insert(replicated), rows)
        with store.transaction() as conn:
            conn.execute(sa.update(replicated).where(replicated.c.id == "r2").values(
                **store.stamp(replicated, [{"value": 20}])[0]))
        with store.connect() as conn:
            got = {r.id: (r.origin_node, int(r.change_version)) for r in conn.execute(
                sa.select(replicated))}
        assert {node for node, _ in got.values()} == {store.node_id}
        versions = [got[f"r{i}"][1] for i in (0, 1, 3, 4)]
        assert versions == sorted(versions) and len(set(versions)) == 4
        assert got["r2"][1] > max(versions)
        with pytest.raises(StoreError, match="not replicated"):
            store.stamp(contract_tables[2], [{"id": 1}])

    def test_claim_update_and_update_each(
        self, contract_store: Store, contract_tables: tuple[sa.Table, ...]
    ) -> None:
        _need(contract_store, "claim")
        _need(contract_store, "change_version")
        store = contract_store
        meta = sa.MetaData()
        sa.Sequence("contract_jobs_change_version_seq", metadata=meta)
        jobs = sa.Table(
            "contract_jobs", meta,
            sa.Column("id", sa.String(16), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("token", sa.String(32), nullable=True),
            sa.Column("out", _JSON, nullable=True),
            sa.Column("origin_node", sa.String(36), nullable=False),
            sa.Column("change_version", sa.BigInteger, nullable=False),
        )
        meta.create_all(store.engine)
        with store.transaction() as conn:
            conn.execute(sa.insert(jobs), store.stamp(
                jobs, [{"id": f"j{i}", "state": "free"} for i in range(5)], connection=conn))
        query = (sa.select(jobs.c.id, jobs.c.state.label("was"))
                 .where(jobs.c.state == "free").order_by(jobs.c.id.desc()))
        with store.transaction() as conn:
            rows = store.claim_update(conn, jobs, query, limit=3, values={"state": "held"},
                                      per_row={"token": ["a", "b", "c"]}, carry=["was"],
                                      returning=[jobs.c.id, jobs.c.token])
        assert sorted(rows) == [("j2", "c", "free"), ("j3", "b", "free"), ("j4", "a", "free")]
        with store.transaction() as conn:
            done = store.update_each(
                conn, jobs,
                [{"id": "j4", "out": {"r": 1}, "expected": "a"},   # right token
                 {"id": "j3", "out": [2], "expected": "zzz"},      # wrong token: refused
                 {"id": "j2", "out": "3", "expected": None},       # no expectation
                 {"id": "j0", "out": None, "expected": None}],     # not held: refused
                assign=["out"], expect={"token": "expected"}, values={"state": "done"},
                where=[jobs.c.state == "held"], returning=[jobs.c.id, jobs.c.out])
        assert sorted((r.id, r.out) for r in done) == [("j2", "3"), ("j4", {"r": 1})]
        with store.connect() as conn:
            got = dict(conn.execute(sa.select(jobs.c.id, jobs.c.state)).all())
            versions = list(conn.execute(sa.select(jobs.c.change_version)).scalars())
        assert got == {"j0": "free", "j1": "free", "j2": "done", "j3": "held", "j4": "done"}
        assert len(set(versions)) == 5
