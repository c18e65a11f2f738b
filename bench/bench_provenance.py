"""Provenance log figures: appends per second on the embedded store, query time on 1M records.

    .venv/bin/python bench/bench_provenance.py [--records 1000000] [--store URL]

Prints figures; never fails on time. Default store: a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rubix_integration import Manager

TYPES = [f"type{i}" for i in range(20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--store", default=None)
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

            total = 0
            start = time.perf_counter()
            batch_rates = []
            while total < args.records:
                size = min(args.batch, args.records - total)
                t0 = time.perf_counter()
                logger.append_many([
                    (TYPES[(total + i) % len(TYPES)],
                     {"i": total + i, "model": {"name": f"m{(total + i) % 50}", "v": i % 7},
                      "ok": i % 2 == 0, "score": (i % 1000) / 1000})
                    for i in range(size)])
                batch_rates.append(size / (time.perf_counter() - t0))
                total += size
            elapsed = time.perf_counter() - start
            print(f"batched appends ({args.batch} per transaction): {total / elapsed:,.0f}/s "
                  f"overall, median batch {statistics.median(batch_rates):,.0f}/s "
                  f"({total:,} records in {elapsed:.1f}s)")

            def timed(label: str, call: object, runs: int = 20) -> None:
                assert callable(call)
                call()
                samples = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    found = call()
                    samples.append((time.perf_counter() - t0) * 1000)
                print(f"{label}: median {statistics.median(samples):.2f} ms, "
                      f"max {max(samples):.2f} ms ({len(found)} rows)")

            print(f"store holds {logger.count():,} records on {manager.store.name}")
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


if __name__ == "__main__":
    main()
