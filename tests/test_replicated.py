"""Replicated tables: the hybrid logical clock, then the store's stamping on both stores."""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import SQLModel

from rubix_integration import Manager
from rubix_integration._settings import Settings
from rubix_integration.codecs.hlc import (
    LOGICAL_BITS,
    MAX_STAMP,
    ClockDriftError,
    HybridClock,
    merge_key,
    pack,
    physical_ms,
    unpack,
    wall_ms,
)
from rubix_integration.stores.base import Store
from rubix_integration.stores.models import get_meta
from rubix_integration.stores.replicated import (
    HLC_KEY,
    REPLICATED_COLUMNS,
    StoreClock,
    is_replicated,
    replicated_tables,
)
from rubix_integration.tokens.demo import make_sample
from rubix_integration.tokens.models import TOKEN_TABLE, record_key
from rubix_integration.tokens.report import run_report
from rubix_integration.workflow.models import TASK_TABLE
from tests.fixtures.stores import open_store

# --- the clock ----------------------------------------------------------------------------------

_MS = st.integers(min_value=0, max_value=4_000_000_000_000)


def _scripted(readings: list[int]) -> Callable[[], int]:
    """A wall clock returning ``readings`` in turn, then the last one forever."""
    it = iter(readings)
    last = [readings[0] if readings else 0]

    def wall() -> int:
        last[0] = next(it, last[0])
        return last[0]

    return wall


@given(st.lists(_MS, min_size=1, max_size=60))
def test_now_only_grows_whatever_the_wall_clock_does(readings: list[int]) -> None:
    clock = HybridClock(_scripted(readings))
    stamps = [clock.now() for _ in readings]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    # never behind the wall clock it read
    assert all(physical_ms(s) >= r for s, r in zip(stamps, readings, strict=True))


@given(st.lists(st.tuples(st.booleans(), _MS), min_size=1, max_size=60))
def test_update_stays_above_everything_seen(steps: list[tuple[bool, int]]) -> None:
    wall = 2_000_000_000_000
    clock = HybridClock(lambda: wall, max_drift_ms=10**13)
    seen = 0
    for receive, ms in steps:
        stamp = clock.update(pack(ms, 5)) if receive else clock.now()
        if receive:
            assert stamp > pack(ms, 5)
        assert stamp > seen
        seen = stamp


def test_counter_carries_into_the_next_millisecond() -> None:
    clock = HybridClock(lambda: 1000, last=pack(1000, (1 << LOGICAL_BITS) - 1))
    assert unpack(clock.now()) == (1001, 0)
    assert unpack(clock.now()) == (1001, 1)


def test_a_clock_seeded_with_last_never_goes_below_it() -> None:
    before = HybridClock(lambda: 5000)
    stamps = [before.now() for _ in range(3)]
    after = HybridClock(lambda: 10, last=stamps[-1])  # restarted with a wall clock set back
    assert after.now() > stamps[-1]


def test_a_stamp_too_far_ahead_is_refused_and_leaves_the_clock_alone() -> None:
    clock = HybridClock(lambda: 1_000_000, max_drift_ms=300_000)
    mine = clock.now()
    assert clock.update(pack(1_300_000)) > pack(1_300_000)  # exactly at the bound: taken
    with pytest.raises(ClockDriftError, match="300001 ms ahead") as info:
        clock.update(pack(1_300_001))
    assert info.value.max_drift_ms == 300_000 and info.value.local_ms == 1_000_000
    assert isinstance(info.value, ValueError)
    assert clock.last < pack(1_300_001) and clock.last > mine


def test_default_drift_bound_is_five_minutes() -> None:
    clock = HybridClock(lambda: 0)
    with pytest.raises(ClockDriftError):
        clock.update(pack(300_001))


@pytest.mark.parametrize("bad", [-1, MAX_STAMP + 1])
def test_out_of_range_stamps_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="not a hybrid logical clock stamp"):
        HybridClock().update(bad)
    with pytest.raises(ValueError):
        pack(-1)


@given(st.lists(st.tuples(st.integers(0, MAX_STAMP), st.integers(-3, 3),
                          st.text(alphabet="0123456789abcdef-", min_size=1, max_size=8)),
                min_size=2, max_size=20))
def test_merge_order_is_total_and_picks_one_winner_in_any_order(
    versions: list[tuple[int, int, str]],
) -> None:
    keys = [merge_key(*v) for v in versions]
    winner = max(keys)
    assert max(reversed(keys)) == winner
    for a in keys:
        for b in keys:
            # exactly one of <, ==, > holds, and == only for identical versions
            assert (a < b) + (a == b) + (a > b) == 1
    # the stamp decides first, then the priority, then the node id
    top = max(v[0] for v in versions)
    assert winner[0] == top
    assert winner[1] == max(v[1] for v in versions if v[0] == top)


# --- the rule and the store's stamps ------------------------------------------------------------


def test_the_task_table_follows_the_rule_and_provenance_stays_outside() -> None:
    names = [t.name for t in replicated_tables(SQLModel.metadata)]
    assert "workflow_tasks" in names
    assert "provenance_records" not in names and "rubix_meta" not in names
    assert is_replicated(TASK_TABLE)
    assert set(REPLICATED_COLUMNS) <= set(TASK_TABLE.c.keys())


