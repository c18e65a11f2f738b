"""Import benchmark: 1,000,000 SQLite rows into the local PostgreSQL.

A ``nodes``/``events`` pair (foreign key, a REAL column, ~35-byte JSON text). Measured in one
run: a bare COPY baseline (rows read from SQLite and written with ``COPY``, no staging, no
upsert), the importer's full import, an upsert of every row changed, a re-run with nothing
changed, and pgloader when it is installed. Each step runs in a child process so its peak
memory is its own.

    python bench/bench_import.py [--rows 1000000] [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

NODES_SHARE = 0.05


def make_source(path: Path, rows: int) -> tuple[int, int]:
    nodes = int(rows * NODES_SHARE)
    events = rows - nodes
    if path.exists():
        return nodes, events
    rng = random.Random(1)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE nodes (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                            lat REAL NOT NULL, meta TEXT);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                             node_id INTEGER NOT NULL REFERENCES nodes(id),
                             at INTEGER NOT NULL, value REAL, payload TEXT NOT NULL);
        CREATE INDEX ix_events_node ON events(node_id);
    """)
    conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                     ((i, f"node-{i}", rng.uniform(-90, 90), '{"gpu":"RTX 4090","ok":true}')
                      for i in range(1, nodes + 1)))
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                     ((i, rng.randint(1, nodes), 1_700_000_000 + i, rng.random() * 100,
                       json.dumps({"k": "v" * 8, "n": i % 1000, "ok": True}))
                      for i in range(1, events + 1)))
    conn.commit()
    conn.close()
    return nodes, events


def admin(pg: str, sql: str) -> None:
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(pg).set(drivername="postgresql", database="postgres")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(sql)


def db_url(pg: str, name: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(pg).set(database=name).render_as_string(hide_password=False)


def child(step: str, source: str, url: str) -> dict[str, Any]:
    """Run one step in this process (called in a child); return its figures."""
    started = time.perf_counter()
    if step == "copy":
        import psycopg
        import sqlalchemy as sa

        conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        total = 0
        with psycopg.connect(conninfo) as conn:
            conn.execute("CREATE TABLE nodes (id bigint PRIMARY KEY, name text NOT NULL, "
                         "lat double precision NOT NULL, meta text)")
            conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, node_id bigint NOT NULL "
                         "REFERENCES nodes(id), at bigint NOT NULL, value double precision, "
                         "payload text NOT NULL)")
            for table in ("nodes", "events"):
                cur = src.execute(f"SELECT * FROM {table} ORDER BY id")
                with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
                    while batch := cur.fetchmany(5000):
                        for row in batch:
                            cp.write_row(row)
                        total += len(batch)
        return {"rows": total, "seconds": time.perf_counter() - started}
    from rubix_integration import Manager

    with Manager(store_url=url) as m:
        report = m.import_sqlite(source)
    seconds = time.perf_counter() - started
    data = report.as_dict()
    return {"rows": data["totals"]["total"], "written": data["totals"]["imported"],
            "statuses": [t["status"] for t in data["tables"]], "seconds": seconds,
            "schema": schema_of(url)}


def schema_of(url: str) -> str:
    """``nodes.lat`` and ``events.value`` as the target holds them: type and nullability."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT table_name, column_name, data_type, is_nullable "
                "FROM information_schema.columns WHERE (table_name, column_name) IN "
                "(('nodes', 'lat'), ('events', 'value'), ('events', 'payload')) "
                "ORDER BY 1, 2")).all()
    finally:
        engine.dispose()
    return "; ".join(f"{t}.{c} {d}{'' if n == 'YES' else ' NOT NULL'}" for t, c, d, n in rows)


def run_child(step: str, source: Path, url: str) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", step, str(source), url],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status})")
    figures: dict[str, Any] = json.loads(out)
    figures.setdefault("peak_mb", usage.ru_maxrss / 1024)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--dir", default="/tmp/rubix-bench-import")
    parser.add_argument("--child", nargs=3, default=None)
    args = parser.parse_args()
    if args.child:
        reset = Path("/proc/self/clear_refs")
        if reset.exists():  # Linux: count this step's peak only, not the forked parent's
            reset.write_text("5")
        figures = child(*args.child)
        status = Path("/proc/self/status")
        if status.exists():
            figures["peak_mb"] = next(int(line.split()[1]) for line in
                                      status.read_text().splitlines()
                                      if line.startswith("VmHWM")) / 1024
        print(json.dumps(figures))
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"source-{args.rows}.db"
    nodes, events = make_source(source, args.rows)
    print(f"source: {source} ({nodes} nodes + {events} events = {args.rows} rows, "
          f"{source.stat().st_size / 1e6:.0f} MB)")
    names = [f"bench_import_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        admin(args.pg, f"CREATE DATABASE {name}")
    try:
        results: list[tuple[str, dict[str, Any]]] = []
        results.append(("bare COPY baseline (no staging, no upsert)",
                        run_child("copy", source, db_url(args.pg, names[0]))))
        url = db_url(args.pg, names[1])
        results.append(("import: full (new tables)", run_child("import", source, url)))
        results.append(("import: re-run, nothing changed", run_child("import", source, url)))
        work = folder / "changed.db"
        shutil.copy(source, work)
        conn = sqlite3.connect(work)
        conn.execute("UPDATE nodes SET lat = lat / 2")
        conn.execute("UPDATE events SET value = value + 1")
        conn.commit()
        conn.close()
        results.append(("import: upsert, every row changed", run_child("import", work, url)))
        for label, fig in results:
            rate = fig["rows"] / fig["seconds"] if fig["seconds"] else 0
            extra = f", written {fig['written']}, {fig['statuses']}" if "written" in fig else ""
            print(f"{label:45s} {fig['rows']:>9} rows in {fig['seconds']:7.2f} s = "
                  f"{rate / 1000:6.1f}k rows/s, peak {fig['peak_mb']:.0f} MB{extra}")
        print(f"schema after the import: {results[1][1]['schema']}")
        pgloader = shutil.which("pgloader")
        if pgloader:
            import sqlalchemy as sa

            target = sa.engine.make_url(db_url(args.pg, names[2])).set(
                drivername="postgresql").render_as_string(hide_password=False)
            started = time.perf_counter()
            subprocess.run([pgloader, f"sqlite://{source}", target], check=True,
                           capture_output=True, timeout=1800)
            seconds = time.perf_counter() - started
            print(f"{'pgloader (full load)':45s} {args.rows:>9} rows in {seconds:7.2f} s = "
                  f"{args.rows / seconds / 1000:6.1f}k rows/s")
            print(f"schema after pgloader: {schema_of(db_url(args.pg, names[2]))}")
        else:
            print("pgloader: not installed (apt-get install pgloader to compare)")
    finally:
        for name in names:
            admin(args.pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
