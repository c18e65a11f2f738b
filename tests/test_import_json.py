"""JSON files and live sources through the importer, on every store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rubix_integration import ImportSourceError, Manager
from tests.fixtures.import_data import run_cli as cli
from tests.fixtures.import_data import target_rows

GPU_CLASSES = [
    {"id": "5c1f0c3a-1", "name": "RTX 4090", "vram_gb": 24, "compute": 8.9,
     "tags": ["ada", "consumer"]},
    {"id": "5c1f0c3a-2", "name": "A100 80GB", "vram_gb": 80, "compute": 8.0, "tags": None},
    {"id": "5c1f0c3a-3", "name": "Zoë's \"L40S\"", "vram_gb": 48, "compute": 8.9,
     "tags": []},
]


@pytest.mark.parametrize("shape", ["list", "data", "strapi", "ndjson"])
def test_json_shapes_dry_run_then_import(tmp_path: Path, store_url: str, shape: str) -> None:
    path = tmp_path / "gpu_classes.json"
    if shape == "list":
        path.write_text(json.dumps(GPU_CLASSES))
    elif shape == "data":
        path.write_text(json.dumps({"data": GPU_CLASSES}))
    elif shape == "strapi":
        path.write_text(json.dumps({"data": [
            {"id": r["id"], "attributes": {k: v for k, v in r.items() if k != "id"}}
            for r in GPU_CLASSES], "meta": {"pagination": {"total": 3}}}))
    else:
        path.write_text("\n".join(json.dumps(r) for r in GPU_CLASSES) + "\n")
    plan = cli("import", "json", str(path), "--table", "gpu_classes", "--dry-run", "--json",
               "--store", store_url)
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert data["dry_run"] and data["tables"][0]["new"] == 3
    assert "CREATE TABLE gpu_classes" in data["tables"][0]["ddl"][0]
    with Manager(store_url=store_url) as m, m.store.connect() as conn:
        assert not conn.dialect.has_table(conn, "gpu_classes")
    done = cli("import", "json", str(path), "--table", "gpu_classes", "--store", store_url)
    assert done.returncode == 0, done.stderr
    assert "gpu_classes: imported 3 rows (3 new" in done.stdout
    rows = target_rows(store_url, "gpu_classes")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (g["id"], g["name"], g["vram_gb"], g["compute"]) for g in GPU_CLASSES]
    tags = [r[4] if not isinstance(r[4], str) else json.loads(r[4]) for r in rows]
    assert tags == [["ada", "consumer"], None, []]
    # changed on disk: one row changes, the rest is left alone
    changed = [dict(g) for g in GPU_CLASSES]
    changed[1]["vram_gb"] = 40
    path.write_text(json.dumps(changed))
    with Manager(store_url=store_url) as m:
        report = m.import_json(path, table="gpu_classes")
    t = report.tables[0]
    assert (t.new, t.changed, t.unchanged) == (0, 1, 2)


def test_json_clear_key_and_malformed(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "city_snapshots.json"
    path.write_text(json.dumps([{"city": "Berlin", "country": "DE", "nodes": 4, "lat": 52.5},
                                {"city": "Lyon", "country": "FR", "nodes": 1, "lat": 45.76}]))
    with Manager(store_url=store_url) as m:
        m.import_json(path, table="city_snapshots", key=("city", "country"))
        path.write_text(json.dumps([{"city": "Oslo", "country": "NO", "nodes": 2, "lat": 59.9}]))
        report = m.import_json(path, table="city_snapshots", key=("city", "country"),
                               clear=True)
        assert report.ok and report.tables[0].cleared
        bad = tmp_path / "bad.json"
        bad.write_text('{"data": [1, 2')
        with pytest.raises(ImportSourceError, match="neither JSON nor NDJSON"):
            m.import_json(bad, table="x")
    assert target_rows(store_url, "city_snapshots") == [("Oslo", "NO", 2, 59.9)]


def test_placeholder_transactions(store_url: str) -> None:
    out = cli("import", "source", "placeholder-transactions", "-o", "seed=7",
              "-o", "end=2025-01-31", "--store", store_url, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["tables"][0]["table"] == "transactions" and data["tables"][0]["new"] == 103
    rows = target_rows(store_url, "transactions")
    assert len(rows) == 103
    assert len({r[2] for r in rows}) <= 10 and len({r[3] for r in rows}) <= 6
    assert all("2024-12-31" <= r[4] <= "2025-01-31" for r in rows)
    with Manager(store_url=store_url) as m:
        again = m.import_source("placeholder-transactions",
                                options={"seed": "7", "end": "2025-01-31"})
        assert again.tables[0].unchanged == 103 and again.tables[0].imported == 0
        other = m.import_source("placeholder-transactions",
                                options={"seed": "8", "end": "2025-01-31"}, dry_run=True)
        assert other.tables[0].new == 103
        with pytest.raises(ImportSourceError, match="seed='x' is not a whole number"):
            m.import_source("placeholder-transactions", options={"seed": "x"})


def test_readme_import_snippet_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.fixtures.import_data import make_plans_db

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("### Import, the second main job", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    make_plans_db(tmp_path / "plans.db", plans=30)
    (tmp_path / "gpu_classes.json").write_text(json.dumps({"data": GPU_CLASSES}))
    env = {**os.environ, "RUBIX_DATA_DIR": str(tmp_path / "data"), "RUBIX_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "3 new GPU classes" in out.stdout
    assert "'new': 103" in out.stdout
    with Manager(data_dir=tmp_path / "data") as m:
        assert m.import_sqlite(tmp_path / "plans.db").tables[1].status == "unchanged"
