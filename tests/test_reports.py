from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import Manager, RubixError
from rubix_integration.tokens.demo import make_sample
from rubix_integration.tokens.report import REPORTS, run_report


@pytest.fixture
def synced(store_url: str, tmp_path: Path) -> Any:
    sample = make_sample(tmp_path / "root", nodes=3, tokens_per_node=4)
    with Manager(store_url=store_url, data_dir=tmp_path / "d", source_ip="10.1.1.1") as m:
        m.sync_tokens([sample.root])
        yield m, sample


@pytest.mark.parametrize("engine", ["duckdb", "store"])
def test_every_report_answers_on_both_engines(synced: Any, engine: str) -> None:
    manager, sample = synced
    results = {name: run_report(manager.store, name, engine=engine) for name in REPORTS}
    assert all(r.engine.startswith(engine if engine == "duckdb" else manager.store.name)
               for r in results.values())
    nodes = {r["node_name"]: r for r in results["nodes"].as_dicts()}
    assert nodes["node001"]["tokens"] == 4 + 3 + 3  # its own, the shared ones, fungible tokens
    assert int(nodes["node900-damaged"]["ipfs_failed"]) == 5
    assert sum(int(r["tokens"]) for r in nodes.values()) == sample.tokens
    failures = {r["ipfs_error"]: r["tokens"] for r in results["failures"].as_dicts()}
    assert failures == {"no_ipfs_path": 3, "not_found": 2, "corrupt": 1, "empty_token_id": 1,
                        "invalid_cid": 1}
    shared = results["shared"].as_dicts()
    assert len(shared) == 3 and all(r["nodes"] == 3 for r in shared)
    assert results["content-diff"].rows == []
    rates = {r["node_name"]: float(r["success_pct"]) for r in results["success-rate"].as_dicts()}
    assert rates["node001"] == 100.0 and rates["node902-no-ipfs"] == 0.0
    history = {r["node_name"]: r["status"] for r in results["history"].as_dicts()}
    assert history["node904-garbage"] == "failed" and history["node001"] == "processed"


def test_content_differing_between_nodes_is_found(synced: Any) -> None:
    manager, _ = synced
    with manager.store.transaction() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text("UPDATE tokenrecords SET ipfs_data = 'altered' WHERE node_name = "
                             "'node002' AND content_name = 'RBT'"))
    rows = run_report(manager.store, "content-diff").as_dicts()
    assert len(rows) == 3 and all(r["variants"] == 2 for r in rows)


def test_unknown_report_is_refused(synced: Any) -> None:
    manager, _ = synced
    with pytest.raises(RubixError, match="unknown report"):
        run_report(manager.store, "nope")


def test_report_formats_on_the_command_line(synced: Any, tmp_path: Path) -> None:
    manager, _ = synced
    env = {**os.environ, "RUBIX_STORE_URL": manager.settings.store_url,
           "RUBIX_DATA_DIR": str(tmp_path / "d"), "RUBIX_LOAD_PLUGINS": ""}

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "rubix_integration", "report", *args],
                              env=env, capture_output=True, text=True, timeout=120,
                              check=True).stdout

    as_json = json.loads(run("failures", "--format", "json"))
    as_csv = list(csv.DictReader(io.StringIO(run("failures", "--format", "csv"))))
    assert [r["ipfs_error"] for r in as_json] == [r["ipfs_error"] for r in as_csv]
    assert [int(r["tokens"]) for r in as_csv] == [r["tokens"] for r in as_json]
    table = run("nodes")
    assert "node001" in table and "Tokens per node" in table
