from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration import Manager, hookimpl
from rubix_integration.tokens.demo import make_node, make_sample
from rubix_integration.tokens.discover import discover
from rubix_integration.tokens.models import STAGING_TABLE, TOKEN_TABLE
from rubix_integration.tokens.reader import parse_timestamp

EXPECTED_ERRORS = {"corrupt": 1, "not_found": 2, "empty_token_id": 1, "invalid_cid": 1,
                   "no_ipfs_path": 3}


def tree_state(root: Path) -> dict[str, str]:
    """Every file below ``root`` with the hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def rows(manager: Manager) -> list[tuple[Any, ...]]:
    t = TOKEN_TABLE
    cols = [t.c.db_path, t.c.token_kind, t.c.token_id, t.c.ipfs_data, t.c.ipfs_error,
            t.c.ipfs_fetched, t.c.node_name, t.c.created_at]
    with manager.store.connect() as conn:
        found = [tuple(_utc(v) for v in r)
                 for r in conn.execute(sa.select(*cols).where(t.c.deleted_at.is_(None)))]
    return sorted(found, key=repr)


def _utc(value: Any) -> Any:
    """PostgreSQL returns aware datetimes, SQLite naive UTC ones: compare them as naive UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


@pytest.fixture
def manager(store_url: str, tmp_path: Path) -> Any:
    with Manager(store_url=store_url, data_dir=tmp_path / "data", source_ip="10.9.8.7") as m:
        yield m


