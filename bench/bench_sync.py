"""Token sync benchmark: prints figures, judges nothing.

  .venv-test/bin/python bench/bench_sync.py [--tokens 100000] [--nodes 10] [--million] [--keep DIR]

Measured in one run, so that every figure has its baseline beside it:
- end-to-end tokens/s in ``repo`` mode into SQLite and into PostgreSQL (a fresh database),
  with worker processes and in one process;
- ``http`` mode against a js-ipfs daemon from external/ (on a subset: adding to the daemon is slow);
- the reference method, one CLI subprocess per token with as many workers as cores, on a small
  subset: jsipfs ``cat`` (the real peer here) and, as the floor of any process-per-token method,
  ``/bin/cat`` of the block file;
- time to skip 1,000 unchanged databases;
- start-up included: ``rubix-integration sync`` of 20,000 tokens over 10 repos (repo mode, SQLite)
  as a fresh process, against a bare single-thread loop (read each token's block file, insert the
  rows) as a fresh process too, and the sync's fixed cost before its first token;
- with --million, peak RSS while syncing 1,000,000 tokens (coordinator and workers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rubix_integration import Manager  # noqa: E402
from rubix_integration.codecs import parse_cid  # noqa: E402
from rubix_integration.ipfs._flatfs import FlatFS  # noqa: E402
from rubix_integration.tokens.demo import _token_text, make_node  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def build_root(root: Path, nodes: int, per_node: int) -> tuple[int, float]:
    marker = root / f".complete-{nodes}x{per_node}"
    if marker.exists():
        return nodes * per_node, 0.0
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    rng = random.Random(11)
    for n in range(nodes):
        contents = [_token_text("TRI", rng.randrange(10**9), rng) for _ in range(per_node)]
        make_node(root / f"node{n:04d}", contents, rng=rng)
    marker.write_text("ok")
    return nodes * per_node, time.perf_counter() - started


def sync_once(url: str, data: Path, root: Path, **kwargs: object) -> tuple[float, object]:
    with Manager(store_url=url, data_dir=data, source_ip="10.0.0.1") as manager:
        manager.store  # noqa: B018 - schema created outside the timing
        summary = manager.sync_tokens([root], full=True, **kwargs)  # type: ignore[arg-type]
    assert summary.ok, str(summary)
    return summary.tokens_per_second, summary


def pg_database() -> tuple[str, str]:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{PG_SERVER}/{name}"


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reference_method(root: Path, sample: int) -> None:
    """One subprocess per token, as many workers as cores."""
    import sqlite3

    node = root / "node0000"
    with sqlite3.connect(f"file:{node / 'Rubix' / 'rubix.db'}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT token_id FROM TokensTable LIMIT ?", (sample,))]
    store = FlatFS.open(node / ".ipfs" / "blocks")
    paths = [store.path(parse_cid(i)) for i in ids]
    cores = os.cpu_count() or 1

    def run(argv: list[str]) -> None:
        subprocess.run(argv, capture_output=True, timeout=60, check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda p: run(["/bin/cat", p]), paths))
    floor = len(paths) / (time.perf_counter() - started)
    print(f"  reference floor, /bin/cat per token ({cores} workers): {floor:,.0f} tokens/s")



def http_mode(tokens: int) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from tests.fixtures.jsipfs import find_jsipfs_bin, init_repo, start_daemon
    except ImportError as exc:
        print(f"  http: skipped ({exc})")
        return
    jsipfs = find_jsipfs_bin()
    if jsipfs is None:
        print("  http: skipped (run external/install.sh)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo = base / "jsrepo"
        init_repo(jsipfs, repo)
        daemon = start_daemon(jsipfs, repo)
        try:
            node = base / "root" / "node-http"
            rng = random.Random(5)
            with Manager(ipfs_mode="http", ipfs_api=daemon.api_multiaddr, data_dir=base / "d",
                         store_url=f"sqlite:///{base / 'h.sqlite'}") as manager:
                backend = manager.ipfs()
                contents = [_token_text("TRI", i, rng) for i in range(tokens)]
                started = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(backend.add_bytes, contents))
                add_rate = tokens / (time.perf_counter() - started)
                ids = make_node(node, contents, rng=rng, with_repo=False)
                summary = manager.sync_tokens([base / "root"], full=True)
            print(f"  http mode (js-ipfs daemon, {tokens} tokens, 16 fetch threads): "
                  f"{summary.tokens_per_second:,.0f} tokens/s "
                  f"(ok {summary.ipfs_success}; daemon add rate {add_rate:,.0f}/s)")
            # the reference method on the same daemon: one `cat` process per token
            cores = os.cpu_count() or 1
            sample = ids[:10]
            started = time.perf_counter()
            with ThreadPoolExecutor(cores) as pool:
                list(pool.map(lambda c: subprocess.run(
                    [str(jsipfs), "--api", daemon.url, "cat", c],
                    env={**os.environ, "IPFS_PATH": str(repo)},
                    capture_output=True, timeout=120, check=True), sample))
            rate = len(sample) / (time.perf_counter() - started)
            print(f"  reference method, `jsipfs cat` process per token ({cores} workers, "
                  f"{len(sample)} tokens): {rate:,.2f} tokens/s; sync in http mode is "
                  f"{summary.tokens_per_second / rate:,.0f}x faster")
        finally:
            daemon.stop()


BARE_LOOP = """
import sqlite3, sys, time
from pathlib import Path
from rubix_integration.codecs import parse_cid
from rubix_integration.ipfs._flatfs import FlatFS
root, out = Path(sys.argv[1]), sys.argv[2]
db = sqlite3.connect(out)
db.execute("CREATE TABLE IF NOT EXISTS rows (node TEXT, token_id TEXT, data BLOB)")
for node in sorted(root.iterdir()):
    if not (node / "Rubix" / "rubix.db").exists():
        continue
    src = sqlite3.connect(f"file:{node / 'Rubix' / 'rubix.db'}?mode=ro", uri=True)
    ids = [r[0] for r in src.execute("SELECT token_id FROM TokensTable")]
    src.close()
    blocks = FlatFS.open(node / ".ipfs" / "blocks")
    rows = []
    for token_id in ids:
        with open(blocks.path(parse_cid(token_id)), "rb") as fh:
            rows.append((node.name, token_id, fh.read()))
    with db:
        db.execute("DELETE FROM rows WHERE node = ?", (node.name,))
        db.executemany("INSERT INTO rows VALUES (?, ?, ?)", rows)
