"""Pin state rates: batched ``add``, streaming ``list``, ``get`` latency, and peak memory of
listing a large state, each next to a bare driver baseline of the same rows in the same run.

Run: ``.venv-test/bin/python bench/bench_pins.py [--pins 200000] [--batch 5000] [--rounds 3]
[--large 1000000] [--pg-url URL] [--skip-pg] [--skip-large]``. SQLite runs in a temporary
folder; PostgreSQL in a database created for the run and dropped afterwards (skipped when the
server does not answer). The large listing runs in a child process, which reports its own peak
RSS. Prints figures; not a test.

The baselines write the same rows the pin state writes: every column of the ``pins`` table
(replication columns included) into a copy of it with the same primary key and indexes, by the
bare driver (sqlite3 ``executemany``, psycopg ``COPY``), one transaction per batch. On SQLite the
embedded add runs in rounds, each alternating baseline and pin state into fresh files, so that
a machine whose load changes affects both, and the CPU seconds of each (SQLite runs in this
process) are printed beside the wall-clock rates: the steadier figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rubix_integration.codecs import CID, RAW, SHA2_256, encode_multihash
from rubix_integration.pins import Pin, PinState, open_pin_state
from rubix_integration.pins.models import PIN_COLUMNS, PIN_TABLE

PEER = "12D3KooWArSKMUUeLk3z2m5LKyb9wGyFL1BtWCT7Gq7Apoo77PUR"
BATCH = 5000


def cid(n: int) -> str:
    return str(CID(1, RAW, encode_multihash(SHA2_256, hashlib.sha256(b"%d" % n).digest())))


def make_pins(count: int, offset: int = 0) -> list[Pin]:
    return [Pin(cid=cid(n + offset), name=f"pin {n}", allocations=(PEER,),
                timestamp="2024-01-15T10:30:45.123456789Z") for n in range(count)]


def rate(label: str, count: int, seconds: float, baseline: float | None = None, *,
         cpu: float | None = None) -> float:
    per_s = count / seconds
    extra = f"   ({per_s / baseline:5.2f}x the baseline)" if baseline else ""
    used = f", cpu {cpu:5.2f} s" if cpu is not None else ""
    print(f"  {label:<44} {count:>9,} in {seconds:6.2f} s{used} = {per_s:>10,.0f}/s{extra}")
    return per_s


def timed(action: Callable[[], object]) -> float:
    return clocked(action)[0]


def clocked(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``action`` (CPU time of this process: SQLite runs in it,
    so on a loaded machine this is the steadier figure of the work done)."""
    start, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - start, time.process_time() - cpu


def add_all(state: PinState, pins: list[Pin]) -> None:
    with state.batch(max_batch_size=BATCH, max_batch_age=float("inf")) as batch:
        for pin in pins:
            batch.add(pin)


#: Columns of the baseline table, in the order of its rows: the pin columns, then the
#: replication columns the store sets (the same row the pin state writes).
BARE_COLUMNS = (*PIN_COLUMNS, "origin_node", "change_version", "deleted_at")
NODE = "00000000-0000-4000-8000-000000000000"


def plain_rows(pins: list[Pin]) -> list[tuple[Any, ...]]:
    """The rows the pin state writes for ``pins``, every column, as the driver takes them."""
    return [(p.cid, 1, ",".join(p.allocations), p.max_depth, p.reference, p.timestamp, 0, 0,
             p.name, 0, "", p.expire_at, None, None, "", NODE, version, None)
            for version, p in enumerate(pins, start=1)]


def bare_table(metadata: sa.MetaData) -> sa.Table:
    """A copy of the ``pins`` table named ``plain_pins``: the same columns, types, primary key
    and indexes (renamed, for PostgreSQL, whose index names share the schema)."""
    table = sa.Table("plain_pins", metadata, *(
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in PIN_TABLE.columns))
    for index in PIN_TABLE.indexes:
        sa.Index(f"plain_{index.name}", *(table.c[c.name] for c in index.columns))
    return table


