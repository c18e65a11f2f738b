"""Bulk-write rates of the stores: ``Store.bulk_insert`` against SQLAlchemy Core ``insert``.

Run: ``.venv/bin/python bench/bench_stores.py [--rows 100000] [--pg-url URL]``. SQLite runs in a
temporary folder; PostgreSQL in a database created for the run and dropped afterwards (skipped
when the server does not answer). Prints rows per second; not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rubix_integration._settings import resolve_settings
from rubix_integration.stores import Analytics, PostgreSQLStore, SQLiteStore, Store


def make_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
    )


def make_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "token_id": f"Qm{i:040d}", "node": f"node{i % 16}", "amount": i * 0.5}
        for i in range(count)
    ]


def timed(label: str, count: int, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"  {label:<40} {count:>9,} rows in {elapsed:6.2f} s = {rate:>11,.0f} rows/s")
    return rate


def bench_store(store: Store, rows: list[dict[str, Any]]) -> None:
    count = len(rows)
    print(f"{store.name} ({store.describe()['server_version']})")

    core = make_table("bench_core")
    core.metadata.create_all(store.engine)

    def core_insert() -> None:
        with store.transaction() as conn:
            conn.execute(sa.insert(core), rows)

    base = timed("Core insert executemany", count, core_insert)

    bulk = make_table("bench_bulk")
    bulk.metadata.create_all(store.engine)
    fast = timed("Store.bulk_insert (mappings)", count, lambda: store.bulk_insert(bulk, rows))

    tuples = [(r["id"], r["token_id"], r["node"], r["amount"]) for r in rows]
    bulk_t = make_table("bench_bulk_tuples")
    bulk_t.metadata.create_all(store.engine)
    timed("Store.bulk_insert (tuples)", count, lambda: store.bulk_insert(bulk_t, tuples))
    print(f"  speed-up of bulk_insert over Core: {fast / base:.1f}x")

    sql = "SELECT node, count(*), sum(amount) FROM bench_bulk GROUP BY node"
    with Analytics(store) as analytics:
        timed(f"DuckDB GROUP BY via {analytics.method}", count, lambda: analytics.query(sql))

    def open_copy() -> None:
        # copies every table of the store: three of `count` rows each here
        with Analytics(store, method="copy") as copied:
            copied.query(sql)

    timed("Analytics(method='copy') open + query", 3 * count, open_copy)


@contextmanager
def pg_database(server_url: str) -> Iterator[str | None]:
    import psycopg
    from psycopg import sql

    url = sa.engine.make_url(PostgreSQLStore.normalise_url(server_url))
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    name = f"rubix_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        print(f"postgresql: skipped ({' '.join(str(exc).split())})")
        yield None
        return
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    rows = make_rows(args.rows)

    with tempfile.TemporaryDirectory(prefix="rubix-bench-") as tmp:
        settings = resolve_settings(data_dir=Path(tmp), load_plugins=())
        with SQLiteStore(f"sqlite:///{Path(tmp) / 'bench.sqlite'}", settings=settings) as store:
            store.create_schema()
            bench_store(store, rows)
        with pg_database(args.pg_url) as url:
            if url is not None:
                with PostgreSQLStore(url, settings=settings) as store:
                    store.create_schema()
                    bench_store(store, rows)


if __name__ == "__main__":
    main()
