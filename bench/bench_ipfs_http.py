"""Measure ``cat`` throughput of the ``http`` backend against a bare keep-alive HTTP loop.

Starts an offline js-ipfs daemon from external/js-ipfs (the same code as the test fixture) or
reuses one given with ``--api``, adds N small token-like objects, then reads them all back with a
worker pool through :class:`HTTPBackend` and through plain ``http.client`` connections (one kept
alive per worker, POST ``/api/v0/cat``) at the same concurrency. A few ``jsipfs cat`` calls give
the command line's figure.

    .venv-test/bin/python bench/bench_ipfs_http.py [-n 2000] [--workers 8] [--api URL]
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rubix_integration._settings import resolve_settings  # noqa: E402
from rubix_integration.ipfs.base import IPFSContext  # noqa: E402
from rubix_integration.ipfs.cli import CLIBackend  # noqa: E402
from rubix_integration.ipfs.http import HTTPBackend  # noqa: E402
from tests.fixtures.jsipfs import (  # noqa: E402
    JsIpfsDaemon,
    find_jsipfs_bin,
    init_repo,
    start_daemon,
)

warnings.filterwarnings("ignore", message=".*strict.*", category=FutureWarning)


def token_text(i: int) -> bytes:
    """A 65-byte-ish text shaped like a Rubix token's content."""
    return f"TRI {i} bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwm{i:010d}".encode()


def timed(label: str, count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    rate = count / elapsed if elapsed else float("inf")
    print(f"  {label:<44} {count:>6} in {elapsed:7.2f}s = {rate:8.1f}/s")
    return rate


def bare_loop(url: str, cids: Sequence[str], workers: int, expected: dict[str, bytes]) -> None:
    split = urlsplit(url)
    local = threading.local()

    def cat(cid: str) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(split.hostname or "", split.port,
                                                           timeout=10)
        conn.request("POST", f"/api/v0/cat?arg={cid}&timeout=5s")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or body != expected[cid]:
            raise RuntimeError(f"bare cat {cid}: HTTP {response.status} {body[:80]!r}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(cat, cids))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="objects to add and read (2000)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent readers (8)")
    parser.add_argument("--cli-sample", type=int, default=5, help="jsipfs cat calls (5)")
    parser.add_argument("--api", help="reuse the daemon at this URL instead of starting one")
    args = parser.parse_args(argv)

    bin_path = find_jsipfs_bin()
    daemon: JsIpfsDaemon | None = None
    with tempfile.TemporaryDirectory(prefix="bench-jsipfs-") as tmp:
        if args.api:
            url, repo = args.api, None
        else:
            if bin_path is None:
                print("js-ipfs is not installed: run external/install.sh", file=sys.stderr)
                return 2
            started = time.perf_counter()
            daemon = start_daemon(bin_path, init_repo(bin_path, Path(tmp) / "repo"))
            url, repo = daemon.url, daemon.repo
            print(f"js-ipfs daemon at {url} ready in {time.perf_counter() - started:.1f}s")
        try:
            run(args, url, repo, bin_path)
        finally:
            if daemon is not None:
                daemon.stop()
    return 0


def run(args: argparse.Namespace, url: str, repo: Path | None, bin_path: Path | None) -> None:
    context = IPFSContext(settings=resolve_settings(ipfs_api=url), timeout=10)
    payloads = [token_text(i) for i in range(args.n)]
    print(f"{args.n} objects of {len(payloads[0])} bytes, {args.workers} workers, "
          f"{os.cpu_count()} cores")
    with HTTPBackend(context) as backend:
        cids: list[str] = []

        def add_all() -> None:
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                cids.extend(pool.map(backend.add_bytes, payloads))

        timed("add_bytes (HTTPBackend, pool)", args.n, add_all)
        expected = dict(zip(cids, payloads, strict=True))

        def backend_cats() -> None:
            with ThreadPoolExecutor(max_workers=args.workers) as pool:
                for cid, data in zip(cids, pool.map(backend.cat, cids), strict=True):
                    if data != expected[cid]:
                        raise RuntimeError(f"wrong content for {cid}")

        def backend_cats_serial() -> None:
            for cid in cids[: max(1, args.n // 4)]:
                backend.cat(cid)

        # one warm-up pass each, then the measured passes in alternating order
        bare_loop(url, cids[:200], args.workers, expected)
        backend_cats()
        print("cat:")
        rates_backend = [timed("HTTPBackend.cat, pool", args.n, backend_cats)]
        rates_bare = [timed("bare http.client keep-alive, pool", args.n,
                            lambda: bare_loop(url, cids, args.workers, expected))]
        rates_bare.append(timed("bare http.client keep-alive, pool", args.n,
                                lambda: bare_loop(url, cids, args.workers, expected)))
        rates_backend.append(timed("HTTPBackend.cat, pool", args.n, backend_cats))
        timed("HTTPBackend.cat, one thread", max(1, args.n // 4), backend_cats_serial)
        best_backend, best_bare = max(rates_backend), max(rates_bare)
        print(f"  best: HTTPBackend {best_backend:.0f}/s, bare {best_bare:.0f}/s "
              f"(HTTPBackend at {100 * best_backend / best_bare:.0f}% of bare)")

    if bin_path is not None and args.cli_sample > 0:
        cli_context = IPFSContext(
            settings=resolve_settings(ipfs_bin=str(bin_path), ipfs_bin_args=("--api", url)),
            ipfs_path=repo, timeout=30)
        with CLIBackend(cli_context) as cli:
            sample = cids[: args.cli_sample]

            def cli_cats() -> None:
                for cid in sample:
                    if cli.cat(cid) != expected[cid]:
                        raise RuntimeError(f"wrong content for {cid} through the CLI")

            print("cli:")
            timed("CLIBackend.cat (jsipfs --api), sequential", len(sample), cli_cats)


if __name__ == "__main__":
    raise SystemExit(main())