"""


def bare_versus_sync(base: Path, keep: Path, runs: int) -> None:
    """The whole sync command, start-up included, against a bare read-and-insert loop."""
    root = keep / "root-10x2000"
    total, _ = build_root(root, 10, 2000)
    # the command as its console script runs it, from the tree this benchmark sits in
    env = {**os.environ, "RUBIX_DATA_DIR": str(base / "bare-d"), "RUBIX_SOURCE_IP": "10.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def timed(argv: list[str]) -> tuple[float, str]:
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=True, env=env, timeout=600,
                              text=True)
        return time.perf_counter() - started, done.stdout

    bare, sync, call, inside = [], [], [], []
    for i in range(runs):
        bare.append(timed([sys.executable, "-c", BARE_LOOP, str(root),
                           str(base / f"bare{i}.sqlite")])[0])
        took, out = timed([sys.executable, "-m", "rubix_integration", "sync", str(root),
                           "--full", "--ipfs", "repo", "--json",
                           "--store", f"sqlite:///{base / f'cmd{i}.sqlite'}"])
        sync.append(took)
        # the command's own sync_tokens call: opening the store is in it (it overlaps reading)
        call.append(float(json.loads(out)["duration_s"]))
        url = f"sqlite:///{base / f'in{i}.sqlite'}"
        summary = sync_once(url, base / "d", root)[1]
        inside.append(summary.duration_s)  # type: ignore[attr-defined]
    b, s, c, n = (statistics.median(x) for x in (bare, sync, call, inside))
    print(f"  {total:,} tokens, 10 repos, start-up included (median of {runs}): bare loop "
          f"{b:.2f} s, `rubix-integration sync` {s:.2f} s -> {b / s:.2f} of the bare loop's "
          f"speed (of it, {s - c:.2f} s before and after its sync call, {c:.2f} s in it, "
          f"opening the store included); the sync itself, store open before, {n:.2f} s -> "
          f"{b / n:.2f} with start-up taken out")
    fixed_cost(base, keep)


def fixed_cost(base: Path, keep: Path) -> None:
    """Time from ``sync_tokens`` to the first token read, with the store already open."""
    from rubix_integration.tokens import SyncObserver

    root = keep / "root-1x1"
    build_root(root, 1, 1)
    marks: list[float] = []

    class First(SyncObserver):
        def database_started(self, node: object, tokens: int) -> None:
            marks.append(time.perf_counter())

    costs = []
    for i in range(5):
        with Manager(store_url=f"sqlite:///{base / f'fixed{i}.sqlite'}", data_dir=base / "fd",
                     source_ip="10.0.0.1") as manager:
            manager.store  # noqa: B018 - opened outside the timing
            started = time.perf_counter()
            manager.sync_tokens([root], full=True, observer=First())
            costs.append(marks[-1] - started)
    print(f"  fixed cost before the first token (store open, 1 database): "
          f"median {statistics.median(costs) * 1000:.0f} ms")


def skip_unchanged(base: Path, count: int) -> None:
    root = base / "many"
    rng = random.Random(3)
    for i in range(count):
        make_node(root / f"n{i:05d}", [b"TRI 1 x"], rng=rng)
    url = f"sqlite:///{base / 'skip.sqlite'}"
    with Manager(store_url=url, data_dir=base / "skipdata") as manager:
        first = manager.sync_tokens([root])
        started = time.perf_counter()
        again = manager.sync_tokens([root])
        elapsed = time.perf_counter() - started
    assert again.databases_skipped == count, again
    print(f"  skip {count} unchanged databases: {elapsed:.3f} s "
          f"(first sync of them: {first.duration_s:.2f} s)")


def million(base: Path, keep: Path) -> None:
    root = keep / "million"
    total, built = build_root(root, 100, 10_000)
    if built:
        print(f"  generated {total:,} tokens in {built:.0f} s")
    url = f"sqlite:///{base / 'million.sqlite'}"
    code = (
        "import resource, sys; from pathlib import Path; from rubix_integration import Manager\n"
        f"m = Manager(store_url={url!r}, data_dir={str(base / 'md')!r}, source_ip='10.0.0.1')\n"
        f"s = m.sync_tokens([Path({str(root)!r})], full=True)\n"
        # VmHWM, not ru_maxrss: the latter keeps the RSS of the forked bench across exec
        "own = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "           if line.startswith('VmHWM'))\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(s.records, round(s.tokens_per_second), own, kids, s.workers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=3600, check=True, cwd=ROOT).stdout.split()
    print(f"  1,000,000 tokens: {int(out[0]):,} records at {int(out[1]):,} tokens/s; peak RSS "
          f"coordinator {int(out[2]) / 1024:.0f} MB, largest worker {int(out[3]) / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--http-tokens", type=int, default=2000)
    parser.add_argument("--reference-sample", type=int, default=200)
    parser.add_argument("--skip-count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each repo-mode sync")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--only-bare", action="store_true",
                        help="only the start-up-included comparison with the bare loop")
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "rubix-bench")
    args = parser.parse_args()
    if args.only_bare:
        with tempfile.TemporaryDirectory() as tmp:
            print("sync against a bare loop:")
            bare_versus_sync(Path(tmp), args.keep, args.repeat)
        return

    root = args.keep / f"root-{args.nodes}x{args.tokens // args.nodes}"
    total, built = build_root(root, args.nodes, args.tokens // args.nodes)
    print(f"sample: {total:,} tokens over {args.nodes} nodes in {root}"
          + (f" (generated in {built:.0f} s)" if built else " (reused)"))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print(f"repo mode ({args.repeat} runs each, then the median; disk stalls on these "
              "machines make single runs vary):")

        def repeat(store: str, label: str, url_of: Callable[[int], str],
                   kwargs: dict[str, object]) -> None:
            rates, workers = [], ""
            for i in range(args.repeat):
                rate, summary = sync_once(url_of(i), base / "d", root, **kwargs)
                rates.append(rate)
                workers = summary.workers  # type: ignore[attr-defined]
            runs = " / ".join(f"{r:,.0f}" for r in rates)
            print(f"  -> {store}, {label}: median {statistics.median(rates):,.0f} tokens/s "
                  f"({runs}; {workers})")

        modes: list[tuple[str, dict[str, object]]] = [
            ("worker processes", {}), ("one process", {"processes": 1})]
        for label, kwargs in modes:
            def sqlite_url(i: int, tag: str = label[0]) -> str:  # a new file for each run
                return f"sqlite:///{base / f'{tag}{i}.sqlite'}"

            repeat("SQLite", label, sqlite_url, kwargs)
        name, url = pg_database()
        try:
            for label, kwargs in modes:  # each run replaces the rows of the one before
                repeat("PostgreSQL", label, lambda i: url, kwargs)
        finally:
            drop_pg(name)
        http_mode(args.http_tokens)
        reference_method(root, args.reference_sample)
        skip_unchanged(base, args.skip_count)
        bare_versus_sync(base, args.keep, args.repeat)
        if args.million:
            million(base, args.keep)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this benchmark process: {own:.0f} MB")


if __name__ == "__main__":
    main()
