"""The SQLite importer on every store: schema kept, FK order, upsert, incremental, hostile input."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from rubix_integration import ImportSourceError, Manager
from tests.fixtures.import_data import (
    assert_same_rows,
    make_plans_db,
    run_cli,
    source_rows,
    target_rows,
)

SCRIPT = Path(sys.executable).parent / "rubix-integration"
PLANS = ("json_import_file", "node_plan", "node_plan_job")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RUBIX_LOAD_PLUGINS": ""})


def test_plans_db_clear_end_to_end_row_for_row(plans_db: Path, store_url: str,
                                               store_kind: str) -> None:
    out = cli("import", "sqlite", str(plans_db), "--clear", "--store", store_url)
    assert out.returncode == 0, out.stderr
    assert "Importing node_plan...\n  Total rows to import: 400\n" in out.stdout
    assert "  Progress: 400/400 (100%)\n  Imported 400 rows\n" in out.stdout
    assert out.stdout.index("Importing json_import_file") < out.stdout.index(
        "Importing node_plan...") < out.stdout.index("Importing node_plan_job")
    for table in PLANS:
        assert_same_rows(source_rows(plans_db, table), target_rows(store_url, table))
    inf = [r for r in target_rows(store_url, "node_plan") if r[9] in (math.inf, -math.inf)]
    assert len(inf) == 2
    assert any(isinstance(r[5], bytes) and r[5].endswith(b"\x00\xff")
               for r in target_rows(store_url, "json_import_file"))
    # again with --clear: the same rows, nothing doubled
    again = run_cli("import", "sqlite", str(plans_db), "--clear", "--store", store_url,
                    "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert [t["table"] for t in data["tables"]] == list(PLANS)
    assert all(t["cleared"] and t["new"] == t["total"] for t in data["tables"])
    assert_same_rows(source_rows(plans_db, "node_plan_job"),
                     target_rows(store_url, "node_plan_job"))


def test_schema_is_kept(plans_db: Path, store_url: str, store_kind: str) -> None:
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(plans_db)
        assert report.ok and [t.table for t in report.tables] == list(PLANS)
        assert all(t.created for t in report.tables)
        engine = m.store.engine
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            cols = {c["name"]: c for c in insp.get_columns("node_plan")}
            fks = insp.get_foreign_keys("node_plan")
            uniques = insp.get_unique_constraints("node_plan")
            indexes = {i["name"] for i in insp.get_indexes("node_plan")}
            pk = insp.get_pk_constraint("node_plan")["constrained_columns"]
    assert pk == ["id"]
    assert not cols["node_id"]["nullable"] and cols["org_name"]["nullable"]
    assert fks[0]["referred_table"] == "json_import_file"
    assert {"ix_node_plan_node", "ix_node_plan_time"} <= indexes
    if store_kind == "postgresql":
        assert fks[0]["options"].get("ondelete") == "CASCADE"
        assert str(cols["earnings"]["type"]) == "DOUBLE PRECISION"
        assert cols["id"]["identity"]["always"] is False
        assert [u["column_names"] for u in uniques] == [
            ["json_import_file_id", "node_id", "start_time"]]
        assert "completed" in str(cols["status"]["default"])
        # the sequence follows the imported ids
        with Manager(store_url=store_url) as m, m.store.transaction() as conn:
            new_id = conn.execute(sa.text(
                "INSERT INTO node_plan (json_import_file_id, node_id, start_time) "
                "VALUES (1, 'n', 1) RETURNING id")).scalar()
        assert new_id == 401
    else:
        source = sqlite3.connect(plans_db)
        want = source.execute("SELECT sql FROM sqlite_master WHERE name = 'node_plan'").fetchone()
        with Manager(store_url=store_url) as m, m.store.connect() as conn:
            got = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'node_plan'").fetchone()
        assert got is not None and got[0] == want[0]


def test_incremental_rerun_and_unchanged_rows_not_rewritten(plans_db: Path, store_url: str,
                                                            store_kind: str) -> None:
    with Manager(store_url=store_url) as m:
        assert m.import_sqlite(plans_db).ok
        second = m.import_sqlite(plans_db)
        assert [t.status for t in second.tables] == ["unchanged"] * 3
        assert sum(t.imported for t in second.tables) == 0
        src = sqlite3.connect(plans_db)
        src.execute("UPDATE node_plan SET earnings = 42.5 WHERE id IN (2, 3)")
        src.execute("INSERT INTO node_plan (json_import_file_id, node_id, start_time) "
                    "VALUES (1, 'new-node', 5)")
        src.commit()
        src.close()
        marker = _row_versions(m, "node_plan")
        plan = m.import_sqlite(plans_db, dry_run=True)
        assert plan.table("node_plan").new == 1 and plan.table("node_plan").changed == 2
        assert plan.table("node_plan").unchanged == 398
        assert plan.table("json_import_file").unchanged == 10
        third = m.import_sqlite(plans_db)
        t = third.table("node_plan")
        assert (t.status, t.new, t.changed, t.unchanged) == ("imported", 1, 2, 398)
        assert third.table("json_import_file").status == "unchanged"
        after = _row_versions(m, "node_plan")
        if store_kind == "postgresql":
            rewritten = {k for k in marker if marker[k] != after[k]}
            assert rewritten == {2, 3}
    assert_same_rows(source_rows(plans_db, "node_plan"), target_rows(store_url, "node_plan"))


def _row_versions(m: Manager, table: str) -> dict[int, str]:
    with m.store.connect() as conn:
        if m.store.engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(f"SELECT id, xmin::text FROM {table}").all()
        else:
            rows = conn.exec_driver_sql(f"SELECT id, '' FROM {table}").all()
    return {int(r[0]): str(r[1]) for r in rows}


def test_dry_run_writes_nothing(plans_db: Path, store_url: str) -> None:
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(plans_db, dry_run=True)
        assert report.dry_run and [t.status for t in report.tables] == ["planned"] * 3
        assert report.table("node_plan").new == 400
        assert any("CREATE TABLE" in s for s in report.table("node_plan").ddl)
        with m.store.connect() as conn:
            assert not set(PLANS) & set(sa.inspect(conn).get_table_names())
    out = run_cli("import", "sqlite", str(plans_db), "--dry-run", "--store", store_url)
    assert out.returncode == 0, out.stderr
    assert "would run: CREATE TABLE" in out.stdout and "dry run: nothing written" in out.stdout


def test_not_a_sqlite_file(tmp_path: Path, store_url: str) -> None:
    bogus = tmp_path / "plans.db"
    bogus.write_text("this is not a database\n" * 10)
    with Manager(store_url=store_url) as m, pytest.raises(ImportSourceError,
                                                          match="not a SQLite database"):
        m.import_sqlite(bogus)
    out = run_cli("import", "sqlite", str(bogus), "--store", store_url)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"Error: ImportSourceError: {bogus} is not a SQLite database"]


def test_source_is_never_written(plans_db: Path, store_url: str) -> None:
    before = {p.name: p.read_bytes() for p in plans_db.parent.glob("plans.db*")}
    os.chmod(plans_db, 0o444)
    with Manager(store_url=store_url) as m:
        assert m.import_sqlite(plans_db, clear=True).ok
    after = {p.name: p.read_bytes() for p in plans_db.parent.glob("plans.db*")}
    assert after["plans.db"] == before["plans.db"]
    # a WAL reader may leave SQLite's shared-memory index and an empty log, never content
    assert after.get("plans.db-wal", b"") == before.get("plans.db-wal", b"")


def _hostile_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, label TEXT);
        CREATE TABLE item_notes (id INTEGER PRIMARY KEY,
                                 item_id INTEGER REFERENCES items(id), note TEXT);
        CREATE TABLE other (code TEXT PRIMARY KEY, score REAL, data BLOB);
    """)
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                     [(i, -1 if i in (3, 7) else i, f"item {i}") for i in range(1, 21)])
    conn.executemany("INSERT INTO item_notes VALUES (?, ?, ?)",
                     [(i, i, "n") for i in range(1, 6)])
    conn.executemany("INSERT INTO other VALUES (?, ?, ?)",
                     [("inf", math.inf, b"\x00"), ("nan", math.nan, b""), ("x", 1.5, None)])
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("clear", [False, True], ids=["each", "clear"])
def test_rows_breaking_a_target_constraint(tmp_path: Path, store_url: str, clear: bool) -> None:
    src = _hostile_db(tmp_path / "hostile.db")
    with Manager(store_url=store_url) as m:
        with m.store.transaction() as conn:  # the target forbids negative quantities
            conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT "
                                 "NULL CHECK (qty >= 0), label TEXT)")
            conn.exec_driver_sql("INSERT INTO items VALUES (100, 1, 'kept')")
        report = m.import_sqlite(src, clear=clear)
        assert not report.ok
        items = report.table("items")
        assert items.status == "failed" and "check" in items.error.lower()
        assert sorted(items.failed_keys) == [3, 7]
        notes = report.table("item_notes")
        assert notes.status == "skipped" and "items" in notes.error
        assert report.table("other").status == "imported"
        with m.store.connect() as conn:
            assert conn.exec_driver_sql("SELECT id FROM items").scalars().all() == [100]
            assert not sa.inspect(conn).has_table("item_notes")
    rows = target_rows(store_url, "other")
    assert [r[0] for r in rows] == ["inf", "nan", "x"]
    assert rows[0][1] == math.inf and rows[1][1] is None  # SQLite stores NaN as NULL
    out = run_cli("import", "sqlite", str(src), "--store", store_url)
    assert out.returncode == 1
    assert "items: failed" in out.stdout and "rows that fail (keys): 3, 7" in out.stdout


