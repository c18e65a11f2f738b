from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
