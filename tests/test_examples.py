from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from rubix_integration.testing import IPFSBackendContract
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "rubix-integration-example-plugin"


def test_host_app_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "RUBIX_DATA_DIR": str(tmp_path), "RUBIX_INTEGRATION_ENABLED": "0",
           "RUBIX_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "host_app.py")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "IPFS via local, store sqlite" in out
    assert "added QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf: TRI 0 bafyb" in out
    assert "events seen by the host's plugin: 1" in out


def test_demo_command_is_the_main_job(tmp_path: Path) -> None:
    env = {**os.environ, "RUBIX_DATA_DIR": str(tmp_path / "data"), "RUBIX_LOAD_PLUGINS": ""}
    run = subprocess.run([sys.executable, "-m", "rubix_integration", "demo", "--json",
                          str(tmp_path / "sample")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    import json

    summary = json.loads(run.stdout)
    assert summary["databases_processed"] == 8 and summary["databases_failed"] == 2
    assert summary["errors_by_kind"] == {"corrupt": 1, "not_found": 2, "empty_token_id": 1,
                                         "invalid_cid": 1, "no_ipfs_path": 3}
    assert (tmp_path / "sample" / "node001" / "Rubix" / "rubix.db").is_file()


def test_example_plugin_runs_the_ipfs_contract_in_its_own_pytest(tmp_path: Path) -> None:
    """The plugin's own test run, as its author starts it: every contract test runs on
    ``cidfolder``, and only the directory test is skipped (the backend serves no directories)."""
    if not IN_CI:
        pytest.importorskip("rubix_integration_cidfolder",
                            reason="pip install -e examples/rubix-integration-example-plugin")
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         f"--basetemp={tmp_path / 'run'}"],
        cwd=PLUGIN, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcome: dict[str, bool] = {}
    for case in cases:
        name = case.get("name", "").split("[", 1)[0]
        skipped = case.find("skipped") is not None
        assert case.get("classname", "").endswith("TestCIDFolderContract"), case.get("classname")
        outcome[name] = outcome.get(name, True) and skipped
    contract = {n for n in dir(IPFSBackendContract) if n.startswith("test_")}
    assert set(outcome) == contract
    assert {n for n, skipped in outcome.items() if skipped} == {"test_directory_is_not_a_file"}
