"""Workflow queue figures on PostgreSQL, side by side with a bare SKIP LOCKED loop and, when
installed, pgqueuer and procrastinate.

    .venv-test/bin/python bench/bench_workflow.py [--tasks 4000] [--workers 4] [--batch 32]
        [--rounds 1] [--rt-jobs 200] [--pg URL] [--anchors .venv-anchors]

Every system runs in a scratch database of its own (created and dropped here), on the same
server, in the same run, with the same jobs: ``--tasks`` no-op jobs with a 48-byte payload,
drained by ``--workers`` processes. Columns:

- *drain jobs/s*: jobs claimed and completed per second, from the workers' start to the last
  completion;
- *round trips per job*: client/server exchanges per job, counted by a relay on 127.0.0.1 in
  front of the server while one process drains ``--rt-jobs`` jobs (so idle polls count too);
- *enqueue*: jobs/s of one bulk enqueue of ``--tasks`` jobs (ours and the anchors timed on a
  connected store with its schema in place), and round trips of a single one.

Rows: ours one at a time (``get_next_task`` + ``complete_task``, as the datasets API's
documentation uses them), ours batched (``Worker(batch_size=--batch)``), the bare loop one at a
time and batched (the floor: one
``UPDATE … SKIP LOCKED RETURNING`` to claim, one ``UPDATE`` to complete, autocommit, no
provenance), and pgqueuer and procrastinate run by ``bench/_anchors.py`` inside the virtual
environment ``--anchors`` (``python3 -m venv .venv-anchors && .venv-anchors/bin/pip install
pgqueuer procrastinate``; skipped when missing). With ``--rounds`` > 1 the systems are
interleaved and medians printed. Figures only: nothing here fails on time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rubix_integration.testing.roundtrips import RoundTripCounter

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"p": "x" * 40}  # 48 bytes as JSON
IDLE = 0.5  # seconds a drained worker waits before leaving


# --- scratch databases and the round-trip relay ------------------------------------------------


def _admin(pg: str) -> str:
    url = sa.engine.make_url(pg).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@contextmanager
def scratch(pg: str) -> Iterator[str]:
    """A fresh database on the server; its SQLAlchemy URL."""
    import psycopg

    name = f"rubix_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin(pg), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(pg).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin(pg), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def counted(url: str, run: Callable[[str], Any]) -> int:
    """Round trips ``run(relayed_url)`` made."""
    relay = RoundTripCounter(url)
    try:
        run(relay.url)
        time.sleep(0.1)
        return relay.measure()
    finally:
        relay.close()


# --- ours --------------------------------------------------------------------------------------


def _ours_drain(url: str, index: int, start_at: float, batch: int) -> tuple[int, float]:
    from rubix_integration import Manager
    from rubix_integration.workflow import Worker

    with Manager(store_url=url, load_plugins=()) as manager:
        wf = manager.workflow
        _ = manager.provenance.node_id
        wf.get_task_status  # noqa: B018 - built now, not in the timed part
        while time.time() < start_at:
            time.sleep(0.005)
        if batch > 1:
            worker = Worker(wf, lambda task: {"ok": True}, worker_id=f"bench-{index}",
                            poll_interval=0.05, batch_size=batch)
            stats = worker.run(exit_when_idle=True, idle_timeout=IDLE)
            return stats.completed, time.time() - IDLE
        done, idle_since = 0, None
        while True:
            task = wf.get_next_task(f"bench-{index}")
            if task is None:
                idle_since = idle_since or time.time()
                if time.time() - idle_since >= IDLE:
                    return done, idle_since
                time.sleep(0.05)
                continue
            idle_since = None
            wf.complete_task(task.task_id, {"ok": True}, lease_token=task.lease_token)
            done += 1


def _ours_jobs(n: int, prefix: str) -> Iterator[dict[str, Any]]:
    return ({"task_id": f"{prefix}{i}", "task_type": "bench", "data": PAYLOAD}
            for i in range(n))


def ours(url: str, args: argparse.Namespace, batch: int) -> dict[str, float]:
    from rubix_integration import Manager

    with Manager(store_url=url, load_plugins=()) as manager:
        # the schema made and the store connected before timing, as the anchors install theirs
        manager.workflow.counts()
        _ = manager.provenance.node_id
        t0 = time.perf_counter()
        manager.submit_tasks(_ours_jobs(args.tasks, "d"))
        enqueue = args.tasks / (time.perf_counter() - t0)
    drained = _drain(_ours_drain, url, args, batch)

    def one_process(relayed: str) -> None:
        _ours_drain(relayed, 0, 0.0, batch)

    empty = counted(url, one_process)  # starting, and idling before leaving
    with Manager(store_url=url, load_plugins=()) as manager:
        manager.submit_tasks(_ours_jobs(args.rt_jobs, "r"))
    trips = (counted(url, one_process) - empty) / args.rt_jobs

    relay = RoundTripCounter(url)
    try:
        with Manager(store_url=relay.url, load_plugins=()) as manager:
            manager.submit_task("warm", "bench", PAYLOAD)  # connecting, the chain's head
            time.sleep(0.1)
            before = relay.measure()
            for i in range(50):
                manager.submit_task(f"s{i}", "bench", PAYLOAD)
            time.sleep(0.1)
            single = (relay.measure() - before) / 50
    finally:
        relay.close()
    return {"drain": drained, "trips": trips, "enqueue": enqueue, "single": single}


# --- the bare SKIP LOCKED loop -----------------------------------------------------------------

BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_jobs (id bigserial PRIMARY KEY, status text NOT NULL
  DEFAULT 'queued', payload jsonb NOT NULL, result jsonb);
CREATE INDEX IF NOT EXISTS bare_jobs_queued ON bare_jobs (id) WHERE status = 'queued';
"""
BARE_CLAIM = """UPDATE bare_jobs SET status = 'running' WHERE id IN (
  SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id LIMIT %s
  FOR UPDATE SKIP LOCKED) RETURNING id, payload"""
