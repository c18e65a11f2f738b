from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from rubix_integration import ConfigError, Manager
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


def _notifier() -> Any:
    if not IN_CI:
        pytest.importorskip("rubix_integration_notifier",
                            reason="pip install -e examples/rubix-integration-notifier-plugin")
    import rubix_integration_notifier

    return rubix_integration_notifier


def test_notifier_plugin_adds_a_role_and_a_settings_section(store_url: str,
                                                            tmp_path: Path) -> None:
    """The plugin, found by its entry point, declares the ``notifier`` role and its ``file``
    backend, reads ``[plugins.notifier]`` and sends through the backend when the store opens."""
    module = _notifier()
    log = tmp_path / "notes.log"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[plugins.notifier]\npath = "{log}"\nchannel = "file-channel"\n'
                   'token = "s3cret"\n')
    env = {"RUBIX_CONFIG_FILE": str(cfg), "RUBIX_NOTIFIER_CHANNEL": "alerts",
           "RUBIX_NOTIFIER_RETRIES": "5"}
    with Manager(env=env, load_plugins=("notifier",), store_url=store_url,
                 data_dir=tmp_path / "data", enabled="0") as manager:
        assert manager.backends("notifier") == {"file": module.FileNotifier}
        assert issubclass(manager.backend("notifier", "file"), module.Notifier)
        settings = manager.plugin_settings("notifier")
        assert (settings["channel"], settings["retries"], settings["path"]) == ("alerts", 5, log)
        assert settings.sources["channel"] == "environment"
        assert settings.sources["path"] == "config file"
        assert settings.sources["backend"] == "default" and settings["backend"] == "file"
        manager.store  # noqa: B018  (opening the store fires startup)
        manager.notify("database_processed", result={"node_name": "node001",
                                                      "status": "processed"})
        report = manager.status()
    assert log.read_text() == "[alerts] store opened\n[alerts] node001: processed\n"
    assert report.settings["plugins"]["notifier"]["token"] == "***"
    assert "s3cret" not in report.to_json()
    info = {p.name: p.as_dict() for p in report.plugins}["notifier"]
    assert info["roles"] == ["notifier"] and info["backends"] == {"notifier": ["file"]}
    assert info["source"] == "entry point"


def test_notifier_plugin_refuses_an_unknown_key(tmp_path: Path) -> None:
    _notifier()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[plugins.notifier]\nchanel = "typo"\n')
    manager = Manager(env={"RUBIX_CONFIG_FILE": str(cfg)}, load_plugins=("notifier",),
                      data_dir=tmp_path, enabled="0")
    with pytest.raises(ConfigError) as info:
        manager.plugin_settings("notifier")
    assert str(info.value) == ("[plugins.notifier] chanel: unknown key; known: backend, "
                               "channel, path, retries, token")


def test_notifier_settings_are_typed(tmp_path: Path) -> None:
    _notifier()
    manager = Manager(env={"RUBIX_NOTIFIER_RETRIES": "three"}, load_plugins=("notifier",),
                      data_dir=tmp_path, enabled="0")
    with pytest.raises(ConfigError, match="RUBIX_NOTIFIER_RETRIES: 'three' is not an integer"):
        manager.plugin_settings("notifier")