def bare_ddl(dialect: sa.engine.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` of :func:`bare_table` in ``dialect``."""
    table = bare_table(sa.MetaData())
    return [str(sa.schema.CreateTable(table).compile(dialect=dialect)),
            *(str(sa.schema.CreateIndex(i).compile(dialect=dialect)) for i in table.indexes)]


def narrow_ddl() -> str:
    """The earlier reference: pin columns only, no replication columns, no secondary index."""
    return ("CREATE TABLE narrow_pins (cid TEXT PRIMARY KEY, pin_type INT, allocations TEXT, "
            "max_depth INT, reference TEXT, ts TEXT, rmin INT, rmax INT, name TEXT, "
            "shard BIGINT, user_allocations TEXT, expire_at TEXT, meta TEXT, pin_update TEXT, "
            "origins TEXT)")


def bare_sqlite(path: Path) -> sqlite3.Connection:
    """A sqlite3 connection set up as the store sets up its own (WAL, ``synchronous=NORMAL``,
    driver transactions off), holding the baseline tables."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    for statement in (*bare_ddl(sqlite_dialect.dialect()), narrow_ddl()):
        raw.execute(statement)
    return raw


def bare_insert(raw: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` into ``table`` by executemany, one transaction per batch."""
    marks = ",".join("?" * len(rows[0]))
    for start in range(0, len(rows), BATCH):
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(f"INSERT INTO {table} VALUES ({marks})", rows[start:start + BATCH])
        raw.execute("COMMIT")


def bench_sqlite(folder: Path, count: int, rounds: int) -> None:
    print(f"embedded (SQLite {sqlite3.sqlite_version}), {count:,} pins, batches of {BATCH:,}, "
          f"{rounds} round(s), each into fresh files")
    pins = make_pins(count)
    rows = plain_rows(pins)
    narrow = [r[:15] for r in rows]
    target = f"plain_pins ({','.join(BARE_COLUMNS)})"
    mine: list[float] = []
    bare: list[float] = []
    cpu: dict[str, list[float]] = {"mine": [], "bare": []}
    for n in range(rounds):
        print(f" round {n + 1}")
        raw = bare_sqlite(folder / f"plain-{n}.sqlite")
        wall, used = clocked(functools.partial(bare_insert, raw, target, rows))
        base = rate("baseline: sqlite3 executemany, same table+rows", count, wall, cpu=used)
        bare.append(base)
        cpu["bare"].append(used)
        wall, used = clocked(functools.partial(bare_insert, raw, "narrow_pins", narrow))
        rate("reference: narrow table (pin columns, PK only)", count, wall, base, cpu=used)
        with open_pin_state(f"sqlite:///{folder / f'pins-{n}.sqlite'}",
                            data_dir=folder) as state:
            assert isinstance(state, PinState)
            wall, used = clocked(functools.partial(add_all, state, pins))
            mine.append(rate("PinState batched add (validate+stamp+upsert)", count, wall, base,
                             cpu=used))
            cpu["mine"].append(used)
            if n == rounds - 1:
                list_rates(state, raw, count)
                latency(state, raw, pins, "?")
        raw.close()
    print(f"  add, median of {rounds}: {statistics.median(mine):,.0f}/s against a baseline of "
          f"{statistics.median(bare):,.0f}/s (ratio of medians "
          f"{statistics.median(mine) / statistics.median(bare):.2f}; per round "
          f"{', '.join(f'{m / b:.2f}' for m, b in zip(mine, bare, strict=True))})")
    print(f"  add, CPU seconds (median): pin state {statistics.median(cpu['mine']):.2f}, "
          f"baseline {statistics.median(cpu['bare']):.2f} (ratio "
          f"{statistics.median(cpu['bare']) / statistics.median(cpu['mine']):.2f})")


def list_rates(state: PinState, raw: sqlite3.Connection, count: int) -> None:
    def bare_list() -> None:
        cur = raw.execute(f"SELECT {','.join(PIN_COLUMNS)} FROM plain_pins "
                          "WHERE deleted_at IS NULL ORDER BY cid")
        while cur.fetchmany(5000):
            pass

    base = rate("baseline: sqlite3 SELECT + fetchmany", count, timed(bare_list))
    listed = [0]

    def pin_list() -> None:
        listed[0] = sum(1 for _ in state.list())

    rate("PinState.list() (Pin objects)", count, timed(pin_list), base)
    assert listed[0] == count


def latency(state: PinState, raw: Any, pins: list[Pin], mark: str) -> None:
    sample = random.Random(7).sample(pins, min(2000, len(pins)))
    mine: list[float] = []
    bare: list[float] = []
    query = (f"SELECT {','.join(PIN_COLUMNS)} FROM plain_pins WHERE cid = {mark} "
             "AND deleted_at IS NULL")
    for pin in sample:
        start = time.perf_counter()
        state.get(pin.cid)
        mine.append(time.perf_counter() - start)
        start = time.perf_counter()
        raw.execute(query, (pin.cid,)).fetchone()
        bare.append(time.perf_counter() - start)
    print(f"  get p50 {statistics.median(mine) * 1000:.3f} ms, p99 "
          f"{sorted(mine)[int(len(mine) * .99)] * 1000:.3f} ms   (baseline: bare SELECT p50 "
          f"{statistics.median(bare) * 1000:.3f} ms), {len(sample)} gets")


@contextmanager
def pg_database(server: str) -> Iterator[str | None]:
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(server)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    name = f"rubix_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    try:
        yield url.set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_postgresql(folder: Path, server: str, count: int) -> None:
    import psycopg
    import sqlalchemy as sa

    with pg_database(server) as url:
        if url is None:
            return
        pins = make_pins(count)
        rows = plain_rows(pins)
        conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(conninfo, connect_timeout=3) as raw:
            version = raw.execute("SHOW server_version").fetchone()
            print(f"PostgreSQL {version[0] if version else '?'}, {count:,} pins, batches of "
                  f"{BATCH:,}")
            for statement in bare_ddl(sa.engine.make_url(url).get_dialect()()):
                raw.execute(statement)
            raw.commit()

            def bare_copy() -> None:
                for start in range(0, len(rows), BATCH):
                    with raw.cursor() as cur, cur.copy(
                            f"COPY plain_pins ({','.join(BARE_COLUMNS)}) FROM STDIN") as copy:
                        for row in rows[start:start + BATCH]:
                            copy.write_row(row)
                    raw.commit()

            base = rate("baseline: psycopg COPY, same table+rows", count, timed(bare_copy))
            with open_pin_state(url, data_dir=folder) as state:
                assert isinstance(state, PinState)
                rate("PinState batched add (validate+stamp+upsert)", count,
                     timed(lambda: add_all(state, pins)), base)

                def bare_list() -> None:
                    with raw.cursor(name="bench") as cur:
                        cur.itersize = 5000
                        cur.execute(f"SELECT {','.join(PIN_COLUMNS)} FROM plain_pins "
                                    "WHERE deleted_at IS NULL ORDER BY cid")
                        for _ in cur:
                            pass
                    raw.commit()

                base = rate("baseline: psycopg server-side cursor", count, timed(bare_list))
                rate("PinState.list() (Pin objects)", count,
                     timed(lambda: sum(1 for _ in state.list())), base)
                raw.autocommit = True
                latency(state, raw, pins, "%s")


#: Peak resident memory of the calling process in MB: VmHWM starts afresh at exec (ru_maxrss
#: would carry the forking parent's peak over).
PEAK = ("def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n")

CHILD = PEAK + """
import sys, time, json
from rubix_integration.pins import open_pin_state
state = open_pin_state(sys.argv[1], data_dir=sys.argv[2])
start = time.perf_counter()
count = sum(1 for _ in state.list())
took = time.perf_counter() - start
state.close()
print(json.dumps({"count": count, "seconds": took,
                  "peak_rss_mb": peak()}))
"""


def bench_large(folder: Path, count: int) -> None:
    print(f"embedded, {count:,} pins listed in a child process (peak RSS of that process)")
    url = f"sqlite:///{folder / 'large.sqlite'}"
    with open_pin_state(url, data_dir=folder) as state:
        assert isinstance(state, PinState)
        chunk = 100_000
        start = time.perf_counter()
        for offset in range(0, count, chunk):
            add_all(state, make_pins(min(chunk, count - offset), offset=10**9 + offset))
        print(f"  (filled in {time.perf_counter() - start:.1f} s)")
    baseline = subprocess.run(
        [sys.executable, "-c", PEAK + "import rubix_integration.pins\nprint(peak())"],
        capture_output=True, text=True, timeout=120, check=True)
    done = subprocess.run([sys.executable, "-c", CHILD, url, str(folder)], capture_output=True,
                          text=True, timeout=1800, check=True)
    found = json.loads(done.stdout)
    rate("PinState.list() of the large state", found["count"], found["seconds"])
    print(f"  peak RSS {found['peak_rss_mb']:.1f} MB   (baseline: the same interpreter after "
          f"importing the package, {float(baseline.stdout):.1f} MB)")


def bench_migrate_kill(folder: Path, server: str, count: int) -> None:
    """Migrate the large embedded state to PostgreSQL, kill -9 the migration half way, run it
    again, and compare."""
    import os
    import signal

    source = f"sqlite:///{folder / 'large.sqlite'}"
    with pg_database(server) as url:
        if url is None:
            return
        print(f"migrate {count:,} pins embedded -> PostgreSQL, killed with SIGKILL half way")
        checkpoint = folder / "migrate.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUBIX_")}
        env.update(RUBIX_DATA_DIR=str(folder / "data"), RUBIX_LOAD_PLUGINS="")
        command = [sys.executable, "-m", "rubix_integration", "pins", "migrate", "--from",
                   source, "--to", url, "--batch", "5000", "--checkpoint", str(checkpoint),
                   "--no-progress"]
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        with open_pin_state(url, data_dir=folder) as dest:
            while proc.poll() is None and dest.count() < count // 2:
                time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        with open_pin_state(url, data_dir=folder) as dest:
            landed = dest.count()
        print(f"  killed after {time.perf_counter() - start:.1f} s with {landed:,} pins landed "
              f"(a multiple of the batch: {landed % 5000 == 0})")
        start = time.perf_counter()
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        print(f"  re-run: exit {again.returncode} in {time.perf_counter() - start:.1f} s: "
              f"{(again.stdout or again.stderr).strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pins", type=int, default=200_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000,
                        help="pins per commit, for the pin state and the baselines alike")
    parser.add_argument("--rounds", type=int, default=3,
                        help="embedded add rounds (baseline and pin state alternate)")
    parser.add_argument("--skip-pg", action="store_true", help="no PostgreSQL figures")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-small", action="store_true",
                        help="only the large listing and the killed migration")
    parser.add_argument("--skip-migrate", action="store_true")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    global BATCH
    BATCH = args.batch
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-pins-") as tmp:
        folder = Path(tmp)
        if not args.skip_small:
            bench_sqlite(folder, args.pins, args.rounds)
            if not args.skip_pg:
                bench_postgresql(folder, args.pg_url, args.pins)
        if not args.skip_large:
            bench_large(folder, args.large)
            if not args.skip_migrate:
                bench_migrate_kill(folder, args.pg_url, args.large)
    print(f"peak RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