def test_demo_sample_syncs_with_classified_failures(manager: Manager, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root")
    before = tree_state(sample.root)
    summary = manager.sync_tokens([sample.root])
    assert summary.databases_found == len(sample.nodes) + sample.broken_databases
    assert summary.databases_processed == len(sample.nodes)
    assert summary.databases_failed == sample.broken_databases == 2
    assert summary.records == sample.tokens
    assert summary.ipfs_success == sample.expected_ok
    assert summary.errors_by_kind == EXPECTED_ERRORS
    assert summary.bad_timestamps == 1
    assert not summary.ok
    failed = {r.node_name: r.error_kind for r in summary.databases if r.status == "failed"}
    assert failed == {"node904-garbage": "not_sqlite", "node905-no-tokens": "no_tokens_table"}
    # nothing in the nodes' folders changed, and no file appeared
    assert tree_state(sample.root) == before
    stored = rows(manager)
    assert len(stored) == sample.tokens
    assert {r[6] for r in stored} >= {"node001", "node901-parent-ipfs", "node903-handmade"}
    with manager.store.connect() as conn:
        modes = dict(conn.execute(sa.text(
            "SELECT node_name, MAX(ipfs_mode) FROM tokenrecords GROUP BY node_name")).all())
        ips = set(conn.execute(sa.text("SELECT DISTINCT source_ip FROM tokenrecords")).scalars())
    assert modes["node001"] == "repo"
    assert modes["node902-no-ipfs"] is None
    assert ips == {"10.9.8.7"}


def test_rerun_skips_unchanged_and_full_never_duplicates(manager: Manager, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", broken=False, nodes=3, tokens_per_node=5)
    first = manager.sync_tokens([sample.root])
    assert first.ok and first.databases_processed == 3
    stored = rows(manager)
    again = manager.sync_tokens([sample.root])
    assert again.databases_skipped == 3 and again.databases_processed == 0
    assert again.records == 0
    full = manager.sync_tokens([sample.root], full=True)
    assert full.databases_processed == 3
    assert rows(manager) == stored


def test_modified_database_replaces_its_rows(manager: Manager, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", broken=False, nodes=2, tokens_per_node=5)
    manager.sync_tokens([sample.root])
    db = sample.nodes[0] / "Rubix" / "rubix.db"
    with sqlite3.connect(db) as conn:
        gone = conn.execute("SELECT token_id FROM TokensTable LIMIT 1").fetchone()[0]
        conn.execute("DELETE FROM TokensTable WHERE token_id = ?", (gone,))
    os.utime(db, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    summary = manager.sync_tokens([sample.root])
    assert summary.databases_processed == 1 and summary.databases_skipped == 1
    stored = rows(manager)
    assert len(stored) == sample.tokens - 1
    assert gone not in {r[2] for r in stored if r[0] == str(db)}
    # the same shared tokens stay one row per node
    with manager.store.connect() as conn:
        shared = conn.execute(sa.text(
            "SELECT token_id, COUNT(*) FROM tokenrecords GROUP BY token_id "
            "HAVING COUNT(*) > 1")).all()
    assert shared and all(count == 2 for _, count in shared)


def _wal_node(node: Path, rng: random.Random) -> sqlite3.Connection:
    """Turn a node's database into WAL mode and keep a writer open, as a running node does."""
    db = node / "Rubix" / "rubix.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    return writer


def test_wal_changes_count_and_node_files_are_never_touched(
    manager: Manager, tmp_path: Path
) -> None:
    rng = random.Random(3)
    node = tmp_path / "root" / "node-live"
    ids = make_node(node, [b"TRI 1 x", b"TRI 2 y"], rng=rng)
    writer = _wal_node(node, rng)
    try:
        writer.execute("UPDATE TokensTable SET token_status = 7 WHERE token_id = ?", (ids[0],))
        listing = sorted(p.name for p in (node / "Rubix").iterdir())
        assert "rubix.db-wal" in listing
        before = tree_state(node / "Rubix")
        first = manager.sync_tokens([tmp_path / "root"])
        assert first.databases_processed == 1 and first.records == 2
        assert tree_state(node / "Rubix") == before
        with manager.store.connect() as conn:
            status = conn.execute(
                sa.text("SELECT token_status FROM tokenrecords WHERE token_id = :t"),
                {"t": ids[0]}).scalar()
        assert status == "7"
        # a change that sits only in the -wal file counts as a modification
        extra = make_node(tmp_path / "other", [b"TRI 3 z"], rng=rng)[0]
        writer.execute("INSERT INTO TokensTable (token_id, did) VALUES (?, 'd')", (extra,))
        second = manager.sync_tokens([tmp_path / "root"])
        assert second.databases_processed == 1
        assert second.records == 3
    finally:
        writer.close()
    assert len(rows(manager)) == 3


def test_busy_database_is_waited_for(manager: Manager, tmp_path: Path) -> None:
    rng = random.Random(4)
    node = tmp_path / "root" / "node-busy"
    make_node(node, [b"TRI 1 a"], rng=rng)
    locker = sqlite3.connect(node / "Rubix" / "rubix.db", isolation_level=None,
                             check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, lambda: locker.execute("COMMIT"))
    release.start()
    try:
        summary = manager.sync_tokens([tmp_path / "root"])
    finally:
        release.join()
        locker.close()
    assert summary.ok and summary.records == 1


def test_content_parts_and_binary_content(manager: Manager, tmp_path: Path) -> None:
    rng = random.Random(5)
    binary = bytes(range(256))
    text = b"TRI 42 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
    ids = make_node(tmp_path / "root" / "n1", [text, binary, b"with\x00nul"], rng=rng)
    manager.sync_tokens([tmp_path / "root"])
    t = TOKEN_TABLE
    with manager.store.connect() as conn:
        got = {r.token_id: r for r in conn.execute(sa.select(t))}
    assert (got[ids[0]].content_name, got[ids[0]].content_number, got[ids[0]].content_creator) \
        == ("TRI", "42", "bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u")
    assert got[ids[0]].ipfs_encoding == "utf-8" and got[ids[0]].ipfs_data == text.decode()
    assert got[ids[1]].ipfs_encoding == "base64"
    assert base64.b64decode(got[ids[1]].ipfs_data) == binary
    assert base64.b64decode(got[ids[2]].ipfs_data) == b"with\x00nul"
    assert got[ids[1]].content_name is None


def test_too_large_content_is_classified(store_url: str, tmp_path: Path) -> None:
    rng = random.Random(6)
    make_node(tmp_path / "root" / "n1", [b"x" * 5000, b"small"], rng=rng)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([tmp_path / "root"], max_size=1000)
    assert summary.errors_by_kind == {"too_large": 1}
    assert summary.ipfs_success == 1


def test_worker_processes_store_what_one_process_stores(
    store_url: str, tmp_path: Path
) -> None:
    sample = make_sample(tmp_path / "root", nodes=3, tokens_per_node=40)
    with Manager(store_url=store_url, data_dir=tmp_path / "d", source_ip="10.0.0.3") as manager:
        alone = manager.sync_tokens([sample.root], processes=1)
        single = rows(manager)
        spread = manager.sync_tokens([sample.root], processes=2, full=True)
        assert rows(manager) == single
    assert alone.workers.startswith("in-process")
    assert spread.workers.startswith("2 processes")
    assert (spread.records, spread.errors_by_kind, spread.databases_failed) == \
        (alone.records, alone.errors_by_kind, alone.databases_failed)
    # the spool files of the workers are gone
    assert list((tmp_path / "d" / "tmp").glob("rubix-rows-*")) == []


def test_events_fire(store_url: str, tmp_path: Path) -> None:
    seen: dict[str, list[Mapping[str, Any]]] = {"tokens": [], "dbs": []}

    class Listener:
        @hookimpl
        def token_synced(self, manager: Manager, record: Mapping[str, Any]) -> None:
            seen["tokens"].append(record)

        @hookimpl
        def database_processed(self, manager: Manager, result: Mapping[str, Any]) -> None:
            seen["dbs"].append(result)

    sample = make_sample(tmp_path / "root", nodes=2, tokens_per_node=3, broken=False)
    with Manager(store_url=store_url, data_dir=tmp_path / "d", plugins=[Listener()]) as manager:
        manager.sync_tokens([sample.root])
        manager.sync_tokens([sample.root])
    assert len(seen["tokens"]) == sample.tokens
    assert {r["token_id"] for r in seen["tokens"]} <= {r[2] for r in rows(manager)}
    assert [d["status"] for d in seen["dbs"]] == ["processed"] * 2 + ["skipped"] * 2


def test_tokens_gone_from_a_node_are_not_announced(store_url: str, tmp_path: Path) -> None:
    announced: list[str] = []

    class Listener:
        @hookimpl
        def token_synced(self, manager: Manager, record: Mapping[str, Any]) -> None:
            announced.append(str(record["token_id"]))

    sample = make_sample(tmp_path / "root", nodes=1, tokens_per_node=3, broken=False)
    db = sample.root / "node001" / "Rubix" / "rubix.db"
    with Manager(store_url=store_url, data_dir=tmp_path / "d", plugins=[Listener()]) as manager:
        manager.sync_tokens([sample.root])
        first = list(announced)
        with sqlite3.connect(db) as conn:
            gone = conn.execute("SELECT token_id FROM TokensTable LIMIT 1").fetchone()[0]
            conn.execute("DELETE FROM TokensTable WHERE token_id = ?", (gone,))
        announced.clear()
        manager.sync_tokens([sample.root], full=True)
    assert gone in first
    assert gone not in announced
    assert len(announced) == len(first) - 1


def test_discovery_survives_symlink_loops_and_missing_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_sample(root, nodes=2, tokens_per_node=1, broken=False)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "node001" / "again").symlink_to(root / "node002", target_is_directory=True)
    found = discover([root, root])
    assert [n.node_name for n in found] == ["node001", "node002"]
    with Manager(data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root, tmp_path / "missing"])
    assert summary.databases_processed == 2
    assert any("missing" in p for p in summary.discovery_problems)
    assert not summary.ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-15 10:30:00.123456789+05:30", datetime(2025, 1, 15, 5, 0, 0, 123456,
                                                           tzinfo=timezone.utc)),
        ("2025-01-15T10:30:00Z", datetime(2025, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2025-01-15 10:30:00 +0000 UTC", datetime(2025, 1, 15, 10, 30, tzinfo=timezone.utc)),
        ("2025-01-15 10:30:00", datetime(2025, 1, 15, 10, 30, tzinfo=timezone.utc)),
        (1736937000, datetime(2025, 1, 15, 10, 30, tzinfo=timezone.utc)),
    ],
)
def test_timestamps_parse_to_utc(text: object, expected: datetime) -> None:
    assert parse_timestamp(text) == (expected, True)


