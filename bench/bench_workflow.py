"""Workflow figures: tasks claimed and completed per second on PostgreSQL by N worker processes.

    .venv/bin/python bench/bench_workflow.py [--tasks 4000] [--workers 4] [--batch 32] [--pg URL]

Creates (and drops) a scratch database on the server. Runs the queue twice in the same database,
with fresh tasks each time: workers claiming and reporting one task at a time (the default), then
``--batch`` at a time (``Worker(batch_size=...)``; ``--batch 1`` skips that run). Prints figures;
never fails on time. A double claim is a task claimed more than once, or completed more than once,
according to the provenance log.
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


def _work(url: str, index: int, start_at: float, batch: int) -> tuple[int, float, float]:
    from rubix_integration import Manager
    from rubix_integration.workflow import Worker

    with Manager(store_url=url, load_plugins=()) as manager:
        _ = manager.provenance.node_id
        worker = Worker(manager.workflow, _noop, worker_id=f"bench-{index}", poll_interval=0.05,
                        batch_size=batch)
        while time.time() < start_at:
            time.sleep(0.005)
        cpu = time.process_time()
        stats = worker.run(exit_when_idle=True, idle_timeout=0.5)
        return stats.completed, time.time(), time.process_time() - cpu


def _run(manager: object, url: str, args: argparse.Namespace, label: str, batch: int) -> None:
    from rubix_integration import Manager

    assert isinstance(manager, Manager)
    prefix = f"{label}-"
    t0 = time.perf_counter()
    manager.workflow.submit_tasks(
        {"task_id": f"{prefix}{i}", "task_type": "bench", "data": {"i": i}, "priority": i % 4}
        for i in range(args.tasks))
    submitted = args.tasks / (time.perf_counter() - t0)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # let every process import and connect first
    with ctx.Pool(args.workers) as pool:
        results = pool.starmap(_work, [(url, i, start_at, batch) for i in range(args.workers)])
    completed = sum(c for c, _, _ in results)
    finished = max(t for _, t, _ in results) - 0.5  # the idle wait at the end
    elapsed = finished - start_at
    cpu_ms = 1000 * sum(c for _, _, c in results) / max(1, completed)
    records = [r for r in manager.query_logs({"type": "task_state"}, limit=None)
               if str(r.data["task_id"]).startswith(prefix)]
    claims = collections.Counter(r.data["task_id"] for r in records
                                 if r.data["new_state"] == "running")
    done = collections.Counter(r.data["task_id"] for r in records
                               if r.data["new_state"] == "completed")
    double = sum(1 for n in claims.values() if n > 1) + sum(1 for n in done.values() if n > 1)
    counts = {k: v for k, v in manager.workflow.counts().items() if v}
    print(f"{label:>7} (batch {batch:>3}), {args.workers} workers: {completed} tasks claimed+"
          f"completed in {elapsed:.2f}s = {completed / elapsed:,.0f} tasks/s; worker CPU "
          f"{cpu_ms:.2f} ms/task; double claims: {double}; submitted {submitted:,.0f}/s; "
          f"states so far: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32,
                        help="tasks per claim in the batched run (1: no batched run)")
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
            _run(manager, url, args, "single", 1)
            if args.batch > 1:
                _run(manager, url, args, "batched", args.batch)
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
