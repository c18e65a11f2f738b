"""Replication figures between ``rubix-integration serve`` processes on loopback.

    .venv/bin/python bench/bench_replication.py [--rows 100000] [--batch 5000] [--samples 50]
        [--pending 10000] [--tombstones 200000] [--store sqlite|postgresql]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Every node keeps its own store: a SQLite file, or (``--store postgresql``) a database of its own
created on the server of ``--pg-url`` and dropped at the end.

1. Throughput: ``--rows`` changed rows written on node A, pulled by node B (``/p2p/sync/manual``)
   in batches of ``--batch`` and of the default 100 (pages grow while a backlog lasts, up to
   ``--max-batch-size`` of the node). Baseline, same run: copying the same rows from one store
   to another directly (read + bulk insert, no HTTP, no merge).
2. Visibility: one row written on A, A told (``/p2p/notify-changes``), B pulls; the time until
   the row is in B's store, ``--samples`` times. Baseline: the same write and read on one store.
3. Partition: three nodes; C stopped; ``--pending`` changes written (half on A, half on C, a
   tenth of the keys on both); C restarted; the time until all three stores hold the same rows,
   and C's bare start-up time for comparison.
4. Tombstones: ``--tombstones`` rows inserted then deleted on A, pulled and acknowledged by B,
   collected on A; the tombstones left.

Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from rubix_integration._settings import resolve_settings
from rubix_integration.replication import Replicator
from rubix_integration.replication.engine import decode_cursor, encode_cursor
from rubix_integration.stores.base import Store
from rubix_integration.stores.postgresql import PostgreSQLStore
from rubix_integration.stores.sqlite import SQLiteStore
from rubix_integration.workflow.models import TASK_TABLE as T


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``sqlite`` or ``postgresql`` (``--store``) and the server of the latter (``--pg-url``).
KIND = "sqlite"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_DATABASES: list[str] = []


def _url(path: Path) -> str:
    """The store URL of the node whose SQLite file would be ``path``: the file, or a fresh
    PostgreSQL database named after it."""
    if KIND == "sqlite":
        return f"sqlite:///{path}"
    import psycopg

    name = f"bench_repl_{uuid.uuid4().hex[:8]}_{path.stem.replace('-', '_')}"
    admin = sa.engine.make_url(PG_URL).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _DATABASES.append(name)
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@atexit.register
def _drop_databases() -> None:
    if not _DATABASES:
        return
    import psycopg

    admin = sa.engine.make_url(PG_URL).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True,
                         connect_timeout=5) as conn:
        for name in _DATABASES:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _DATABASES.clear()


_STORES: dict[str, Store] = {}


def _store(url: str, data_dir: Path | None = None) -> Store:
    if url in _STORES:
        return _STORES[url]
    sqlite = url.startswith("sqlite")
    cls = SQLiteStore if sqlite else PostgreSQLStore
    where = Path(url[len("sqlite:///"):]).parent if sqlite else Path(tempfile.gettempdir())
    settings = resolve_settings(store_url=url, data_dir=data_dir or where)
    store = cls(url, settings=settings)
    store.create_schema()
    _STORES[url] = store
    return store


def _row(key: str, **data: Any) -> dict[str, Any]:
    return {"task_id": key, "task_type": "bench", "state": "pending", "priority": 0,
            "data": data, "tags": [], "required_caps": [], "preferred_caps": [],
            "attempts": 0, "max_attempts": 3, "created_at_us": 1, "updated_at_us": 1}


def _write(store: Store, keys: list[str], **data: Any) -> None:
    for start in range(0, len(keys), 5000):
        with store.transaction() as conn:
            stamped = store.stamp(T, [_row(k, **data) for k in keys[start:start + 5000]],
                                  connection=conn)
            store.upsert(T, stamped, connection=conn)


def _count(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one())


class Node:
    def __init__(self, name: str, db: str, peers: list[str], port: int,
                 args: list[str]) -> None:
        self.name, self.db, self.peers, self.port, self.args = name, db, peers, port, args
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "rubix_integration", "serve", "--store",
               self.db, "--port", str(self.port), "--node-id", self.name,
               *self.args]
        for p in self.peers:
            cmd += ["--peer", p]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while time.perf_counter() - t0 < 120:
            try:
                if httpx.get(self.url + "/p2p/status", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                time.sleep(0.02)
        raise SystemExit(f"node {self.name} did not start within 120 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def throughput(tmp: Path, rows: int, batch: int) -> None:
    a_db, base_db = _url(tmp / "tp-a.sqlite"), _url(tmp / "tp-base.sqlite")
    a = _store(a_db)
    _write(a, [f"r{i:07d}" for i in range(rows)], payload="x" * 40)
    # baseline: the same rows copied store to store directly
    base = _store(base_db)
    t0 = time.perf_counter()
    with a.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(sa.select(T))]
    with base.transaction() as conn:
        if KIND == "sqlite":
            base.bulk_insert(T, got, connection=conn)
            how = "bulk insert"
        else:  # (the store's COPY path takes no JSON values as read back)
            conn.execute(sa.insert(T), got)
            how = "multi-row INSERT"
    direct = time.perf_counter() - t0
    print(f"[throughput] baseline direct copy of {rows} rows ({how}): {direct:.2f} s "
          f"({rows / direct:,.0f} rows/s)")
    for size in dict.fromkeys([batch, 100]):
        b_db = _url(tmp / f"tp-b-{size}.sqlite")
        pa, pb = _port(), _port()
        na = Node("tp-a", a_db, [], pa, ["--interval", "600"])
        nb = Node(f"tp-b{size}", b_db, [], pb, ["--interval", "600", "--batch-size",
                                                 str(size), "--timeout", "120"])
        na.start()
        nb.start()
        try:
            t0 = time.perf_counter()
            httpx.post(nb.url + "/p2p/peers", json={"url": na.url, "peer_id": "tp-a"},
                       timeout=30)
            answer = httpx.post(nb.url + "/p2p/sync/manual", json={}, timeout=600).json()
            # the first pull starts as the peer is added; wait until every row is in
            b = _store(b_db)
            while _count(b) < rows:
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("[throughput] the rows did not arrive within 600 s")
                time.sleep(0.05)
            took = time.perf_counter() - t0
            ok = answer.get("ok")
            print(f"[throughput] {rows} rows A->B over HTTP, batch {size}: {took:.2f} s "
                  f"({rows / took:,.0f} rows/s; {took / direct:.1f}x the direct copy; "
                  f"sync ok={ok})")
        finally:
            na.stop()
            nb.stop()


def visibility(tmp: Path, samples: int) -> None:
    a_db, b_db = _url(tmp / "vis-a.sqlite"), _url(tmp / "vis-b.sqlite")
    a, b = _store(a_db), _store(b_db)
    pa, pb = _port(), _port()
    na = Node("vis-a", a_db, [f"http://127.0.0.1:{pb}"], pa, ["--interval", "600"])
    nb = Node("vis-b", b_db, [f"http://127.0.0.1:{pa}"], pb, ["--interval", "600"])
    na.start()
    nb.start()
    local: list[float] = []
    remote: list[float] = []
    try:
        time.sleep(1)
        with httpx.Client(timeout=10) as client:
            for i in range(samples):
                key = f"v{i}"
                t0 = time.perf_counter()
                _write(a, [key])
                with a.connect() as conn:
                    conn.execute(sa.select(T.c.task_id).where(T.c.task_id == key)).one()
                local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _write(a, [key + "-r"])
                client.post(na.url + "/p2p/notify-changes", json={"tables": ["workflow_tasks"]})
                while time.perf_counter() - t0 < 30:
                    with b.connect() as conn:
                        if conn.execute(sa.select(T.c.task_id).where(
                                T.c.task_id == key + "-r")).first() is not None:
                            break
                    time.sleep(0.0005)
                remote.append(time.perf_counter() - t0)
                time.sleep(0.02)
    finally:
        na.stop()
        nb.stop()

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000

    print(f"[visibility] baseline local write+read: p50 {q(local, .5):.1f} ms")
    print(f"[visibility] write on A -> visible on B (notify, then pull): p50 "
          f"{statistics.median(remote) * 1000:.1f} ms, p95 {q(remote, .95):.1f} ms, "
          f"max {max(remote) * 1000:.1f} ms ({samples} samples)")


def partition(tmp: Path, pending: int) -> None:
    dbs = {n: _url(tmp / f"part-{n}.sqlite") for n in "abc"}
    ports = {n: _port() for n in "abc"}
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    args = ["--interval", "600", "--batch-size", "2000", "--timeout", "60"]
    nodes = {n: Node(f"part-{n}", dbs[n], [u for m, u in urls.items() if m != n], ports[n],
                     args) for n in "abc"}
    stores = {n: _store(db) for n, db in dbs.items()}
    for node in nodes.values():
        node.start()
    try:
        nodes["c"].stop()
        half = pending // 2
        overlap = pending // 10
        _write(stores["a"], [f"p{i}" for i in range(half)], side="a")
        _write(stores["c"], [f"p{i}" for i in range(half - overlap, 2 * half - overlap)],
               side="c")
        httpx.post(urls["a"] + "/p2p/notify-changes", json={}, timeout=30)
        t0 = time.perf_counter()
        startup = nodes["c"].start()  # a starting node tells its peers to pull from it

        def same() -> bool:
            with_rows = []
            for s in stores.values():
                with s.connect() as conn:
                    with_rows.append(conn.execute(sa.select(
                        sa.func.count(), sa.func.sum(T.c.change_version % 1000003))).one())
            return all(r == with_rows[0] for r in with_rows)

        while not same():
            if time.perf_counter() - t0 > 300:
                raise SystemExit("[partition] the nodes did not converge within 300 s")
            time.sleep(0.02)
        took = time.perf_counter() - t0
        print(f"[partition] {2 * half} changes pending ({overlap} keys written on both "
              f"sides): three nodes identical {took:.2f} s after C was started again "
              f"(C's start-up until it answered: {startup:.2f} s; identical "
              f"{took - startup:.2f} s after it answered)")
    finally:
        for node in nodes.values():
            node.stop()


def _pull(dst: Replicator, src: Replicator) -> None:
    while True:
        feed = src.changes("workflow_tasks", limit=10_000, reader=dst.node_id,
                           cursor=encode_cursor(dst.checkpoint(src.node_id, "workflow_tasks")),
                           exclude_origin=dst.node_id)
        dst.apply("workflow_tasks", dst.decode("workflow_tasks", feed.changes),
                  peer=src.node_id, cursor=decode_cursor(feed.cursor))
        if not feed.has_more:
            return


def tombstones(tmp: Path, count: int) -> None:
    a, b = _store(_url(tmp / "ts-a.sqlite")), _store(_url(tmp / "ts-b.sqlite"))
    ra, rb = Replicator(a), Replicator(b)
    t0 = time.perf_counter()
    chunk = 20_000
    peak = 0
    for start in range(0, count, chunk):
        keys = [f"t{i}" for i in range(start, min(start + chunk, count))]
        _write(a, keys)
        with a.transaction() as conn:
            stamped = a.stamp(T, [{"deleted_at": dt.datetime.now(dt.timezone.utc)}
                                  for _ in keys], connection=conn)
            conn.execute(
                sa.update(T).where(T.c.task_id == sa.bindparam("k")).values(
                    deleted_at=sa.bindparam("d"), origin_node=sa.bindparam("o"),
                    change_version=sa.bindparam("v")),
                [{"k": k, "d": st["deleted_at"], "o": st["origin_node"],
                  "v": st["change_version"]} for k, st in zip(keys, stamped, strict=True)])
        peak = max(peak, _count(a))
        for dst, src in ((rb, ra), (ra, rb)):  # each pulls the other, as nodes do
            _pull(dst, src)
        for dst, src in ((rb, ra), (ra, rb)):  # the next request acknowledges what was applied
            src.changes("workflow_tasks", limit=1, reader=dst.node_id,
                        cursor=encode_cursor(dst.checkpoint(src.node_id, "workflow_tasks")))
        ra.collect_tombstones()
        rb.collect_tombstones()
    took = time.perf_counter() - t0
    left_a, left_b = _count(a), _count(b)
    print(f"[tombstones] {count} inserts + {count} deletes in {took:.1f} s: "
          f"{left_a} tombstones left on A, {left_b} on B ({100 * left_a / count:.3f}% of the "
          f"deletes; at most {peak} rows held at once)")


def main() -> None:
    global KIND, PG_URL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--tombstones", type=int, default=200_000)
    parser.add_argument("--only", choices=["throughput", "visibility", "partition",
                                           "tombstones"], default=None)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help="What every node keeps its rows in.")
    parser.add_argument("--pg-url", default=PG_URL, help="The PostgreSQL server (--store "
                        "postgresql): one database per node is created there and dropped.")
    args = parser.parse_args()
    KIND, PG_URL = args.store, args.pg_url
    print(f"[setup] stores: {KIND}")
    os.environ.pop("RUBIX_STORE_URL", None)
    with tempfile.TemporaryDirectory(prefix="bench-repl-") as tmp:
        path = Path(tmp)
        if args.only in (None, "throughput"):
            throughput(path, args.rows, args.batch)
        if args.only in (None, "visibility"):
            visibility(path, args.samples)
        if args.only in (None, "partition"):
            partition(path, args.pending)
        if args.only in (None, "tombstones"):
            tombstones(path, args.tombstones)


if __name__ == "__main__":
    main()
