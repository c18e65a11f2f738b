"""Hostile node folders: each may fail its own database, never the run or the other databases."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration import Manager
from rubix_integration.tokens.demo import make_node
from rubix_integration.tokens.models import PROCESSED_TABLE, TOKEN_TABLE

# a view that never ends: SQLite counts and reads it forever
ENDLESS_VIEW = ("CREATE VIEW TokensTable AS WITH RECURSIVE n(x) AS "
                "(SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT 'Qm' || x AS token_id FROM n")


def _healthy(root: Path, rng: random.Random) -> Path:
    """A good node sorted after the hostile ones: it must be synced whatever they do."""
    node = root / "zz-healthy"
    make_node(node, [b"TRI 1 healthy", b"TRI 2 healthy"], rng=rng)
    return node / "Rubix" / "rubix.db"


def _hostile(root: Path, rng: random.Random, name: str = "a-hostile") -> Path:
    node = root / name
    make_node(node, [b"TRI 1 hostile"], rng=rng)
    return node / "Rubix" / "rubix.db"


def _processed(manager: Manager) -> dict[str, tuple[str, str | None]]:
    t = PROCESSED_TABLE
    with manager.store.connect() as conn:
        found = conn.execute(sa.select(t.c.db_path, t.c.status, t.c.error)).all()
    return {str(r[0]): (str(r[1]), r[2]) for r in found}


def _token_rows(manager: Manager, db: Path) -> list[Any]:
    t = TOKEN_TABLE
    with manager.store.connect() as conn:
        return list(conn.execute(sa.select(t).where(t.c.db_path == str(db))
                                 .order_by(t.c.token_id)))


def _by_node(summary: Any) -> dict[str, Any]:
    return {r.node_name: r for r in summary.databases}


# --- values the store cannot hold ----------------------------------------------------------------

HUGE_ID = "Qm" + "x" * 100_000

# (column, value written into the node's database, what the store holds for it)
HOSTILE_VALUES = {
    "nul_in_text": ("did", "did:\x00evil", "did:\ufffdevil"),
    "nul_in_status": ("token_status", "act\x00ive", "act\ufffdive"),
    "int_beyond_32_bits": ("sync_status", 2**40, None),
    "int_beyond_64_bits": ("sync_status", "9" * 30, None),
    "text_that_parses_to_infinity": ("sync_status", "1e999", None),
    "infinite_token_value": ("token_value", "1e999", None),
    "huge_token_id": ("token_id", HUGE_ID, None),
    "huge_did": ("did", "did:" + "d" * 100_000, None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_VALUES))
def test_a_hostile_value_is_normalised_and_the_run_goes_on(
    case: str, store_url: str, tmp_path: Path
) -> None:
    column, written, stored = HOSTILE_VALUES[case]
    rng = random.Random(1)
    root = tmp_path / "root"
    db = _hostile(root, rng)
    with sqlite3.connect(db) as conn:
        conn.execute(f"INSERT INTO TokensTable (token_id, did, {column}) VALUES (?, ?, ?)"
                     if column not in ("token_id", "did") else
                     f"INSERT INTO TokensTable ({column}) VALUES (?)",
                     ("QmHostileRow", "did:x", written) if column not in ("token_id", "did")
                     else (written,))
    good = _healthy(root, rng)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root])
        results = _by_node(summary)
        assert summary.databases_processed == 2, str(summary)
        assert summary.databases_failed == 0
        assert results["a-hostile"].bad_value_count == 1
        assert summary.bad_values == 1
        assert "values the store cannot hold" in str(summary)
        rows = _token_rows(manager, db)
        assert len(rows) == 2  # the hostile row is kept, with the value normalised
        values = [getattr(r, column) for r in rows]
        assert stored in values, values
        assert written not in values
        assert len(_token_rows(manager, good)) == 2
        assert {s for s, _ in _processed(manager).values()} == {"processed"}


def test_rows_the_store_refuses_fail_only_their_database(store_url: str, tmp_path: Path) -> None:
    """Two rows with one token id (a table without a primary key) break the store's unique
    key: that database fails as ``rejected_by_store`` and keeps its earlier rows; the others
    are synced, and the next run behaves the same."""
    rng = random.Random(2)
    root = tmp_path / "root"
    db = _hostile(root, rng)
    good = _healthy(root, rng)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        assert manager.sync_tokens([root]).ok
        earlier = _token_rows(manager, db)
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE TokensTable RENAME TO old")
            conn.execute("CREATE TABLE TokensTable (token_id TEXT, did TEXT)")
            conn.execute("INSERT INTO TokensTable SELECT token_id, did FROM old")
            conn.execute("INSERT INTO TokensTable SELECT token_id, did FROM old")
            conn.execute("DROP TABLE old")
        os.utime(good, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        for _ in range(2):
            summary = manager.sync_tokens([root])
            results = _by_node(summary)
            assert results["a-hostile"].status == "failed"
            assert results["a-hostile"].error_kind == "rejected_by_store"
            assert results["zz-healthy"].status in ("processed", "skipped")
            assert summary.databases_failed == 1
            status, error = _processed(manager)[str(db)]
            assert status == "failed" and error and "refused" in error
            assert _processed(manager)[str(good)][0] == "processed"
            assert [tuple(r) for r in _token_rows(manager, db)] == \
                [tuple(r) for r in earlier]
        assert len(_token_rows(manager, good)) == 2


# --- files that are not what they claim ---------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    def limits() -> None:
        # a regression must not fill the disk: the run may write at most 256 MB to one file
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))

    return subprocess.Popen(
        [sys.executable, "-m", "rubix_integration", *args],
        env={**os.environ, "RUBIX_LOAD_PLUGINS": "", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limits)


def _sync_cli(root: Path, data: Path, *extra: str, timeout: float = 60) -> tuple[int, Any, str]:
    proc = _cli("sync", str(root), "--json", "--no-progress", *extra,
                env={"RUBIX_DATA_DIR": str(data)})
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, json.loads(out) if out.strip() else None, err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("suffix", ["-journal", "-wal"])
def test_a_side_file_linked_to_a_device_is_refused(suffix: str, tmp_path: Path) -> None:
    rng = random.Random(3)
    root = tmp_path / "root"
    db = _hostile(root, rng)
    Path(f"{db}{suffix}").symlink_to("/dev/zero")
    _healthy(root, rng)
    code, summary, err = _sync_cli(root, tmp_path / "d")
    assert code == 1, err
    assert summary is not None, err
    results = {r["node_name"]: r for r in summary["databases"]}
    assert results["a-hostile"]["status"] == "failed"
    assert results["a-hostile"]["error_kind"] == "unsafe_file"
    assert "symbolic link" in results["a-hostile"]["error"]
    assert results["zz-healthy"]["status"] == "processed"
    assert "Traceback" not in err


@pytest.mark.timeout(120)
def test_a_side_file_linked_outside_the_node_is_refused(store_url: str, tmp_path: Path) -> None:
    rng = random.Random(4)
    root = tmp_path / "root"
    db = _hostile(root, rng)
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"\0" * 4096)
    Path(f"{db}-wal").symlink_to(outside)
    _healthy(root, rng)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root])
    results = _by_node(summary)
    assert results["a-hostile"].error_kind == "unsafe_file"
    assert results["zz-healthy"].status == "processed"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "folder", "dangling"])
def test_a_database_that_is_not_a_regular_file_fails_alone(target: str, tmp_path: Path) -> None:
    rng = random.Random(5)
    root = tmp_path / "root"
    rubix = root / "a-hostile" / "Rubix"
    rubix.mkdir(parents=True)
    db = rubix / "rubix.db"
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        db.symlink_to(tmp_path / "fifo")
    elif target == "folder":
        db.mkdir()
    elif target == "dangling":
        db.symlink_to(tmp_path / "gone")
    else:
        db.symlink_to(target)
    _healthy(root, rng)
    code, summary, err = _sync_cli(root, tmp_path / "d")
    assert code == 1, err
    assert summary is not None, err
    results = {r["node_name"]: r for r in summary["databases"]}
    assert summary["databases_found"] == 2
    assert results["a-hostile"]["status"] == "failed"
    expected = "cannot_open" if target == "dangling" else "not_a_file"
    assert results["a-hostile"]["error_kind"] == expected
    assert results["zz-healthy"]["status"] == "processed"


# --- databases that never end ---------------------------------------------------------------------


def _endless(root: Path) -> Path:
    rubix = root / "a-endless" / "Rubix"
    rubix.mkdir(parents=True)
    db = rubix / "rubix.db"
    with sqlite3.connect(db) as conn:
        conn.execute(ENDLESS_VIEW)
    return db


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
def test_an_endless_view_fails_its_database_at_the_time_limit(
    processes: int, store_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    _endless(root)
    _healthy(root, random.Random(6))
    began = time.monotonic()
    with Manager(store_url=store_url, data_dir=tmp_path / "d", sync_db_timeout=1.5) as manager:
        summary = manager.sync_tokens([root], processes=processes)
        processed = _processed(manager)
    took = time.monotonic() - began
    results = _by_node(summary)
    assert results["a-endless"].status == "failed"
    assert results["a-endless"].error_kind == "timeout"
    assert "1.5" in (results["a-endless"].error or "")
    assert results["zz-healthy"].status == "processed"
    assert summary.records == 2
    assert {s for s, _ in processed.values()} == {"processed", "failed"}
    assert took < 60


def test_the_time_limit_is_a_setting(tmp_path: Path) -> None:
    with Manager(data_dir=tmp_path / "d") as manager:
        assert manager.settings.sync_db_timeout == 600.0
    with Manager(data_dir=tmp_path / "d", env={"RUBIX_SYNC_DB_TIMEOUT": "2.5"}) as manager:
        assert manager.settings.sync_db_timeout == 2.5
    from rubix_integration import ConfigError

    with pytest.raises(ConfigError, match="RUBIX_SYNC_DB_TIMEOUT"):
        Manager(data_dir=tmp_path / "d", env={"RUBIX_SYNC_DB_TIMEOUT": "-1"}).settings  # noqa: B018


def _wait_for_spool(proc: subprocess.Popen[str], data: Path) -> bool:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if any((data / "tmp").rglob("rubix-rows-*")):
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_during_an_endless_view_ends_the_run(processes: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _endless(root)
    _healthy(root, random.Random(7))
    proc = _cli("sync", str(root), "--json", "--no-progress", "--processes", processes,
                env={"RUBIX_DATA_DIR": str(tmp_path / "d")})
    try:
        assert _wait_for_spool(proc, tmp_path / "d")
        time.sleep(0.5)  # well inside the endless count
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert took < 10
    assert json.loads(out)["interrupted"] is True
    assert "Traceback" not in err


# --- names and timestamps -----------------------------------------------------------------------


def test_a_node_folder_whose_name_is_not_utf8_is_reported_not_fatal(
    store_url: str, tmp_path: Path
) -> None:
    """No store can record a path holding bytes that are not UTF-8: the folder is reported as
    unreadable and the other nodes are synced."""
    rng = random.Random(8)
    root = tmp_path / "root"
    root.mkdir()
    odd = os.path.join(os.fsencode(root), b"node-\xff\xfe")
    make_node(Path(os.fsdecode(odd)), [b"TRI 1 odd"], rng=rng)
    _healthy(root, rng)
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root])
        processed = _processed(manager)
    assert summary.databases_processed == 1
    assert [r.node_name for r in summary.databases] == ["zz-healthy"]
    assert len(summary.discovery_problems) == 1
    assert "not valid UTF-8" in summary.discovery_problems[0]
    str(summary).encode("utf-8")  # printable
    assert len(processed) == 1


@pytest.mark.parametrize("stamp", ["0001-01-01 00:00:00+05:30", "9999-12-31 23:59:59-05:00",
                                   "0001-01-01T00:00:00.123456789+14:00"])
def test_a_timestamp_beyond_the_calendar_is_null_and_counted(
    stamp: str, store_url: str, tmp_path: Path
) -> None:
    rng = random.Random(9)
    root = tmp_path / "root"
    db = _hostile(root, rng)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE TokensTable SET created_at = ?", (stamp,))
    with Manager(store_url=store_url, data_dir=tmp_path / "d") as manager:
        summary = manager.sync_tokens([root])
        rows = _token_rows(manager, db)
    assert summary.ok, str(summary)
    assert summary.bad_timestamps == 1
    assert [r.created_at for r in rows] == [None]