BARE_DONE = "UPDATE bare_jobs SET status = 'done', result = '{\"ok\":true}' WHERE id = ANY(%s)"


def _bare_drain(url: str, index: int, start_at: float, batch: int) -> tuple[int, float]:
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True, connect_timeout=5) as conn:
        while time.time() < start_at:
            time.sleep(0.005)
        done, idle_since = 0, None
        while True:
            rows = conn.execute(BARE_CLAIM, (batch,)).fetchall()
            if not rows:
                idle_since = idle_since or time.time()
                if time.time() - idle_since >= IDLE:
                    return done, idle_since
                time.sleep(0.05)
                continue
            idle_since = None
            conn.execute(BARE_DONE, ([r[0] for r in rows],))
            done += len(rows)


def _bare_enqueue(url: str, n: int) -> None:
    import json

    import psycopg

    with psycopg.connect(libpq(url), connect_timeout=5) as conn:
        conn.execute(BARE_SCHEMA)
        with conn.cursor() as cur, cur.copy("COPY bare_jobs (payload) FROM STDIN") as copy:
            text = json.dumps(PAYLOAD)
            for _ in range(n):
                copy.write_row((text,))


def bare(url: str, args: argparse.Namespace, batch: int) -> dict[str, float]:
    import json

    import psycopg

    t0 = time.perf_counter()
    _bare_enqueue(url, args.tasks)
    enqueue = args.tasks / (time.perf_counter() - t0)
    drained = _drain(_bare_drain, url, args, batch)
    empty = counted(url, lambda relayed: _bare_drain(relayed, 0, 0.0, batch))
    _bare_enqueue(url, args.rt_jobs)
    trips = (counted(url, lambda relayed: _bare_drain(relayed, 0, 0.0, batch))
             - empty) / args.rt_jobs

    def singles(relayed: str) -> None:
        with psycopg.connect(libpq(relayed), autocommit=True, connect_timeout=5) as conn:
            for _ in range(50):
                conn.execute("INSERT INTO bare_jobs (payload) VALUES (%s)",
                             (json.dumps(PAYLOAD),))

    relay = RoundTripCounter(url)
    try:
        singles(relay.url)
        time.sleep(0.1)
        single = (relay.measure() - 2) / 50  # less the connection's start-up exchanges (about 2)
    finally:
        relay.close()
    return {"drain": drained, "trips": trips, "enqueue": enqueue, "single": single}


# --- pgqueuer and procrastinate, in their own environment ---------------------------------------


