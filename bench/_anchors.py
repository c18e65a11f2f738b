"""The other queues of ``bench_workflow.py``, run inside their own virtual environment.

    .venv-anchors/bin/python bench/_anchors.py {pgqueuer,procrastinate} --dsn DSN
        [--relayed DSN] [--tasks N] [--workers W] [--batch B] [--measure full|drain|single]

``full``: install the schema, enqueue ``--tasks`` jobs in bulk (timed), drain them with
``--workers`` processes (timed); prints ``{"drain": jobs/s, "enqueue": jobs/s}`` as JSON.
``drain`` (after ``full``, in its database): enqueue on ``--dsn``, then drain with one process
on ``--relayed``. ``single`` (likewise): enqueue ``--tasks`` jobs one by one on ``--relayed``.
Not part of the package; the bench runs it with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from datetime import timedelta
from typing import Any

PAYLOAD = json.dumps({"p": "x" * 40}).encode()  # 48 bytes


# --- pgqueuer ----------------------------------------------------------------------------------


async def _pgq_queries(dsn: str) -> Any:
    import asyncpg
    from pgqueuer import Queries
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(dsn, timeout=10)
    return conn, Queries(AsyncpgDriver(conn))


async def _pgq_setup(dsn: str, n: int, install: bool = True) -> float:
    conn, queries = await _pgq_queries(dsn)
    try:
        if install:
            await queries.install()
        t0 = time.perf_counter()
        if n:
            await queries.enqueue(["noop"] * n, [PAYLOAD] * n, [0] * n)
        return n / (time.perf_counter() - t0) if n else 0.0
    finally:
        await conn.close()


async def _pgq_singles(dsn: str, n: int) -> None:
    conn, queries = await _pgq_queries(dsn)
    try:
        for _ in range(n):
            await queries.enqueue("noop", PAYLOAD)
    finally:
        await conn.close()


async def _pgq_drain(dsn: str, batch: int) -> None:
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.domain.types import QueueExecutionMode
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Any) -> None:
            _LAST_JOB[0] = time.time()

        await qm.run(batch_size=batch, mode=QueueExecutionMode.drain,
                     dequeue_timeout=timedelta(seconds=0.5))
    finally:
        await conn.close()


#: when this worker process finished its last job (its idle wait after that is not counted)
_LAST_JOB = [0.0]


def _pgq_worker(dsn: str, batch: int, start_at: float) -> float:
    while time.time() < start_at:
        time.sleep(0.005)
    asyncio.run(_pgq_drain(dsn, batch))
    return _LAST_JOB[0] or time.time()


# --- procrastinate -----------------------------------------------------------------------------


def _proc_app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    def noop(p: str) -> None:
        _LAST_JOB[0] = time.time()

    return app


def _proc_setup(dsn: str, n: int, install: bool = True) -> float:
    app = _proc_app(dsn)
    with app.open():
        if install:
            app.schema_manager.apply_schema()
        t0 = time.perf_counter()
        if n:
            app.tasks["noop"].batch_defer(*({"p": "x" * 40} for _ in range(n)))
        return n / (time.perf_counter() - t0) if n else 0.0


def _proc_singles(dsn: str, n: int) -> None:
    app = _proc_app(dsn)
    with app.open():
        for _ in range(n):
            app.tasks["noop"].defer(p="x" * 40)


def _proc_worker(dsn: str, batch: int, start_at: float) -> float:
    import logging

    logging.disable(logging.WARNING)
    app = _proc_app(dsn)
    while time.time() < start_at:
        time.sleep(0.005)
    app.run_worker(wait=False, concurrency=1, install_signal_handlers=False)
    return _LAST_JOB[0] or time.time()


# --- running -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["pgqueuer", "procrastinate"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--relayed", default=None)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--measure", choices=["full", "drain", "single"], default="full")
    args = parser.parse_args()
    pgq = args.system == "pgqueuer"

    install = args.measure == "full"  # the other measures run after it, in its database

    def setup(n: int) -> float:
        return (asyncio.run(_pgq_setup(args.dsn, n, install)) if pgq
                else _proc_setup(args.dsn, n, install))

    worker = _pgq_worker if pgq else _proc_worker
    if args.measure == "single":
        setup(0)
        if pgq:
            asyncio.run(_pgq_singles(args.relayed, args.tasks))
        else:
            _proc_singles(args.relayed, args.tasks)
        print(json.dumps({}))
        return
    if args.measure == "drain":
        setup(args.tasks)
        worker(args.relayed, args.batch, 0.0)
        print(json.dumps({}))
        return
    enqueue = setup(args.tasks)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0
    with ctx.Pool(args.workers) as pool:
        ends = pool.starmap(worker, [(args.dsn, args.batch, start_at)] * args.workers)
    # each worker answers when it finished its last job (a drained worker lingers a while)
    elapsed = max(ends) - start_at
    print(json.dumps({"drain": args.tasks / elapsed, "enqueue": enqueue}))


if __name__ == "__main__":
    main()