def test_text_in_an_integer_column(tmp_path: Path, store_url: str, store_kind: str) -> None:
    path = tmp_path / "loose.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE loose (id INTEGER PRIMARY KEY, n INTEGER)")
    conn.executemany("INSERT INTO loose VALUES (?, ?)", [(1, 5), (2, "five"), (3, 7)])
    conn.commit()
    conn.close()
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(path)
    t = report.table("loose")
    if store_kind == "postgresql":  # bigint cannot hold it: that row is named
        assert t.status == "failed" and t.failed_keys == [2]
    else:  # SQLite keeps what its source kept
        assert t.status == "imported"
        assert_same_rows(source_rows(path, "loose"), target_rows(store_url, "loose"))


def test_cycles_and_wide_tables(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "cycle.db"
    conn = sqlite3.connect(path)
    wide = ", ".join(f"c{i} REAL" for i in range(100))
    conn.executescript(f"""
        CREATE TABLE a (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id));
        CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id));
        CREATE INDEX ix_a_b ON a(b_id);
        CREATE INDEX ix_b_a ON b(a_id);
        CREATE TABLE wide (id INTEGER PRIMARY KEY, {wide});
    """)
    conn.executemany("INSERT INTO a VALUES (?, ?)", [(i, i) for i in range(1, 51)])
    conn.executemany("INSERT INTO b VALUES (?, ?)", [(i, 51 - i) for i in range(1, 51)])
    conn.executemany(f"INSERT INTO wide VALUES ({', '.join('?' * 101)})",
                     [(r, *(r * 0.5 + i for i in range(100))) for r in range(1, 301)])
    conn.commit()
    conn.close()
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(path, batch_size=64)
        assert report.ok
        assert report.cycles == [["a", "b"]]
        assert report.table("a").created and report.table("b").created
        with m.store.connect() as c:
            insp = sa.inspect(c)
            assert [i["name"] for i in insp.get_indexes("b")] == ["ix_b_a"]
            assert [i["name"] for i in insp.get_indexes("a")] == ["ix_a_b"]
            assert insp.get_foreign_keys("a")[0]["referred_table"] == "b"
        again = m.import_sqlite(path, clear=True)
        assert again.ok
    for table in ("a", "b", "wide"):
        assert_same_rows(source_rows(path, table), target_rows(store_url, table))


def test_modes_and_keyless_tables(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "modes.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE log (at INTEGER, line TEXT);
        CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);
        INSERT INTO log VALUES (1, 'a'), (2, 'b');
        INSERT INTO kv VALUES ('x', '1'), ('y', '2');
    """)
    conn.commit()
    with Manager(store_url=store_url) as m:
        m.import_sqlite(path)
        conn.execute("UPDATE kv SET v = '9' WHERE k = 'x'")
        conn.execute("INSERT INTO kv VALUES ('z', '3')")
        conn.commit()
        report = m.import_sqlite(path, mode="insert", tables=["kv"])
        assert (report.table("kv").new, report.table("kv").changed) == (1, 0)
        assert dict(target_rows(store_url, "kv")) == {"x": "1", "y": "2", "z": "3"}
        m.import_sqlite(path, mode="replace")
        assert dict(target_rows(store_url, "kv")) == {"x": "9", "y": "2", "z": "3"}
        m.import_sqlite(path)  # upsert of a keyless table replaces its rows: not doubled
        m.import_sqlite(path, mode="replace")
        assert target_rows(store_url, "log") == [(1, "a"), (2, "b")]
        m.import_sqlite(path, mode="insert", tables=["log"])
    conn.close()
    assert len(target_rows(store_url, "log")) == 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_leaves_each_table_before_or_after(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "big.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT);"
                       "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT, f REAL);")
    conn.executemany("INSERT INTO small VALUES (?, ?)", [(i, "s") for i in range(100)])
    conn.executemany("INSERT INTO big VALUES (?, ?, ?)",
                     ((i, "x" * 40, i / 3) for i in range(400_000)))
    conn.commit()
    conn.close()
    proc = subprocess.Popen([str(SCRIPT), "import", "sqlite", str(path), "--store", store_url,
                             "--batch-size", "500"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RUBIX_LOAD_PLUGINS": ""})
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        # half-way through the big table (the small one committed before it began)
        found = re.search(r"Progress: (\d+)/400000", line) if "Importing big" in seen else None
        if found and 0 < int(found.group(1)) <= 200_000:
            break
        if not line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, seen
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as c:
            tables = set(sa.inspect(c).get_table_names())
            count = (c.exec_driver_sql("SELECT count(*) FROM big").scalar()
                     if "big" in tables else 0)
            small = c.exec_driver_sql("SELECT count(*) FROM small").scalar()
    finally:
        engine.dispose()
    assert count == 0  # as before: not one of the rows written before the kill is seen
    assert small == 100
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(path)
    assert report.ok and report.table("small").status == "unchanged"
    assert len(target_rows(store_url, "big")) == 400_000


def test_live_source_in_wal_mode(tmp_path: Path, store_url: str) -> None:
    path = make_plans_db(tmp_path / "live.db", plans=50)
    writer = sqlite3.connect(path)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO json_import_file (file_name, file_hash) VALUES ('w', 'h')")
    try:  # a writer holds the lock; the import reads the last committed snapshot
        with Manager(store_url=store_url) as m:
            report = m.import_sqlite(path)
        assert report.ok and report.table("json_import_file").total == 3
    finally:
        writer.rollback()
        writer.close()


def test_existing_table_that_cannot_take_the_columns(plans_db: Path, store_url: str) -> None:
    from rubix_integration import ImportSchemaError

    with Manager(store_url=store_url) as m:
        with m.store.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE json_import_file (id INTEGER PRIMARY KEY, "
                                 "file_name TEXT)")
        with pytest.raises(ImportSchemaError, match="json_import_file: column 'file_hash' is "
                                                    "missing from the target table"):
            m.import_sqlite(plans_db)
        with m.store.connect() as conn:  # nothing was created or written
            assert not sa.inspect(conn).has_table("node_plan")
        report = m.import_sqlite(plans_db, tables=["node_plan_job"], dry_run=True)
        assert [t.table for t in report.tables] == ["node_plan_job"]
        with pytest.raises(ImportSourceError, match="has no table"):
            m.import_sqlite(plans_db, tables=["nope"])


def test_orphan_rows_of_a_foreign_key(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "orphans.db"
    conn = sqlite3.connect(path)  # SQLite leaves foreign keys unchecked unless asked
    conn.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
        INSERT INTO parent VALUES (1), (2);
        INSERT INTO child VALUES (10, 1), (11, 99), (12, 2), (13, 77);
    """)
    conn.commit()
    conn.close()
    with Manager(store_url=store_url) as m:
        report = m.import_sqlite(path)
        child = report.table("child")
        assert report.table("parent").status == "imported"
        assert child.status == "failed" and sorted(child.failed_keys) == [11, 13]
        with m.store.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM parent").scalar() == 2
            assert not sa.inspect(c).has_table("child")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_stays_flat_on_a_source_larger_than_it(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "large.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body TEXT, data BLOB)")
    chunk = "x" * 1500
    conn.executemany("INSERT INTO blobs VALUES (?, ?, ?)",
                     ((i, f"{i}{chunk}", os.urandom(1000)) for i in range(100_000)))
    conn.commit()
    conn.close()
    size_mb = path.stat().st_size / 2**20
    # the peak is measured in the importing process alone: reset (Linux) as it starts, so
    # that the memory of the process it was forked from does not count
    code = ("import sys\nfrom pathlib import Path\nfrom rubix_integration import Manager\n"
            "Path('/proc/self/clear_refs').write_text('5')\n"
            "with Manager(store_url=sys.argv[2]) as m:\n"
            "    assert m.import_sqlite(sys.argv[1]).ok\n"
            "status = Path('/proc/self/status').read_text().splitlines()\n"
            "print(next(int(x.split()[1]) for x in status if x.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path), store_url], timeout=150,
                         capture_output=True, text=True,
                         env={**os.environ, "RUBIX_LOAD_PLUGINS": ""})
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stdout.split()[-1]) / 1024
    # the rows pass through in batches: the process never holds the table
    assert size_mb > 240 and peak_mb < size_mb / 2, (size_mb, peak_mb)
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM blobs").scalar() == 100_000
    finally:
        engine.dispose()


def test_the_store_own_tables_are_refused(tmp_path: Path, store_url: str) -> None:
    from rubix_integration import ImportSchemaError

    path = tmp_path / "rubix.db"  # a node database: its tables share the store's names
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE rubix_meta (key TEXT PRIMARY KEY, value TEXT);"
                       "INSERT INTO rubix_meta VALUES ('node_id', 'evil');"
                       "CREATE TABLE extra (id INTEGER PRIMARY KEY);")
    conn.commit()
    conn.close()
    with Manager(store_url=store_url) as m:
        node_id = m.store.node_id
        with pytest.raises(ImportSchemaError, match="rubix_meta share a name"):
            m.import_sqlite(path)
        assert m.import_sqlite(path, tables=["extra"]).ok
        (tmp_path / "x.json").write_text('[{"key": "node_id", "value": "evil"}]')
        with pytest.raises(ImportSchemaError, match="one of the store's own tables"):
            m.import_json(tmp_path / "x.json", table="rubix_meta")
    with Manager(store_url=store_url) as m:
        assert m.store.node_id == node_id