@pytest.mark.parametrize("text", ["yesterday", "2025-13-40 10:00:00", "2025-01-15 10:30:00+99:00"])
def test_unparsable_timestamps_are_null_and_counted(text: str) -> None:
    assert parse_timestamp(text) == (None, False)


def test_empty_timestamp_is_null_not_an_error() -> None:
    assert parse_timestamp("") == (None, True)
    assert parse_timestamp(None) == (None, True)


# --- processes ----------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rubix_integration", *args], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _processes_on(root: Path) -> list[str]:
    """Live processes whose command line names ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(root) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def _wait_mid_run(proc: subprocess.Popen[str], data: Path, extra: float = 0.0) -> bool:
    """Wait until the sync run by ``proc`` is reading databases (a row spool exists in its data
    folder), then ``extra`` seconds more; ``False`` when it ended first."""
    spools = data / "tmp"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            spooling = any(spools.rglob("rubix-rows-*"))
        except FileNotFoundError:  # the run removed its folder while it was being listed
            spooling = False
        if spooling:
            time.sleep(extra)
            return proc.poll() is None
        time.sleep(0.002)
    return False


def _state(url: str, data: Path) -> list[tuple[Any, ...]]:
    with Manager(store_url=url, data_dir=data) as m:
        return rows(m)


@pytest.mark.slow
def test_kill_9_at_any_moment_then_rerun_matches_uninterrupted_run(
    store_url: str, tmp_path: Path
) -> None:
    sample = make_sample(tmp_path / "root", nodes=12, tokens_per_node=400, broken=True)
    env = {"RUBIX_DATA_DIR": str(tmp_path / "d"), "RUBIX_STORE_URL": store_url,
           "RUBIX_SOURCE_IP": "10.0.0.1"}
    reference_url = store_url
    killed_midway = 0
    # killed while the first database is read, and later, when some are committed
    for extra, processes in ((0.0, "2"), (0.05, "1"), (0.15, "2")):
        proc = _cli("sync", str(sample.root), "--json", "--no-progress", "--processes",
                    processes, env=env)
        if _wait_mid_run(proc, tmp_path / "d", extra):
            proc.send_signal(signal.SIGKILL)
            killed_midway += 1
        proc.communicate(timeout=60)
    # no worker outlives its killed coordinator
    deadline = time.monotonic() + 10
    while _processes_on(sample.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_on(sample.root) == []
    leftovers = list((tmp_path / "d" / "tmp").iterdir())
    final = _cli("sync", str(sample.root), "--json", "--no-progress", env=env)
    _out, err = final.communicate(timeout=120)
    assert final.returncode == 1, err  # two broken databases
    # the killed runs' spools and snapshots were removed by the next run
    assert killed_midway == 0 or leftovers
    assert list((tmp_path / "d" / "tmp").iterdir()) == []
    resumed = _state(reference_url, tmp_path / "d")
    # an uninterrupted run into a fresh SQLite store gives the same rows
    clean_url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Manager(store_url=clean_url, data_dir=tmp_path / "d2", source_ip="10.0.0.1") as m:
        m.sync_tokens([sample.root])
    assert resumed == _state(clean_url, tmp_path / "d2")
    assert len(resumed) == sample.tokens
    assert killed_midway >= 1


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", nodes=12, tokens_per_node=400, broken=False)
    env = {"RUBIX_DATA_DIR": str(tmp_path / "d")}
    proc = _cli("sync", str(sample.root), "--json", "--no-progress", env=env)
    if _wait_mid_run(proc, tmp_path / "d"):
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the sync finished before the signal arrived")
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert "Traceback" not in err
    assert list((tmp_path / "d" / "tmp").iterdir()) == []  # an interrupted run cleans up too
    rerun = _cli("sync", str(sample.root), "--json", "--no-progress", env=env)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    done = json.loads(out)
    assert done["databases_processed"] + done["databases_skipped"] == 12


@pytest.mark.slow
def test_two_processes_into_one_store_never_duplicate(store_url: str, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", nodes=8, tokens_per_node=200, broken=False)
    env = {"RUBIX_STORE_URL": store_url, "RUBIX_SOURCE_IP": "10.0.0.2"}
    procs = [_cli("sync", str(sample.root), "--json", "--no-progress", "--full",
                  env={**env, "RUBIX_DATA_DIR": str(tmp_path / f"d{i}")}) for i in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    stored = _state(store_url, tmp_path / "d0")
    assert len(stored) == sample.tokens
    keys = [(r[0], r[1], r[2]) for r in stored]
    assert len(set(keys)) == len(keys)


def test_cli_sync_json_and_exit_status(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", nodes=1, tokens_per_node=2)
    env = {"RUBIX_DATA_DIR": str(tmp_path / "d")}
    proc = _cli("sync", str(sample.root), "--json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1  # the broken databases
    data = json.loads(out)
    assert data["databases_failed"] == 2 and data["ok"] is False
    assert (tmp_path / "d" / "sync.log").read_text().count("database failed") == 2
    ok_root = tmp_path / "ok"
    make_sample(ok_root, nodes=1, tokens_per_node=2, broken=False)
    proc = _cli("sync", str(ok_root), "--json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


# --- what a first run shows -------------------------------------------------------------------


def test_cli_sync_of_a_missing_root_says_so_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "path"
    proc = _cli("sync", str(missing), env={"RUBIX_DATA_DIR": str(tmp_path / "d")})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(missing) in lines[0] and "no such folder" in lines[0]
    assert "UNREADABLE" not in out and "Traceback" not in err


def test_a_missing_root_among_others_is_reported_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_sample(root, nodes=1, tokens_per_node=1, broken=False)
    with Manager(data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root, tmp_path / "missing"])
    assert summary.databases_processed == 1
    assert summary.discovery_problems == [f"{tmp_path / 'missing'}: no such folder"]
    assert str(summary).count("UNREADABLE") == 1


@pytest.mark.parametrize(
    ("ok", "failed", "shown_ok", "shown_failed", "json_rate"),
    [
        (31812, 8, "(99.9%)", "(0.1%)", 99.97),
        (999_999, 1, "(99.9%)", "(0.1%)", 99.99),
        (10, 0, "(100.0%)", "(0.0%)", 100.0),
        (0, 5, "(0.0%)", "(100.0%)", 0.0),
    ],
)
def test_summary_shows_100_percent_only_without_failures(
    ok: int, failed: int, shown_ok: str, shown_failed: str, json_rate: float
) -> None:
    from rubix_integration.tokens.sync import SyncSummary

    summary = SyncSummary(ipfs_success=ok, ipfs_failed=failed)
    lines = str(summary).splitlines()
    assert next(line for line in lines if "IPFS success" in line).endswith(shown_ok)
    assert next(line for line in lines if "IPFS failed" in line).endswith(shown_failed)
    assert summary.as_dict()["ipfs_success_rate"] == json_rate


def _tokens_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("TokensTable", "FTTokenTable"))


@pytest.mark.parametrize("count", [0, 2, 5, 25])
def test_sample_nodes_hold_exactly_the_tokens_asked_for(count: int, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    sample = make_sample(tmp_path / "root", nodes=2, node_tokens=count,
                         progress=lambda done, total: calls.append((done, total)))
    assert [_tokens_in(n / "Rubix" / "rubix.db") for n in sample.nodes[:2]] == [count, count]
    assert calls[0] == (1, 8) and calls[-1] == (8, 8)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_cli_demo_counts_tokens_per_node_and_says_which_failures_are_deliberate(
    tmp_path: Path,
) -> None:
    proc = _cli("demo", str(tmp_path / "sample"), "--nodes", "2", "--tokens", "7",
                env={"RUBIX_DATA_DIR": str(tmp_path / "d")})
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert _tokens_in(tmp_path / "sample" / "node001" / "Rubix" / "rubix.db") == 7
    assert "FAILED" in out
    note = next(line for line in out.splitlines() if "broken on purpose" in line)
    assert note.startswith("4 sample nodes are broken on purpose to show failure handling: ")
    for name in ("node900-damaged", "node902-no-ipfs", "node904-garbage", "node905-no-tokens"):
        assert name in note


def test_library_sync_writes_sync_log(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", nodes=1, tokens_per_node=2)
    log_file = tmp_path / "d" / "sync.log"
    with Manager(data_dir=tmp_path / "d") as manager:
        manager.sync_tokens([sample.root])
        assert log_file.read_text().count("database failed") == 2
        manager.sync_tokens([sample.root])
    # the handler was attached for each run only: the second run's lines are written once
    assert log_file.read_text().count("database failed") == 4
    import logging

    from rubix_integration.tokens.sync import _SyncLogHandler

    handlers = logging.getLogger("rubix_integration").handlers
    assert not any(isinstance(h, _SyncLogHandler) for h in handlers)


def test_cli_log_file_replaces_sync_log(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "root", nodes=1, tokens_per_node=2)
    elsewhere = tmp_path / "logs" / "mine.log"
    proc = _cli("sync", str(sample.root), "--json", "--log-file", str(elsewhere),
                env={"RUBIX_DATA_DIR": str(tmp_path / "d")})
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert elsewhere.read_text().count("database failed") == 2
    assert "sync finished" in elsewhere.read_text()
    assert not (tmp_path / "d" / "sync.log").exists()


def test_cli_sync_help_names_the_time_limit() -> None:
    proc = _cli("sync", "--help", env={})
    out, _err = proc.communicate(timeout=60)
    assert "--db-timeout" in out and "RUBIX_SYNC_DB_TIMEOUT" in out and "600" in out


# --- row spools: the store layer's bulk load ------------------------------------------------------


def _spool_rows(path: str, kind: str, db_path: str, token_ids: list[str]) -> None:
    from rubix_integration.stores.spools import spool_class
    from rubix_integration.tokens.spool import COLUMNS, utc_text

    cls = spool_class(kind)
    now = datetime(2025, 1, 15, 5, 0, tzinfo=timezone.utc)
    synced: Any = utc_text(now) if cls.text_dates else now
    values = {"node_name": "n1", "token_kind": "token", "ipfs_fetched": False, "db_path": db_path,
              "synced_at": synced}
    spool = cls(path, COLUMNS)
    try:
        spool.write([tuple({**values, "token_id": t}.get(c) for c in COLUMNS)
                     for t in token_ids])
    finally:
        spool.close()


def _token_ids(manager: Manager, db_path: str) -> list[str]:
    t = STAGING_TABLE
    with manager.store.connect() as conn:
        rows = conn.execute(sa.select(t.c.token_id).where(t.c.db_path == db_path)
                            .order_by(t.c.token_id)).all()
    return [str(r[0]) for r in rows]


def test_a_spool_replaces_the_rows_of_one_key_in_one_transaction(manager: Manager,
                                                                  tmp_path: Path) -> None:
    from rubix_integration.stores.spools import load_spool, spool_kind
    from rubix_integration.tokens.spool import COLUMNS

    store = manager.store
    kind = spool_kind(store)
    # each store takes the spool it loads fastest: SQLite copies a SQLite file in C
    assert kind == {"sqlite": "sqlite", "postgresql": "pickle"}[store.name]
    for db_path, ids in (("a.db", ["a1", "a2"]), ("b.db", ["b1"])):
        path = str(tmp_path / f"{db_path}.spool")
        _spool_rows(path, kind, db_path, ids)
        with load_spool(store, STAGING_TABLE, path, COLUMNS, key=("db_path", db_path)):
            pass
    again = str(tmp_path / "again.spool")
    _spool_rows(again, kind, "a.db", ["a3"])
    with load_spool(store, STAGING_TABLE, again, COLUMNS, key=("db_path", "a.db")) as conn:
        # the caller's writes share the transaction
        conn.execute(sa.delete(STAGING_TABLE).where(STAGING_TABLE.c.db_path == "b.db"))
    assert _token_ids(manager, "a.db") == ["a3"]
    assert _token_ids(manager, "b.db") == []

    failing = str(tmp_path / "failing.spool")
    _spool_rows(failing, kind, "a.db", ["a4", "a5"])
    with pytest.raises(RuntimeError), load_spool(store, STAGING_TABLE, failing, COLUMNS,
                                                 key=("db_path", "a.db")):
        raise RuntimeError("the caller failed before the commit")
    assert _token_ids(manager, "a.db") == ["a3"]  # nothing of it was committed


_READ_BEFORE_THE_STORE = """
import json, sys, time
from pathlib import Path

