"""Command-line start-up benchmark: prints figures, judges nothing.

  .venv-test/bin/python bench/bench_startup.py [--runs 15]

Times ``rubix-integration --help`` and ``rubix-integration status --help`` against
``python -c pass`` measured in the same run (the interpreter's own start-up), each the median of
several runs, and prints the difference: what the package adds to a command's start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "rubix-integration"


def median_seconds(argv: list[str], runs: int) -> float:
    """The median wall time of ``runs`` runs of ``argv`` (after one unmeasured warm-up run)."""
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (15)")
    args = parser.parse_args()
    bare = median_seconds([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass: {bare * 1000:7.1f} ms (median of {args.runs})")
    for command in (["--help"], ["status", "--help"], ["sync", "--help"]):
        took = median_seconds([str(SCRIPT), *command], args.runs)
        print(f"rubix-integration {' '.join(command):<14} {took * 1000:7.1f} ms "
              f"(+{(took - bare) * 1000:.1f} ms over python -c pass)")


if __name__ == "__main__":
    main()
