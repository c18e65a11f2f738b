"""Analytics: DuckDB over each store, by scanner and by copy, offline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from rubix_integration._settings import resolve_settings
from rubix_integration.errors import StoreError, StoreUnavailableError
from rubix_integration.stores import Analytics, SQLiteStore, Store


def _fill(store: Store) -> sa.Table:
    meta = sa.MetaData()
    table = sa.Table(
        "tokens",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("seen_at", sa.DateTime, nullable=True),
    )
    meta.create_all(store.engine)
    when = dt.datetime(2024, 5, 1, 12, 30)
    rows = [
        (i, f"node{i % 3}", float(i), bytes([i % 256, 0]), when + dt.timedelta(minutes=i))
        for i in range(300)
    ]
    assert store.bulk_insert(table, rows) == 300
    return table


EXPECTED = [
    ("node0", 100, sum(float(i) for i in range(0, 300, 3))),
    ("node1", 100, sum(float(i) for i in range(1, 300, 3))),
    ("node2", 100, sum(float(i) for i in range(2, 300, 3))),
]
GROUP_BY = "SELECT node, count(*), sum(amount) FROM tokens GROUP BY node ORDER BY node"


@pytest.mark.parametrize("method", ["auto", "copy"])
def test_group_by_and_parquet(store: Store, method: str, tmp_path: Path) -> None:
    _fill(store)
    with Analytics(store, method=method) as analytics:  # type: ignore[arg-type]
        if method == "auto":
            scanner = "sqlite_scanner" if store.name == "sqlite" else "postgres_scanner"
            assert analytics.method == scanner
        else:
            assert analytics.method in ("json_copy", "arrow_copy")
        info = analytics.describe()
        assert info["method"] == analytics.method
        assert info["duckdb_version"] == duckdb.__version__
        assert "tokens" in analytics.tables()
        assert analytics.query(GROUP_BY) == EXPECTED
        assert analytics.query("SELECT payload, seen_at FROM tokens WHERE id = ?", [7]) == [
            (bytes([7, 0]), dt.datetime(2024, 5, 1, 12, 37))
        ]
        assert analytics.query_dicts("SELECT count(*) AS n FROM tokens WHERE node = $n",
                                     {"n": "node1"}) == [{"n": 100}]

        table_file = tmp_path / "out" / "tokens.parquet"
        assert analytics.export_parquet("tokens", table_file) == 300
        query_file = tmp_path / "out" / "grouped.parquet"
        assert analytics.export_parquet(GROUP_BY, query_file) == 3

    check = duckdb.connect(":memory:")
    try:
        assert check.execute(
            "SELECT node, count(*), sum(amount) FROM read_parquet(?) GROUP BY node ORDER BY node",
            [str(table_file)],
        ).fetchall() == EXPECTED
        assert check.execute("SELECT * FROM read_parquet(?)", [str(query_file)]).fetchall() == (
            EXPECTED
        )
    finally:
        check.close()


def test_scanner_sees_live_writes(store: Store) -> None:
    table = _fill(store)
    with Analytics(store, method="scanner") as analytics:
        assert analytics.query("SELECT count(*) FROM tokens") == [(300,)]
        store.bulk_insert(table, [(1000, "node9", 1.0, None, None)])
        assert analytics.query("SELECT count(*) FROM tokens") == [(301,)]


def test_scanner_attaches_read_only(store: Store) -> None:
    _fill(store)
    with Analytics(store) as analytics, pytest.raises(StoreError):
        analytics.query("DELETE FROM tokens")
    with store.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tokens").scalar() == 300


def test_bad_sql_is_a_store_error(store: Store) -> None:
    with Analytics(store) as analytics, pytest.raises(StoreError, match="analytics query failed"):
        analytics.query("SELECT * FROM no_such_table")


def test_odd_table_name_is_quoted(store: Store, tmp_path: Path) -> None:
    meta = sa.MetaData()
    odd = sa.Table('we"ird; name', meta, sa.Column("x", sa.Integer))
    meta.create_all(store.engine)
    store.bulk_insert(odd, [(1,), (2,)])
    for method in ("auto", "copy"):
        with Analytics(store, method=method) as analytics:
            assert 'we"ird; name' in analytics.tables()
            out = tmp_path / f"odd-{method}.parquet"
            assert analytics.export_parquet('we"ird; name', out) == 2


def test_in_memory_sqlite_falls_back_to_copy() -> None:
    with SQLiteStore("sqlite://", settings=resolve_settings()) as store:
        store.create_schema()
        _fill(store)
        with Analytics(store) as analytics:
            assert analytics.method in ("json_copy", "arrow_copy")
            assert "in-memory" in analytics.reason
            assert analytics.query(GROUP_BY) == EXPECTED
        with pytest.raises(StoreUnavailableError, match="in-memory"):
            Analytics(store, method="scanner")


def test_missing_home_uses_data_dir(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    _fill(store)
    with Analytics(store) as analytics:
        assert analytics.query("SELECT count(*) FROM tokens") == [(300,)]
    assert (store.settings.data_dir / "duckdb").is_dir()


def test_unreachable_store_is_unavailable() -> None:
    from rubix_integration.stores import PostgreSQLStore

    store = PostgreSQLStore("postgresql://u:topsecret@127.0.0.1:1/db", settings=resolve_settings())
    with pytest.raises(StoreUnavailableError) as info:
        Analytics(store)
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://bob:hunter2@127.0.0.1:5432/db",
    "postgresql+psycopg://bob@127.0.0.1:5432/db?password=hunter2",
    "postgresql+psycopg://bob@127.0.0.1:5432/db?sslmode=require&PassWord=hunter2",
])
def test_duckdb_error_text_hides_every_secret_of_the_store_url(url: str) -> None:
    from types import SimpleNamespace

    text = f"IO Error: Unable to connect to Postgres at 'dbname=db password=hunter2': {url}"
    holder = SimpleNamespace(store=SimpleNamespace(url=url))
    scrubbed = Analytics._scrub(holder, text)  # type: ignore[arg-type]
    assert "hunter2" not in scrubbed
    assert "***" in scrubbed and "Unable to connect" in scrubbed