import rubix_integration.tokens.pool as pool

root, url, data, marks = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
real_prepare = pool.prepare


def watched(*args, **kwargs):
    task = args[1]
    before = "sqlalchemy" in sys.modules
    out = real_prepare(*args, **kwargs)
    imported = "sqlalchemy" in sys.modules and not before
    (marks / f"read-{task.index}").write_text(json.dumps(imported))
    return out


pool.prepare = watched  # inherited by the forked workers

from rubix_integration._manager import Manager

opening = Manager.store


def store_after_a_read(self):
    # the store opens only once a worker has read and spooled a database: a run that opened
    # its store before starting its workers would wait here in vain
    if self._store is None:
        deadline = time.monotonic() + 60
        while not any(marks.glob("read-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        (marks / "store").write_text(json.dumps(sorted(p.name for p in marks.glob("read-*"))))
    return opening.fget(self)


Manager.store = property(store_after_a_read)
with Manager(store_url=url, data_dir=data, source_ip="10.0.0.4") as manager:
    summary = manager.sync_tokens([root], full=True, processes=2)
print(json.dumps({"ok": summary.ok, "records": summary.records, "workers": summary.workers}))
"""


@pytest.mark.timeout(180)
@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="the workers are started before the store only where they fork")
def test_a_full_run_reads_before_its_store_is_open_and_workers_import_no_sqlalchemy(
    store_url: str, tmp_path: Path
) -> None:
    sample = make_sample(tmp_path / "root", nodes=3, tokens_per_node=30, broken=False)
    marks = tmp_path / "marks"
    marks.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _READ_BEFORE_THE_STORE, str(sample.root), store_url,
         str(tmp_path / "d"), str(marks)],
        capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"ok": True, "records": sample.tokens, "workers": summary["workers"]}
    assert summary["workers"].startswith("2 processes")
    # a database was read and spooled before the store was opened
    assert json.loads((marks / "store").read_text()) != []
    # no worker imported SQLAlchemy to read its databases
    read = sorted(marks.glob("read-*"))
    assert len(read) == 3
    assert [json.loads(p.read_text()) for p in read] == [False, False, False]
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        assert len(rows(manager)) == sample.tokens


def test_a_spool_of_either_kind_merges_into_any_store(manager: Manager, tmp_path: Path) -> None:
    """Workers write the spool kind the store's URL names before the store is open; a store
    taking the other kind gets the same rows (dates, flags and all), through a slower path."""
    from rubix_integration.stores.spools import spool_kind
    from rubix_integration.tokens.pool import Prepared, Task
    from rubix_integration.tokens.results import DatabaseResult
    from rubix_integration.tokens.writer import commit

    store = manager.store
    native = spool_kind(store)
    other = "pickle" if native == "sqlite" else "sqlite"
    for kind in (native, other):
        db_path = f"{kind}.db"
        path = str(tmp_path / f"{kind}.spool{'.sqlite' if kind == 'sqlite' else '.pickle'}")
        _spool_rows(path, kind, db_path, ["t1", "t2"])
        task = Task(0, db_path, "n1", None, None, "fp", None, "10.0.0.5")
        result = commit(store, task, Prepared(DatabaseResult(db_path, "n1", "processed"), path))
        assert result.status == "processed", result.error
        assert not os.path.exists(path)
    t = TOKEN_TABLE
    with store.connect() as conn:
        found = conn.execute(sa.select(t.c.db_path, t.c.token_id, t.c.synced_at,
                                       t.c.ipfs_fetched, t.c.node_name)
                             .order_by(t.c.db_path, t.c.token_id)).all()
    by_kind = {kind: [(r[1], _utc(r[2]), r[3], r[4]) for r in found if r[0] == f"{kind}.db"]
               for kind in (native, other)}
    when = datetime(2025, 1, 15, 5, 0)
    assert by_kind[native] == [("t1", when, False, "n1"), ("t2", when, False, "n1")]
    assert by_kind[other] == by_kind[native]
    with store.connect() as conn:  # nothing is left in the staging table
        assert conn.execute(sa.select(sa.func.count()).select_from(STAGING_TABLE)).scalar() == 0


def test_a_database_holding_a_token_twice_is_refused_from_either_spool(
    manager: Manager, tmp_path: Path
) -> None:
    from rubix_integration.stores.spools import spool_kind
    from rubix_integration.tokens.pool import Prepared, Task
    from rubix_integration.tokens.results import DatabaseResult
    from rubix_integration.tokens.writer import commit

    store = manager.store
    for kind in {spool_kind(store), "pickle", "sqlite"}:
        db_path = f"twice-{kind}.db"
        path = str(tmp_path / f"{kind}{'.sqlite' if kind == 'sqlite' else '.pickle'}")
        _spool_rows(path, kind, db_path, ["t1", "t2", "t1"])
        task = Task(0, db_path, "n1", None, None, "fp", None, "10.0.0.5")
        result = commit(store, task, Prepared(DatabaseResult(db_path, "n1", "processed"), path))
        assert (result.status, result.error_kind) == ("failed", "rejected_by_store")
        assert result.error is not None and "refused" in result.error
        t = TOKEN_TABLE
        with store.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(t.c.db_path == db_path)).scalar() == 0
