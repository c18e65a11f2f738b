"""Proof on real node processes: ``rubix-integration serve`` on loopback ports, each node with its
own store (SQLite and PostgreSQL mixed), written to while they sync."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from rubix_integration._settings import resolve_settings
from rubix_integration.codecs.hlc import HybridClock, merge_key, pack, wall_ms
from rubix_integration.replication.models import CHECKPOINT_TABLE
from rubix_integration.stores.base import Store
from rubix_integration.stores.replicated import StoreClock
from tests.fixtures.stores import open_store
from tests.test_replication_support import (
    Node,
    T,
    delete,
    free_port,
    put,
    rows,
    task_row,
    wait_for,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.postgres]

FAST = ["--interval", "1", "--batch-size", "20", "--timeout", "5"]


class Cluster:
    """Nodes that list each other as peers, and a store handle per node for writing."""

    def __init__(self, tmp: Path, urls: dict[str, str], args: list[str],
                 env: dict[str, dict[str, str]] | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.stores: dict[str, Store] = {}
        for name, url in urls.items():
            self.nodes[name] = Node(name, url, free_port(), tmp, args=args,
                                    env=(env or {}).get(name))
            store = open_store(url, resolve_settings(store_url=url, data_dir=tmp / name))
            store.create_schema()
            self.stores[name] = store
        for name, node in self.nodes.items():
            node.peers = [n.url for other, n in self.nodes.items() if other != name]

    def start(self) -> Cluster:
        threads = [threading.Thread(target=n.start) for n in self.nodes.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        return self

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for store in self.stores.values():
            store.close()

    def converged(self) -> bool:
        found = [rows(s) for s in self.stores.values()]
        return all(f == found[0] for f in found[1:])

    def wait_converged(self, timeout: float = 40) -> dict[Any, dict[str, Any]]:
        for node in self.nodes.values():
            if node.proc is not None:
                node.notify()
        wait_for(self.converged, timeout, "every store to hold the same rows", every=0.25)
        return rows(next(iter(self.stores.values())))


def sqlite_url(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / f'{name}.sqlite'}"


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(urls: dict[str, str], args: list[str] = FAST,
             env: dict[str, dict[str, str]] | None = None) -> Cluster:
        cluster = Cluster(tmp_path, urls, args, env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def test_three_nodes_written_at_once_end_identical_row_for_row(
    cluster_factory: Any, tmp_path: Path, pg_database: str,
) -> None:
    cluster = cluster_factory({"node-a": sqlite_url(tmp_path, "a"), "node-b": pg_database,
                               "node-c": sqlite_url(tmp_path, "c")}).start()
    stop = time.monotonic() + 4
    counts: dict[str, int] = {}

    def writer(name: str, seed: int) -> None:
        rnd = random.Random(seed)
        store, node = cluster.stores[name], cluster.nodes[name]
        done = 0
        while time.monotonic() < stop:
            key = f"k{rnd.randrange(25)}"
            if rnd.random() < 0.25:
                delete(store, key)
            else:
                put(store, key, rnd.choice(["pending", "running", "done"]),
                    by=name, n=rnd.randrange(1000))
            done += 1
            if done % 3 == 0:
                node.notify()
            time.sleep(rnd.uniform(0.005, 0.03))
        counts[name] = done

    threads = [threading.Thread(target=writer, args=(n, i)) for i, n in
               enumerate(cluster.nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = cluster.wait_converged()
    assert sum(counts.values()) > 60 and len(final) > 10
    assert {r["origin_node"] for r in final.values()} == set(cluster.nodes)
    # every node reports what it applied, and the history holds successful syncs
    for node in cluster.nodes.values():
        status = node.get("/p2p/status")
        assert status["active_peers"] == 2 and status["sync_running"] is True
        assert status["tables_synced"] >= 4 and status["last_sync"]
        assert any(h["ok"] for h in node.get("/p2p/sync/history")["history"])


def test_a_partitioned_node_converges_on_the_rule_after_it_returns(
    cluster_factory: Any, tmp_path: Path, pg_database: str,
) -> None:
    cluster = cluster_factory({"node-a": sqlite_url(tmp_path, "a"), "node-b": pg_database,
                               "node-c": sqlite_url(tmp_path, "c")}).start()
    a, c = cluster.stores["node-a"], cluster.stores["node-c"]
    for i in range(8):
        put(a, f"p{i}", "pending")
    cluster.wait_converged()
    cluster.nodes["node-c"].stop()
    # both sides of the partition write the same rows
    for i in range(4):
        put(c, f"p{i}", "running", side="c")
        put(a, f"p{i}", "done", side="a")
    put(c, "p5", "running", side="c")
    delete(a, "p5")
    put(a, "p6", "running", side="a")
    delete(c, "p6")
    put(c, "only-c", "pending")
    cluster.nodes["node-a"].notify()
    expected = {}
    for key, row in rows(a).items():
        other = rows(c).get(key)
        if other is not None and merge_key(other["change_version"], 0, other["origin_node"]) > \
                merge_key(row["change_version"], 0, row["origin_node"]):
            row = other
        expected[key] = row
    expected["only-c"] = rows(c)["only-c"]
    cluster.nodes["node-c"].start()
    final = cluster.wait_converged()

    def live(found: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
        return {k: r for k, r in found.items() if r["deleted_at"] is None}

    assert live(final) == live(expected)
    # the later writes won on each side of the partition; the deletes stay deleted (as
    # tombstones, or gone once every peer acknowledged them)
    assert final["p0"]["data"] == {"side": "a"}
    assert expected["p5"]["deleted_at"] is not None and expected["p6"]["deleted_at"] is not None
    assert all(final.get(k, {"deleted_at": 1})["deleted_at"] is not None for k in ("p5", "p6"))


def test_a_node_killed_while_applying_a_batch_keeps_whole_batches_and_converges(
    cluster_factory: Any, tmp_path: Path, pg_database: str,
) -> None:
    cluster = cluster_factory(
        {"node-a": sqlite_url(tmp_path, "a"), "node-b": pg_database},
        args=["--interval", "1", "--batch-size", "100", "--timeout", "5"],
        env={"node-b": {"RUBIX_REPLICATION_FAULT_PAUSE_MS": "2500"}})
    a, b = cluster.stores["node-a"], cluster.stores["node-b"]
    with a.transaction() as conn:
        batch = a.stamp(T, [task_row(f"r{i:03d}") for i in range(300)], connection=conn)
        a.upsert(T, batch, connection=conn)
    cluster.nodes["node-a"].start()
    node_b = cluster.nodes["node-b"]
    node_b.start()
    time.sleep(3.5)  # the first batch is in, the second is being applied
    node_b.stop(kill=True)
    held = rows(b)
    with b.connect() as conn:
        cursor = conn.execute(sa.select(CHECKPOINT_TABLE.c.cursor).where(
            CHECKPOINT_TABLE.c.peer_id == "node-a",
            CHECKPOINT_TABLE.c.table_name == "workflow_tasks")).scalar()
    assert len(held) % 100 == 0 and len(held) < 300, len(held)
    # the rows held are exactly those up to the checkpoint, written in the same transaction
    below = [k for k, r in rows(a).items() if r["change_version"] <= int(cursor or 0)]
    assert sorted(held) == sorted(below)
    node_b.start(env={"RUBIX_REPLICATION_FAULT_PAUSE_MS": "0"})
    final = cluster.wait_converged()
    assert len(final) == 300


def test_clock_skew_gives_no_permanent_winner_and_the_bound_refuses(
    cluster_factory: Any, tmp_path: Path, pg_database: str,
) -> None:
    five = 300_000
    offsets = {"node-a": five, "node-b": -five, "node-c": 0}
    cluster = cluster_factory(
        {"node-a": sqlite_url(tmp_path, "a"), "node-b": pg_database,
         "node-c": sqlite_url(tmp_path, "c")},
        args=[*FAST, "--max-drift", "660"],
        env={n: {"RUBIX_REPLICATION_CLOCK_OFFSET_MS": str(o)} for n, o in offsets.items()})
    for name, offset in offsets.items():
        # the node's own code writes with the node's clock
        cluster.stores[name]._store_clock = StoreClock(
            HybridClock(lambda o=offset: wall_ms() + o))  # type: ignore[misc]
    cluster.start()
    a, b, c = (cluster.stores[n] for n in ("node-a", "node-b", "node-c"))
    fast = put(a, "x", "pending", by="fast")
    assert cluster.wait_converged()["x"]["change_version"] == fast
    # the slow node writes after it saw the fast node's write: the slow node wins
    slow = put(b, "x", "running", by="slow")
    assert slow > fast
    assert cluster.wait_converged()["x"]["data"] == {"by": "slow"}
    put(c, "x", "done", by="normal")
    assert cluster.wait_converged()["x"]["data"] == {"by": "normal"}
    put(a, "x", "pending", by="fast-again")
    assert cluster.wait_converged()["x"]["data"] == {"by": "fast-again"}
    # a change stamped beyond the bound (11 min ahead of the normal node) is refused
    node_c = cluster.nodes["node-c"]
    row = {**task_row("too-far"), "origin_node": "node-a",
           "change_version": pack(wall_ms() + 660_000 + 60_000)}
    row["deleted_at"] = None
    answer = node_c.post("/p2p/sync/bidirectional",
                         {"node_id": "node-a", "table": "workflow_tasks", "changes": [row]})
    assert answer["applied"]["refused"][0]["key"] == ["too-far"]
    assert "too-far" not in rows(c)
    assert node_c.get("/p2p/status")["rows_refused"] >= 1


def test_concurrent_update_and_insert_on_two_nodes_converge_and_status_counts_match(
    cluster_factory: Any, tmp_path: Path, pg_database: str,
) -> None:
    from websockets.sync.client import connect

    cluster = cluster_factory({"node-a": sqlite_url(tmp_path, "a"), "node-b": pg_database},
                              args=["--interval", "30", "--timeout", "5"]).start()
    a, b = cluster.stores["node-a"], cluster.stores["node-b"]
    put(a, "shared", "pending", v=0)
    cluster.wait_converged()
    node_b = cluster.nodes["node-b"]
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    closing = contextlib.ExitStack()
    ws = closing.enter_context(connect(node_b.url.replace("http", "ws") + "/p2p/ws",
                                       open_timeout=5))

    def listen() -> None:
        while not stop.is_set():
            try:
                events.append(json.loads(ws.recv(timeout=0.2)))
            except TimeoutError:
                continue
            except Exception:
                return

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        wait_for(lambda: any(e["event"] == "hello" for e in events), 10, "the hello event")
        # the same row updated and the same key inserted on both nodes, neither having
        # seen the other's write
        versions = {"node-a": (put(a, "shared", "running", by="a"),
                               put(a, "dup", "pending", by="a")),
                    "node-b": (put(b, "shared", "done", by="b"),
                               put(b, "dup", "running", by="b"))}
        final = cluster.wait_converged()
        for i, key in enumerate(("shared", "dup")):
            winner = max(versions, key=lambda n: merge_key(versions[n][i], 0, n))
            assert final[key]["origin_node"] == winner
            assert final[key]["data"] == {"by": winner[-1]}
        status = node_b.get("/p2p/status")
        wait_for(lambda: sum(1 for e in events if e["event"] == "conflict")
                 >= status["conflicts_resolved"] > 0, 10, "the conflict events")
    finally:
        stop.set()
        listener.join(5)
        closing.close()
    status = node_b.get("/p2p/status")
    conflicts = [e for e in events if e["event"] == "conflict"]
    applied = sum(e["rows_applied"] for e in events if e["event"] == "sync_completed")
    assert status["conflicts_resolved"] == len(conflicts) >= 1
    assert status["rows_applied"] == applied + 1  # the first row, before the client connected
    assert {c["key"][0] for c in conflicts} <= {"shared", "dup"}
    assert all("local" in c and "incoming" in c for c in conflicts)
    assert any(e["event"] == "sync_started" for e in events)


def test_serve_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rubix_integration", "serve", "--store",
         sqlite_url(tmp_path, "x"), "--tls-cert", __file__], capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 1 and "go together" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_httpx_is_not_imported_by_the_cli() -> None:
    import subprocess
    import sys

    code = ("import sys, rubix_integration.cli; "
            "print(sorted(m for m in ('httpx', 'starlette', 'uvicorn', 'sqlalchemy') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert httpx  # the tests use it
