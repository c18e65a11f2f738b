"""The documented usage of ipfs_accelerate_py's datasets integration API, run as written with
only the import path changed.

Every code block of the "Architecture", "Usage Patterns" and "Use Cases" sections of its README,
in two modes: IPFS on (against the js-ipfs daemon from ``external/``) and off
(``RUBIX_INTEGRATION_ENABLED=0``, and its alias ``IPFS_DATASETS_ENABLED=0``). Placeholders of
that README (``[0.1, 0.2, ...]``, ``"Qm..."`` where a real CID is needed) are given values.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 20.0


@dataclass(frozen=True)
class Mode:
    """How a test runs: ``ipfs`` (daemon URL set) or off (through which variable)."""

    name: str
    daemon_url: str | None = None

    @property
    def on(self) -> bool:
        return self.daemon_url is not None


def daemon_block(url: str, cid: str) -> bytes | None:
    """The daemon's copy of block ``cid`` (``None`` when it has none), offline-only lookup."""
    request = urllib.request.Request(
        f"{url}/api/v0/block/get?arg={cid}&offline=true&timeout=3s", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return bytes(response.read())
    except urllib.error.HTTPError:
        return None


@pytest.fixture(params=["ipfs", "RUBIX_INTEGRATION_ENABLED", "IPFS_DATASETS_ENABLED"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> Iterator[Mode]:
    """The environment of one mode: a reachable daemon, or the integration turned off."""
    monkeypatch.delenv("IPFS_DATASETS_ENABLED", raising=False)
    monkeypatch.setenv("RUBIX_IPFS_PATH", str(tmp_path / "no-repo"))  # no kubo repo to find
    if request.param == "ipfs":
        daemon = request.getfixturevalue("jsipfs_daemon")
        monkeypatch.setenv("RUBIX_IPFS_API", daemon.api_multiaddr)
        monkeypatch.setenv("RUBIX_IPFS_TIMEOUT", str(TIMEOUT))
        yield Mode("ipfs", daemon.url)
    else:
        monkeypatch.setenv(request.param, "0")
        yield Mode(request.param)


@pytest.fixture
def default_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default store the datasets API's calls open, on each store backend."""
    monkeypatch.setenv("RUBIX_STORE_URL", store_url)
    return store_url


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The paths the README names: a model file, a dataset directory, an output folder."""
    root = tmp_path / "usage"
    (root / "models").mkdir(parents=True)
    (root / "models" / "bert-base.bin").write_bytes(bytes(range(256)) * 2000)  # 512000 bytes
    (root / "dataset" / "train").mkdir(parents=True)
    (root / "dataset" / "README").write_text("a dataset\n")
    (root / "dataset" / "train" / "part-0.csv").write_text("a,b\n1,2\n")
    (root / "output").mkdir()
    return root


# --- Architecture ---------------------------------------------------------------------------------


def test_architecture_1_datasets_manager(mode: Mode, default_store: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from rubix_integration import DatasetsManager

    manager = DatasetsManager({
        'cache_dir': str(tmp_path / 'cache' / 'ipfs_accelerate'),
        'enable_audit': True,
        'enable_provenance': True,
        'enable_p2p': False  # Disabled by default for safety
    })

    # Log events
    manager.log_event("model_loaded", {"model": "bert-base", "size_mb": 420})

    # Track provenance
    cid = manager.track_provenance("inference", {
        "model": "bert-base",
        "input_cid": "Qm...",
        "output_cid": "Qm..."
    })

    # Check status
    status = manager.get_status()
    print(f"Enabled: {status['enabled']}")

    assert capsys.readouterr().out == f"Enabled: {mode.on}\n"
    assert status.enabled is mode.on and status["available"] is mode.on
    assert status["cache_dir"] == str(tmp_path / "cache" / "ipfs_accelerate")
    assert status.p2p is False and status.records == 2
    assert isinstance(cid, str) and cid.published is mode.on
    record = manager.provenance.get(cid)
    assert record.type == "operation" and record.data["operation"] == "inference"
    assert record.data["model"] == "bert-base" and record.published is mode.on
    if mode.on:
        assert mode.daemon_url is not None
        assert daemon_block(mode.daemon_url, cid) == manager.provenance.get_block(cid)
        assert status.local_only == 0
    else:
        assert status.local_only == 2
        assert status.enabled_by == mode.name and mode.name in status.reason
    manager.close()


def test_architecture_2_filesystem_handler(mode: Mode, files: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from rubix_integration import FilesystemHandler

    fs = FilesystemHandler()

    # Add file to IPFS
    cid = fs.add_file(f"{files}/models/bert-base.bin", pin=True)
    print(f"Model stored at: {cid}")

    # Retrieve file from IPFS
    fs.get_file(cid, f"{files}/output/bert-base.bin")

    # Add directory
    dir_cid = fs.add_directory(f"{files}/dataset/", recursive=True)

    # List directory contents
    entries = fs.list_directory(dir_cid)
    for entry in entries:
        print(f"{entry['name']}: {entry['cid']}")

    lines = capsys.readouterr().out.splitlines()
    # the CID kubo and js-ipfs give this file with their default settings
    assert lines[0] == f"Model stored at: {cid}" and cid.startswith("Qm")
    assert (files / "output" / "bert-base.bin").read_bytes() == (
        files / "models" / "bert-base.bin").read_bytes()
    assert lines[1:] == [f"README: {entries[0].cid}", f"train: {entries[1].cid}"]
    assert [e.type for e in entries] == ["file", "directory"]
    assert {e.path for e in dir_cid.entries} == {"", "README", "train", "train/part-0.csv"}
    assert cid.published is mode.on and dir_cid.published is mode.on
    if mode.on:
        assert mode.daemon_url is not None
        # local first, then pushed: the node holds the same blocks under the same CIDs
        assert daemon_block(mode.daemon_url, cid) is not None
        assert daemon_block(mode.daemon_url, entries[1].cid) is not None
        assert fs.pending() == []
    else:
        assert fs.pending() == [cid, dir_cid]  # waiting for a node
    fs.close()


def test_architecture_3_provenance_logger(mode: Mode, default_store: str) -> None:
    from rubix_integration import FilesystemHandler, ProvenanceLogger

    with FilesystemHandler() as fs:
        qm_in = fs.add_file(__file__)
        qm_out = fs.add_file(Path(__file__).parent / "conftest.py")

    logger = ProvenanceLogger()

    # Log model inference
    logger.log_inference("bert-base", {
        "input": "Hello world",
        "output_embedding": [0.1, 0.2, 0.3],
        "duration_ms": 150,
        "hardware": "CUDA"
    })

    # Log data transformation
    logger.log_transformation("tokenization", {
        "tokenizer": "bert-tokenizer",
        "max_length": 512
    }, input_cid=qm_in, output_cid=qm_out)

    # Log worker execution
    logger.log_worker_execution("worker-001", "task-123", {
        "status": "completed",
        "duration_ms": 5000
    })

    # Log pull request activity
    logger.log_pr_activity(123, "copilot_suggestion", {
        "file": "model.py",
        "suggestion": "Add error handling",
        "accepted": True
    })

    # Query logs
    logs = logger.query_logs({"type": "inference", "model": "bert-base"})

    assert len(logs) == 1 and logs[0].data["hardware"] == "CUDA"
    assert logs[0].data["output_embedding"] == [0.1, 0.2, 0.3]
    transformation = logger.query_logs({"type": "transformation", "name": "tokenization"})[0]
    assert str(transformation.data["input"]) == qm_in
    assert str(transformation.data["output"]) == qm_out
    assert logger.query_logs({"type": "worker_execution", "task_id": "task-123"})[0].data[
        "status"] == "completed"
    assert logger.query_logs({"type": "pr_activity", "pr_number": 123})[0].data["accepted"]
    assert logger.query_logs({"type": "inference", "model": "gpt-2"}) == []
    # local first: every record is in the store; with a node, each is pushed as it is logged
    assert all(r.published is mode.on for r in logger.query_logs(limit=None))
    assert logger.verify().ok
    logger.close()


def test_architecture_4_workflow_coordinator(mode: Mode, default_store: str) -> None:
    from rubix_integration import WorkflowCoordinator

    coordinator = WorkflowCoordinator({'enable_p2p': True})

    # Submit task
    coordinator.submit_task(
        task_id="infer-001",
        task_type="inference",
        data={"model": "bert", "batch_size": 32},
        priority=8,
        tags=["P2P_ELIGIBLE", "GPU_PREFERRED"]
    )

    # Get next task (for workers)
    task = coordinator.get_next_task(
        worker_id="worker-001",
        capabilities=["GPU", "CUDA"]
    )

    # Complete task
    coordinator.complete_task("infer-001", {
        "status": "success",
        "output_cid": "Qm...",
        "duration_ms": 5000
    })

    # Check status
    status = coordinator.get_task_status("infer-001")

    assert task is not None and task["task_id"] == "infer-001"
    assert task["data"] == {"model": "bert", "batch_size": 32} and task.worker_id == "worker-001"
    assert status["state"] == "completed" and status.result["status"] == "success"
    coordinator.close()


# --- Usage patterns -------------------------------------------------------------------------------


def test_pattern_1_check_before_use(mode: Mode, capsys: pytest.CaptureFixture[str]) -> None:
    from rubix_integration import is_datasets_available

    if is_datasets_available():
        from rubix_integration import DatasetsManager
        manager = DatasetsManager()
        manager.log_event("app_started", {})
    else:
        print("Using local mode")

    out = capsys.readouterr().out
    if mode.on:
        assert out == ""
        assert manager.provenance.query_logs({"type": "app_started"})[0].published
        manager.close()
    else:
        assert out == "Using local mode\n"


def test_pattern_2_graceful_degradation(mode: Mode, default_store: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from rubix_integration import DatasetsManager

    # Always create manager - it handles availability internally
    manager = DatasetsManager()

    # Methods return False/None if unavailable
    if manager.log_event("inference", {"model": "bert"}):
        print("Logged to IPFS")
    else:
        print("Logged locally")

    assert capsys.readouterr().out == ("Logged to IPFS\n" if mode.on else "Logged locally\n")
    # the record is kept either way, under the same CID
    record = manager.provenance.query_logs({"type": "inference", "model": "bert"})[0]
    assert record.published is mode.on
    manager.close()


def test_pattern_3_status_checking(mode: Mode, capsys: pytest.CaptureFixture[str]) -> None:
    from rubix_integration import get_datasets_status

    status = get_datasets_status()
    print(f"Available: {status['available']}")
    print(f"Path: {status['path']}")
    print(f"Reason: {status.get('reason', 'N/A')}")

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Available: {mode.on}"
    if mode.on:
        assert lines[1] == f"Path: {mode.daemon_url}"
        assert lines[2].startswith("Reason: auto: daemon")
    else:
        assert lines[1].startswith("Path: ") and lines[1].endswith("/ipfs")
        assert lines[2] == f"Reason: {mode.name}=0: embedded fallback only"
        assert status.enabled_by == mode.name and status.enabled == "0"


# --- Use cases ------------------------------------------------------------------------------------


def test_use_case_1_model_manager_with_ipfs_storage(mode: Mode, default_store: str,
                                                    files: Path) -> None:
    from rubix_integration import DatasetsManager, FilesystemHandler

    manager = DatasetsManager()
    fs = FilesystemHandler()

    # Save model to IPFS
    model_cid = fs.add_file(f"{files}/models/bert-base.bin", pin=True)

    # Track provenance
    manager.track_provenance("model_upload", {
        "model": "bert-base",
        "version": "1.0",
        "cid": model_cid,
        "size_mb": 420
    })

    # Log event
    manager.log_event("model_stored", {
        "model": "bert-base",
        "cid": model_cid
    })

    upload = manager.provenance.query_logs({"operation": "model_upload"})[0]
    stored = manager.provenance.query_logs({"type": "model_stored"})[0]
    assert upload.data["cid"] == model_cid == stored.data["cid"]
    assert upload.published is mode.on and stored.published is mode.on
    assert fs.cat(model_cid) == (files / "models" / "bert-base.bin").read_bytes()
    fs.close()
    manager.close()


def test_use_case_2_distributed_inference_logging(mode: Mode, default_store: str) -> None:
    from rubix_integration import ProvenanceLogger

    logger = ProvenanceLogger()
    other = logger.log_inference("gpt-2", {"input_text": "x"})

    # Log inference operation
    logger.log_inference("bert-base", {
        "input_text": "What is IPFS?",
        "input_tokens": 5,
        "output_embedding": [0.1, 0.2] * 384,
        "output_dim": 768,
        "duration_ms": 150,
        "hardware": "CUDA",
        "batch_size": 1
    })

    # Query inference history
    history = logger.query_logs({
        "type": "inference",
        "model": "bert-base"
    }, limit=100)

    assert [r.data["input_text"] for r in history] == ["What is IPFS?"]
    assert history[0].data["output_dim"] == len(history[0].data["output_embedding"]) == 768
    assert other not in {r.cid for r in history}
    assert history[0].published is mode.on
    logger.close()


def execute_inference(data: dict[str, Any]) -> dict[str, Any]:
    """The worker's own code in the README's example."""
    return {"embeddings": [[float(len(text))] for text in data["inputs"]]}


def test_use_case_3_worker_coordination(mode: Mode, default_store: str) -> None:
    from rubix_integration import ProvenanceLogger, WorkflowCoordinator

    coordinator = WorkflowCoordinator({'enable_p2p': True})
    logger = ProvenanceLogger()

    # Coordinator submits work
    coordinator.submit_task("batch-001", "batch_inference", {
        "model": "bert-base",
        "inputs": ["text1", "text2", "text3"],
        "batch_size": 32
    }, priority=7)

    # Worker picks up task
    task = coordinator.get_next_task("worker-001", ["GPU"])
    if task:
        # Execute task
        result = execute_inference(task['data'])

        # Log execution
        logger.log_worker_execution("worker-001", task['task_id'], {
            "status": "completed",
            "outputs": result,
            "duration_ms": 5000
        })

        # Mark complete
        coordinator.complete_task(task['task_id'], result)

    assert task is not None
    done = coordinator.get_task_status("batch-001")
    assert done.state == "completed" and done.result == {"embeddings": [[5.0]] * 3}
    run = logger.query_logs({"type": "worker_execution", "task_id": "batch-001"})
    assert run[0].data["outputs"] == done.result and run[0].published is mode.on
    coordinator.close()
    logger.close()


def test_use_case_4_copilot_activity_tracking(mode: Mode, default_store: str) -> None:
    from rubix_integration import ProvenanceLogger

    logger = ProvenanceLogger()
    logger.log_pr_activity(7, "merge", {"commit": "fff"})

    # Track Copilot suggestion
    logger.log_pr_activity(123, "copilot_suggestion", {
        "file": "model.py",
        "line": 42,
        "suggestion": "Add type hints",
        "accepted": True,
        "timestamp": "2024-01-28T10:30:00Z"
    })

    # Track PR merge
    logger.log_pr_activity(123, "merge", {
        "commit": "abc123",
        "files_changed": 5,
        "lines_added": 100,
        "lines_removed": 20
    })

    # Query PR activity
    activity = logger.query_logs({
        "type": "pr_activity",
        "pr_number": 123
    })

    assert [r.data["kind"] for r in activity] == ["merge", "copilot_suggestion"]  # newest first
    assert activity[0].data["lines_added"] == 100 and activity[1].data["line"] == 42
    assert all(r.published is mode.on for r in activity)
    logger.close()
