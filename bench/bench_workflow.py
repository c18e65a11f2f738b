"""Workflow figures: tasks claimed and completed per second on PostgreSQL by N worker processes.

    .venv/bin/python bench/bench_workflow.py [--tasks 4000] [--workers 4] [--pg URL]

Creates (and drops) a scratch database on the server. Prints figures; never fails on time.
A double claim is a task claimed more than once, or completed more than once, according to the
provenance log.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import time
import uuid

import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _noop(task: object) -> dict[str, bool]:
    return {"ok": True}


def _work(url: str, index: int, start_at: float) -> tuple[int, float]:
    from rubix_integration import Manager
    from rubix_integration.workflow import Worker

    with Manager(store_url=url, load_plugins=()) as manager:
        _ = manager.provenance.node_id
        worker = Worker(manager.workflow, _noop, worker_id=f"bench-{index}", poll_interval=0.05)
        while time.time() < start_at:
            time.sleep(0.005)
        stats = worker.run(exit_when_idle=True, idle_timeout=0.5)
        return stats.completed, time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    import psycopg

    name = f"rubix_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.engine.make_url(args.pg).set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    try:
        from rubix_integration import Manager

        with Manager(store_url=url, load_plugins=()) as manager:
            t0 = time.perf_counter()
            manager.workflow.submit_tasks(
                {"task_id": f"t{i}", "task_type": "bench", "data": {"i": i}, "priority": i % 4}
                for i in range(args.tasks))
            print(f"submitted {args.tasks} tasks in one batch: "
                  f"{args.tasks / (time.perf_counter() - t0):,.0f}/s")
            ctx = multiprocessing.get_context("spawn")
            start_at = time.time() + 3.0  # let every process import and connect first
            with ctx.Pool(args.workers) as pool:
                results = pool.starmap(_work, [(url, i, start_at) for i in range(args.workers)])
            completed = sum(c for c, _ in results)
            finished = max(t for _, t in results) - 0.5  # the idle wait at the end
            elapsed = finished - start_at
            records = manager.query_logs({"type": "task_state"}, limit=None)
            claims = collections.Counter(r.data["task_id"] for r in records
                                         if r.data["new_state"] == "running")
            done = collections.Counter(r.data["task_id"] for r in records
                                       if r.data["new_state"] == "completed")
            double = sum(1 for n in claims.values() if n > 1) + sum(
                1 for n in done.values() if n > 1)
            counts = manager.workflow.counts()
            print(f"{args.workers} workers: {completed} tasks claimed+completed in {elapsed:.2f}s "
                  f"= {completed / elapsed:,.0f} tasks/s; double claims: {double}; "
                  f"states: {counts}")
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