def _write(store: Store, count: int, start: int = 0) -> list[int]:
    """Insert ``count`` tasks through ``stamp`` (several rows) and return their versions."""
    rows = [{"task_id": f"t{start + i}", "task_type": "x", "state": "pending", "data": {},
             "tags": [], "required_caps": [], "preferred_caps": [], "created_at_us": 1,
             "updated_at_us": 1} for i in range(count)]
    with store.transaction() as conn:
        stamped = store.stamp(TASK_TABLE, rows, connection=conn)
        conn.execute(sa.insert(TASK_TABLE), stamped)
    return [r["change_version"] for r in stamped]


def test_stamps_are_hybrid_clock_stamps_near_the_wall_clock(store: Store) -> None:
    before = wall_ms()
    versions = _write(store, 3)
    with store.transaction() as conn:
        conn.execute(sa.update(TASK_TABLE).where(TASK_TABLE.c.task_id == "t1").values(
            store.stamp(TASK_TABLE, [{"state": "done"}])[0]))
    with store.connect() as conn:
        stored = dict(conn.execute(sa.select(TASK_TABLE.c.task_id,
                                             TASK_TABLE.c.change_version)).all())
    assert len(set(stored.values())) == 3
    assert stored["t1"] > max(versions)
    for version in stored.values():
        # within a few seconds of the wall clock (PostgreSQL's sequence may lag by two)
        assert before - 3000 <= physical_ms(int(version)) <= wall_ms() + 1000


def test_stamps_never_go_back_after_a_restart_with_the_clock_set_back(
    store: Store, store_url: str, store_settings: Settings,
) -> None:
    first = _write(store, 4)
    store.close()
    with open_store(store_url, store_settings) as again:
        # a wall clock an hour behind: the persisted clock still wins
        again._store_clock = StoreClock(HybridClock(lambda: wall_ms() - 3_600_000))
        later = _write(again, 4, start=10)
        assert min(later) > max(first)
        if again.name == "sqlite":
            assert int(get_meta(again, HLC_KEY) or 0) == max(later)


def test_concurrent_writers_on_one_store_never_share_a_version(
    store: Store, store_url: str, store_settings: Settings,
) -> None:
    others = [open_store(store_url, store_settings) for _ in range(3)]
    try:
        def work(i: int) -> list[int]:
            out: list[int] = []
            for j in range(5):
                out += _write(others[i], 3, start=100 * i + 10 * j)
            return out

        with ThreadPoolExecutor(3) as pool:
            versions = [v for batch in pool.map(work, range(3)) for v in batch]
    finally:
        for other in others:
            other.close()
    with store.connect() as conn:
        stored = list(conn.execute(sa.select(TASK_TABLE.c.change_version)).scalars())
    assert len(stored) == 45 and len(set(stored)) == 45 and sorted(versions) == sorted(stored)


# --- the token tables -----------------------------------------------------------------------------


def test_a_token_gone_from_its_node_is_tombstoned_and_reports_skip_it(
    store_url: str, tmp_path: Path,
) -> None:
    sample = make_sample(tmp_path / "root", broken=False, nodes=2, tokens_per_node=4,
                         ft_per_node=0)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        assert manager.sync_tokens([sample.root]).ok
        db = sample.nodes[0] / "Rubix" / "rubix.db"
        with sqlite3.connect(db) as conn:
            gone = conn.execute("SELECT token_id FROM TokensTable LIMIT 1").fetchone()[0]
            conn.execute("DELETE FROM TokensTable WHERE token_id = ?", (gone,))
        os.utime(db, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert manager.sync_tokens([sample.root]).ok
        t = TOKEN_TABLE
        with manager.store.connect() as conn:
            dead = conn.execute(sa.select(t).where(t.c.deleted_at.is_not(None))).all()
            live = conn.execute(sa.select(sa.func.count()).where(t.c.deleted_at.is_(None))
                                ).scalar_one()
        assert [r.token_id for r in dead] == [gone] and dead[0].origin_node == \
            manager.store.node_id
        assert live == sample.tokens - 1
        per_node = {r["node_name"]: r["tokens"]
                    for r in run_report(manager.store, "nodes", engine="store").as_dicts()}
        assert sum(per_node.values()) == sample.tokens - 1

        # the token comes back: the same row lives again, with a newer stamp
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO TokensTable (token_id, did) VALUES (?, 'x')", (gone,))
        os.utime(db, ns=(time.time_ns(), time.time_ns() + 2_000_000))
        assert manager.sync_tokens([sample.root]).ok
        with manager.store.connect() as conn:
            back = conn.execute(sa.select(t).where(t.c.token_id == gone)).one()
        assert back.deleted_at is None and back.change_version > dead[0].change_version
        assert back.record_key == dead[0].record_key


def test_record_keys_name_kind_database_and_token_unambiguously(store: Store) -> None:
    parts = [("token", "a:b", "c"), ("token", "a", "b:c"), ("ft", "a:b", "c"),
             ("token", "a:b", None), ("token", "a:b", "#1")]
    with store.connect() as conn:
        keys = [conn.execute(sa.select(record_key(sa.literal(k), sa.literal(d),
                                                  sa.literal(i, sa.String()), sa.literal(1))
                                       )).scalar_one() for k, d, i in parts]
    assert keys[0] == "token:3:a:b:=c" and keys[3] == "token:3:a:b:#1"
    assert len(set(keys)) == len(keys)