def anchor(url: str, args: argparse.Namespace, system: str, batch: int) -> dict[str, float]:
    """Run ``bench/_anchors.py`` in the anchors' environment; its figures."""
    import json

    python = Path(args.anchors) / "bin" / "python"
    script = ROOT / "bench" / "_anchors.py"

    def call(*extra: str, relayed: str | None = None) -> dict[str, float]:
        command = [str(python), str(script), system, "--dsn", libpq(url), "--batch",
                   str(batch), "--workers", str(args.workers), *extra]
        if relayed is not None:
            command += ["--relayed", libpq(relayed)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=600,
                             check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{system}: {out.stderr.strip()[-1500:]}")
        figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        return figures

    figures = call("--tasks", str(args.tasks))
    relay = RoundTripCounter(url)
    try:
        def trips(n: int, measure: str) -> int:
            before = relay.measure()
            call("--tasks", str(n), "--measure", measure, relayed=relay.url)
            time.sleep(0.1)
            return relay.measure() - before

        empty = trips(0, "drain")  # starting, and idling before leaving
        figures["trips"] = (trips(args.rt_jobs, "drain") - empty) / args.rt_jobs
        empty = trips(0, "single")
        figures["single"] = (trips(50, "single") - empty) / 50
    finally:
        relay.close()
    return figures


# --- running -----------------------------------------------------------------------------------


def _drain(target: Callable[..., tuple[int, float]], url: str, args: argparse.Namespace,
           batch: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # let every process import and connect first
    with ctx.Pool(args.workers) as pool:
        results = pool.starmap(target, [(url, i, start_at, batch)
                                        for i in range(args.workers)])
    completed = sum(c for c, _ in results)
    finished = max(t for _, t in results)
    if completed != args.tasks:
        print(f"  ! {completed} of {args.tasks} jobs completed", file=sys.stderr)
    return completed / (finished - start_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rt-jobs", type=int, default=200)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--anchors", default=str(ROOT / ".venv-anchors"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    runs: list[tuple[str, Callable[[str], dict[str, float]]]] = [
        ("ours, get_next_task + complete_task", lambda u: ours(u, args, 1)),
        (f"ours, Worker(batch_size={args.batch})", lambda u: ours(u, args, args.batch)),
        ("bare SKIP LOCKED loop, one at a time", lambda u: bare(u, args, 1)),
        (f"bare SKIP LOCKED loop, batch {args.batch}", lambda u: bare(u, args, args.batch)),
    ]
    if (Path(args.anchors) / "bin" / "python").exists():
        runs += [
            ("pgqueuer (asyncpg), batch 10", lambda u: anchor(u, args, "pgqueuer", 10)),
            (f"pgqueuer, batch {args.batch}", lambda u: anchor(u, args, "pgqueuer", args.batch)),
            (f"procrastinate (psycopg), concurrency {args.workers}",
             lambda u: anchor(u, args, "procrastinate", 1)),
        ]
    else:
        print(f"(pgqueuer and procrastinate skipped: no {args.anchors})", file=sys.stderr)
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _ in runs}
    for round_ in range(args.rounds):
        for name, run in runs:
            with scratch(args.pg) as url:
                try:
                    got = run(url)
                except Exception as exc:  # an anchor that does not run here: say so
                    print(f"  ! {name}: {exc}", file=sys.stderr)
                    continue
            figures[name].append(got)
            print(f"  round {round_ + 1}: {name}: {got}", file=sys.stderr)

    def med(name: str, key: str) -> float | None:
        values = [f[key] for f in figures[name] if key in f]
        return statistics.median(values) if values else None

    def cell(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    print(f"\n{args.tasks} no-op jobs (48-byte payload), {args.workers} worker processes, "
          f"{args.rounds} round(s){' (medians)' if args.rounds > 1 else ''}; "
          f"round trips over {args.rt_jobs} jobs in one process\n")
    print("| | drain jobs/s | round trips per job | bulk enqueue jobs/s "
          "| single enqueue round trips |")
    print("| --- | --- | --- | --- | --- |")
    for name, _ in runs:
        if not figures[name]:
            print(f"| {name} | (did not run) | | | |")
            continue
        print(f"| {name} | {cell(med(name, 'drain'))} | {cell(med(name, 'trips'), 2)} | "
              f"{cell(med(name, 'enqueue'))} | {cell(med(name, 'single'), 1)} |")
    print(f"\nmachine: {os.cpu_count()} cores, shared with other work while measured")


if __name__ == "__main__":
    main()
