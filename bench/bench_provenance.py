"""Provenance log figures: appends per second while a table fills, lookups on the filled table.

  .venv-test/bin/python bench/bench_provenance.py [--records 1000000] [--batch 10000] [--store URL]
                                               [--compare-legacy]

Fills the table with ``append_many`` batches and prints the rate of each tenth of the fill, so
that the rate on the fresh table (the first tenth) is the baseline the last tenth is compared
with: a rate that falls as the table grows shows up there. The CPU time of this process per
record is printed beside it, which other load on the machine disturbs far less than wall-clock
rates (time spent waiting for the disk is not in it). Then times lookups by CID, queries by type,
time and nested field, and ``verify()`` on the filled table.

``--compare-legacy`` repeats the fill, in the same run, on a table laid out as before
``ix_provenance_records_cid`` (a unique index on ``cid`` alone), which stores created before it
still have. Prints figures and the peak memory of the process; never fails on time. Default
store: a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sized
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rubix_integration import Manager  # noqa: E402
from rubix_integration.provenance import ProvenanceLogger  # noqa: E402
from rubix_integration.provenance.models import PROVENANCE_TABLE  # noqa: E402
from tests.fixtures.stores import legacy_provenance_table  # noqa: E402

TYPES = [f"type{i}" for i in range(20)]


def fill(logger: ProvenanceLogger, records: int,
         batch: int) -> tuple[list[float], list[float]]:
    """Append ``records`` records in batches; return, for each tenth of the fill, the rate and
    the CPU microseconds per record."""
    tenth = max(batch, records // 10)
    rates: list[float] = []
    cpu_us: list[float] = []
    total = 0
    part_start, part_cpu, part_count = time.perf_counter(), time.process_time(), 0
    while total < records:
        size = min(batch, records - total)
        logger.append_many([
            (TYPES[(total + i) % len(TYPES)],
             {"i": total + i, "model": {"name": f"m{(total + i) % 50}", "v": i % 7},
              "ok": i % 2 == 0, "score": (i % 1000) / 1000})
            for i in range(size)])
        total += size
        part_count += size
        if part_count >= tenth or total == records:
            now, cpu = time.perf_counter(), time.process_time()
            rates.append(part_count / (now - part_start))
            cpu_us.append((cpu - part_cpu) * 1e6 / part_count)
            part_start, part_cpu, part_count = now, cpu, 0
    return rates, cpu_us


def report_fill(label: str, figures: tuple[list[float], list[float]], records: int,
                elapsed: float) -> None:
    rates, cpu_us = figures
    print(f"{label}: {records / elapsed:,.0f}/s overall ({records:,} records in {elapsed:.1f}s)")
    print("  per tenth of the fill: " + " ".join(f"{r / 1000:.1f}k" for r in rates) + " /s")
    print("  CPU per record:        " + " ".join(f"{c:.1f}" for c in cpu_us) + " us")
    print(f"  last tenth {rates[-1]:,.0f}/s = {rates[-1] / rates[0]:.0%} of the first "
          f"(fresh table), CPU per record {cpu_us[-1] / cpu_us[0]:.0%} of the first; "
          f"slowest tenth {min(rates):,.0f}/s")


def timed(label: str, call: Callable[[], Sized], runs: int = 20) -> None:
    call()
    samples = []
    found: Sized = ()
    for _ in range(runs):
        t0 = time.perf_counter()
        found = call()
        samples.append((time.perf_counter() - t0) * 1000)
    print(f"{label}: median {statistics.median(samples):.2f} ms, "
          f"max {max(samples):.2f} ms ({len(found)} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--store", default=None)
    parser.add_argument("--compare-legacy", action="store_true",
                        help="also fill a table with the former unique index on cid")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        with Manager(store_url=url, load_plugins=()) as manager:
            logger = manager.provenance
            logger.log_event("warm-up", {})

            n_single = 2_000
            start = time.perf_counter()
            for i in range(n_single):
                logger.log_event("single", {"i": i, "model": {"name": "m", "v": i % 7}})
            single = n_single / (time.perf_counter() - start)
            print(f"single appends (one transaction each): {single:,.0f}/s")

            start = time.perf_counter()
            figures = fill(logger, args.records, args.batch)
            report_fill(f"batched appends ({args.batch:,} per transaction)", figures,
                        args.records, time.perf_counter() - start)

            print(f"store holds {logger.count():,} records on {manager.store.name}")
            t = PROVENANCE_TABLE
            with manager.store.connect() as conn:
                sample = list(conn.execute(sa.select(t.c.cid).where(t.c.id % 997 == 0)).scalars())
            picks = iter(random.Random(1).choices(sample, k=1_000))
            timed("get(cid) of a random record", lambda: [logger.get(next(picks))])
            timed("query by cid filter", lambda: logger.query_logs({"cid": next(picks)}))
            timed("query by type, newest 100",
                  lambda: logger.query_logs({"type": "type7"}, limit=100))
            timed("query by type and time window, 100",
                  lambda: logger.query_logs({"type": "type7"}, since=time.time() - 30,
                                            limit=100))
            timed("query by type + nested field, 100",
                  lambda: logger.query_logs({"type": "type7", "data.model.name": "m7"},
                                            limit=100), runs=5)
            t0 = time.perf_counter()
            report = logger.verify()
            print(f"verify: {report.records:,} records in {time.perf_counter() - t0:.1f}s, "
                  f"ok={report.ok}")

        if args.compare_legacy:
            legacy_url = f"sqlite:///{Path(tmp) / 'legacy.sqlite'}"
            if args.store:
                print("(the legacy layout is compared on a SQLite file)")
            engine = sa.create_engine(legacy_url)
            legacy_provenance_table().create(engine)
            engine.dispose()
            with Manager(store_url=legacy_url, load_plugins=()) as manager:
                logger = manager.provenance
                logger.log_event("warm-up", {})
                start = time.perf_counter()
                legacy = fill(logger, args.records, args.batch)
                report_fill("same fill, former layout (unique index on cid)", legacy,
                            args.records, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:,.0f} MB (verify() holds one entry per record "
          "of a chain)")


if __name__ == "__main__":
    main()
