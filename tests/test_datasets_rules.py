"""The rules behind the datasets layer: local first and pushed later, the return convention, the
tag vocabulary and ``enable_p2p``, the environment alias, and results read as mappings."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration import (
    AddResult,
    ConfigError,
    DatasetsManager,
    FilesystemHandler,
    LoggedCID,
    Manager,
    WorkflowCoordinator,
    get_datasets_status,
)
from rubix_integration.workflow.matching import parse_tags
from tests.test_datasets_api import daemon_block

pytestmark = pytest.mark.timeout(120)

DEAD_API = "/ip4/127.0.0.1/tcp/9"  # discard port: nothing answers RPC there


@pytest.fixture(autouse=True)
def _no_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IPFS_DATASETS_ENABLED", raising=False)
    monkeypatch.setenv("RUBIX_IPFS_PATH", str(tmp_path / "no-repo"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {**os.environ, **env}
    script = Path(sys.executable).parent / "rubix-integration"
    return subprocess.run([str(script), *args], env=full,
                          capture_output=True, text=True, timeout=60, check=False)


# --- local first, pushed later --------------------------------------------------------------------


def test_daemon_down_adds_locally_and_the_next_use_pushes(jsipfs_daemon: Any,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "model.bin"
    data.write_bytes(b"weights" * 50_000)
    with FilesystemHandler(DEAD_API) as fs:
        cid = fs.add_file(data)
        assert cid.published is False and fs.pending() == [cid]
        assert fs.cat(cid) == data.read_bytes()  # served from the local store meanwhile
    assert daemon_block(jsipfs_daemon.url, cid) is None
    with FilesystemHandler(jsipfs_daemon.api_multiaddr) as fs:
        assert fs.cat(cid) == data.read_bytes()  # any use pushes what waits first
        assert fs.pending() == []
    assert daemon_block(jsipfs_daemon.url, cid) is not None


def test_daemon_killed_after_start_keeps_adding_locally(jsipfs_fresh_daemon: Any,
                                                        tmp_path: Path) -> None:
    (tmp_path / "a").write_text("first")
    (tmp_path / "b").write_text("second")
    with FilesystemHandler(jsipfs_fresh_daemon.api_multiaddr) as fs:
        first = fs.add_file(tmp_path / "a")
        assert first.published
        jsipfs_fresh_daemon.kill()
        second = fs.add_file(tmp_path / "b")
        assert second.published is False and fs.pending() == [second]
        report = fs.push()
        assert report.pushed == () and report.remaining == (second,) and report.error


def test_cli_push_sends_queued_content_and_records(jsipfs_daemon: Any, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("queued")
    with DatasetsManager({"ipfs_api": DEAD_API}) as manager:
        with FilesystemHandler(manager=manager) as fs:
            cid = fs.add_file(tmp_path / "f")
        logged = manager.log_event("offline", {"n": 1})
        assert not logged and logged.published is False and isinstance(logged, LoggedCID)
        assert manager.get_status().pending_push == 1
    env = {"RUBIX_IPFS_API": jsipfs_daemon.api_multiaddr}
    out = _cli("ipfs", "push", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert '"roots": [\n    "' + cid in out.stdout and '"records": 1' in out.stdout
    assert daemon_block(jsipfs_daemon.url, cid) is not None
    assert daemon_block(jsipfs_daemon.url, logged) is not None
    again = _cli("ipfs", "push", env=env)
    assert again.returncode == 0 and "pushed 0 root(s)" in again.stdout


def test_cli_push_without_node_is_one_line(tmp_path: Path) -> None:
    out = _cli("ipfs", "push", env={"RUBIX_INTEGRATION_ENABLED": "0"})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no IPFS node to push to" in out.stderr


def test_cli_cat_with_http_and_no_daemon_is_one_line(tmp_path: Path) -> None:
    out = _cli("ipfs", "cat", "--ipfs", "http",
               "QmYEJAPHxLsFGurqJBUA86PCsWnbmcTRmx5WSdySLa7KPz", env={})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("Error: IPFSUnavailableError: IPFS backend 'http' "
                                 "(--ipfs http) cannot serve: ")


# --- return convention and switches ---------------------------------------------------------------


def test_switches_off_record_nothing_and_return_none(tmp_path: Path) -> None:
    with DatasetsManager({"enable_audit": False, "enable_provenance": False,
                          "store_url": f"sqlite:///{tmp_path / 's.db'}"}) as manager:
        assert manager.log_event("x", {}) is None
        assert manager.track_provenance("y", {}) is None
        assert manager.get_status().records == 0
        assert manager.get_status()["audit"] is False


def test_logged_cid_is_the_cid_text_and_pickles(tmp_path: Path) -> None:
    with DatasetsManager({"enabled": "0", "data_dir": str(tmp_path)}) as manager:
        cid = manager.log_event("e", {"a": 1})
        assert cid is not None
        assert cid == manager.provenance.query_logs({"a": 1})[0].cid and len(cid) > 40
        assert bool(cid) is False and cid.published is False
        back = pickle.loads(pickle.dumps(cid))
        assert back == cid and back.published is False and type(back) is LoggedCID


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        DatasetsManager({"colour": "red"})
    with pytest.raises(ConfigError, match="enable_p2p"):
        DatasetsManager({"enable_p2p": "yes"})
    with pytest.raises(ConfigError, match="cache_dir and data_dir"):
        DatasetsManager({"cache_dir": str(tmp_path), "data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="mapping"):
        WorkflowCoordinator(["enable_p2p"])  # type: ignore[arg-type]


# --- the environment alias ------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "enabled", "by"), [
    ({"IPFS_DATASETS_ENABLED": "0"}, "0", "IPFS_DATASETS_ENABLED"),
    ({"IPFS_DATASETS_ENABLED": "off"}, "0", "IPFS_DATASETS_ENABLED"),
    ({"IPFS_DATASETS_ENABLED": "1", "RUBIX_INTEGRATION_ENABLED": "0"}, "0",
     "RUBIX_INTEGRATION_ENABLED"),
    ({"IPFS_DATASETS_ENABLED": "0", "RUBIX_INTEGRATION_ENABLED": "auto"}, "auto",
     "RUBIX_INTEGRATION_ENABLED"),
    ({}, "auto", "default"),
])
def test_alias_of_the_enabled_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       env: dict[str, str], enabled: str, by: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with Manager(store_url=f"sqlite:///{tmp_path / 's.db'}") as manager:
        status = manager.status()
        assert status["enabled"] == status.enabled == enabled
        assert status.enabled_by == by == status["enabled_by"]
        assert f"integration enabled: {enabled} ({by})" in str(status)
    found = get_datasets_status()
    assert found.enabled == enabled and found["enabled_by"] == by


def test_bad_alias_value_names_the_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPFS_DATASETS_ENABLED", "maybe")
    with pytest.raises(ConfigError, match=r"^IPFS_DATASETS_ENABLED: 'maybe'"):
        get_datasets_status()


# --- results as mappings --------------------------------------------------------------------------


def test_add_result_is_its_cid_and_entries_read_as_mappings(tmp_path: Path) -> None:
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "f.txt").write_text("x")
    with Manager(enabled="0", data_dir=str(tmp_path / "data")) as manager:
        result = manager.add_directory(tmp_path / "d")
        assert isinstance(result, AddResult) and isinstance(result, str)
        assert result == result.cid and type(result.cid) is str
        entries = manager.list_directory(result)
        assert [dict(e) for e in entries] == [
            {"name": "f.txt", "cid": entries[0].cid, "size": 1, "type": "file"},
            {"name": "s", "cid": entries[1].cid, "size": 0, "type": "directory"}]
        assert entries[0]["name"] == entries[0].name and "cid" in entries[0]
        assert entries[0].get("missing", "-") == "-"
        with pytest.raises(KeyError):
            entries[0]["missing"]
        root = next(e for e in result.entries if e.path == "")
        assert root["is_dir"] is True and root["cid"] == result
        assert pickle.loads(pickle.dumps(result)).entries == result.entries
        with pytest.raises(AttributeError):
            result.entries = ()  # type: ignore[misc]
        assert manager.status()["ipfs"][0]["name"] == manager.status().ipfs[0].name


# --- tags and enable_p2p --------------------------------------------------------------------------


def test_tag_vocabulary() -> None:
    tags = parse_tags(["P2P_ELIGIBLE", "GPU_PREFERRED", "cuda_required", "HIGHMEM", "team:ml"])
    assert tags.required == ("CUDA", "HIGHMEM") and tags.preferred == ("GPU",)
    assert tags.eligible == ("P2P",)


def _coordinator(store_url: str, data_dir: Path, enable_p2p: bool | None) -> WorkflowCoordinator:
    return WorkflowCoordinator({"store_url": store_url, "data_dir": str(data_dir),
                                "enabled": "0"},
                               enable_p2p=enable_p2p, preferred_wait=3600)


def test_eligible_never_blocks_preferred_prefers_required_requires(store_url: str,
                                                                   tmp_path: Path) -> None:
    wf = _coordinator(store_url, tmp_path / "m", None)
    wf.submit_task("eligible", "inference", {}, priority=8, tags=["P2P_ELIGIBLE", "GPU_PREFERRED"])
    wf.submit_task("needs-cuda", "inference", {}, priority=9, requires=["cuda"])
    wf.submit_task("needs-tpu", "inference", {}, priority=9, tags=["TPU_REQUIRED"])
    # a worker without the preferred capability waits; P2P_ELIGIBLE never blocks anyone
    assert wf.get_next_task("cpu-only", ["CPU"]) is None
    first = wf.get_next_task("worker-001", ["GPU"])
    assert first is not None and first["task_id"] == "eligible"
    assert wf.get_next_task("worker-001", ["GPU"]) is None  # cuda and tpu are required
    got = wf.get_next_task("worker-002", ["GPU", "CUDA"])
    assert got is not None and got.task_id == "needs-cuda" and "CUDA_REQUIRED" in got.tags
    again = wf.submit_task("needs-cuda", "inference", {}, priority=9, requires=["cuda"])
    assert again.task_id == "needs-cuda"  # idempotent: requires= is stored as its tag
    wf.close()


def test_stored_tasks_keep_the_meaning_they_were_submitted_with(store_url: str,
                                                                tmp_path: Path) -> None:
    from rubix_integration.workflow.models import TASK_TABLE

    wf = _coordinator(store_url, tmp_path / "m", None)
    wf.submit_task("old", "job", None, tags=["P2P_ELIGIBLE"])
    wf.submit_task("plain", "job", None, tags=["GPU"])  # a bare name still requires it
    # a task stored before *_ELIGIBLE was understood required that name as a capability
    with wf.store.transaction() as conn:
        conn.execute(sa.update(TASK_TABLE).where(TASK_TABLE.c.task_id == "old")
                     .values(required_caps=["P2P_ELIGIBLE"]))
    assert wf.get_next_task("w", ["CPU"]) is None
    old = wf.get_next_task("w", ["P2P_ELIGIBLE"])
    assert old is not None and old.task_id == "old"
    plain = wf.get_next_task("w", ["GPU"])
    assert plain is not None and plain.task_id == "plain"
    wf.close()


def test_enable_p2p_offers_eligible_tasks_to_other_machines_only_when_on(
        store_url: str, tmp_path: Path) -> None:
    a = _coordinator(store_url, tmp_path / "a", True)
    b = _coordinator(store_url, tmp_path / "b", True)
    c = _coordinator(store_url, tmp_path / "c", False)
    assert len({a.machine, b.machine, c.machine}) == 3
    a.submit_task("shared", "job", None, priority=5, tags=["P2P_ELIGIBLE"])
    a.submit_task("a-only", "job", None, priority=1)
    c.submit_task("c-eligible", "job", None, priority=9, tags=["P2P_ELIGIBLE"])
    # c has enable_p2p off: it takes nothing from a, and keeps its own eligible task
    assert c.get_next_task("c1", []) is not None  # its own
    assert c.get_next_task("c1", []) is None
    # b (on) may run a's eligible task, not the one a keeps
    got = b.get_next_task("b1", [])
    assert got is not None and got.task_id == "shared"
    assert b.get_next_task("b1", []) is None
    mine = a.get_next_task("a1", [])
    assert mine is not None and mine.task_id == "a-only"
    # the same machine (same data dir) is the same placement
    a2 = _coordinator(store_url, tmp_path / "a", False)
    assert a2.machine == a.machine
    for wf in (a, b, c, a2):
        wf.close()


def test_coordinator_keeps_its_old_signatures(store_url: str, tmp_path: Path) -> None:
    with Manager(store_url=store_url, data_dir=str(tmp_path)) as manager:
        on_host = WorkflowCoordinator(manager)
        assert on_host.enable_p2p is None
        on_store = WorkflowCoordinator(manager.store, provenance=manager.provenance)
        task = on_store.submit_task("t", "job", {"x": 1}, tags=["P2P_ELIGIBLE"])
        assert task.tags == ("P2P_ELIGIBLE",)  # no placement unless asked
        claimed = on_host.get_next_task("w", [])
        assert claimed is not None and claimed["data"] == {"x": 1}
        with DatasetsManager({"enable_p2p": True}, manager=manager) as datasets:
            assert datasets.workflow.enable_p2p is True


def test_config_keyword_of_logger_and_coordinator(tmp_path: Path) -> None:
    from rubix_integration import ProvenanceLogger

    config = {"store_url": f"sqlite:///{tmp_path / 'k.db'}", "enabled": "0",
              "data_dir": str(tmp_path / "d")}
    with ProvenanceLogger(config=config) as logger:
        cid = logger.log_event("e", {"k": 1})
        assert logger.get(cid).published is False
    with ProvenanceLogger(config) as again:
        assert [r.cid for r in again.query_logs({"k": 1})] == [cid]
    coordinator = WorkflowCoordinator(config={**config, "enable_p2p": True})
    assert coordinator.enable_p2p is True
    coordinator.close()
    with pytest.raises(ValueError, match="not both"):
        ProvenanceLogger(Manager(), config=config)
