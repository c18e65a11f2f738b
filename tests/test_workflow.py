"""The workflow coordinator on real stores: ordering, matching, leases, retries, bad input."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from rubix_integration import Manager, hookimpl
from rubix_integration.provenance import InvalidDataError, PayloadTooLargeError
from rubix_integration.workflow import (
    MAX_PAYLOAD_BYTES,
    LeaseLostError,
    Task,
    TaskConflictError,
    TaskNotFoundError,
    TaskStateError,
    Worker,
    WorkflowCoordinator,
)
from rubix_integration.workflow.matching import parse_tags, task_matches


def coordinator(manager: Manager, **kwargs: Any) -> WorkflowCoordinator:
    return WorkflowCoordinator(manager, **kwargs)


def drain(wf: WorkflowCoordinator, worker: str, caps: Any = ()) -> list[str]:
    out = []
    while (task := wf.get_next_task(worker, caps)) is not None:
        out.append(task.task_id)
        wf.complete_task(task.task_id, {"ok": True}, lease_token=task.lease_token)
    return out


def test_higher_priority_first_then_oldest(manager: Manager) -> None:
    wf = manager.workflow
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 9)]:
        wf.submit_task(task_id, "job", {"id": task_id}, priority=priority)
    assert drain(wf, "w") == ["f", "b", "d", "a", "c", "e"]


def test_tag_rules() -> None:
    tags = parse_tags(["gpu", "HighMem_PREFERRED", "team:ml", "gpu"])
    assert tags.tags == ("gpu", "HighMem_PREFERRED", "team:ml")
    assert tags.required == ("GPU",) and tags.preferred == ("HIGHMEM",)
    assert task_matches(["GPU"], [], ["GPU", "X"], waited=0, preferred_wait=30)
    assert not task_matches(["GPU"], [], ["X"], waited=99, preferred_wait=30)
    assert task_matches([], ["GPU"], ["GPU"], waited=0, preferred_wait=30)
    assert not task_matches([], ["GPU"], [], waited=1, preferred_wait=30)
    assert task_matches([], ["GPU"], [], waited=31, preferred_wait=30)


def test_required_capabilities_are_matched(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("gpu", "job", None, tags=["GPU"], priority=10)
    wf.submit_task("gpu-cuda", "job", None, tags=["GPU", "cuda"], priority=10)
    wf.submit_task("plain", "job", None, tags=["team:ml"])
    assert drain(wf, "cpu-worker", []) == ["plain"]
    assert drain(wf, "gpu-only", "gpu") == ["gpu"]
    assert drain(wf, "gpu-cuda", ["GPU", "CUDA"]) == ["gpu-cuda"]


def test_preferred_capability_goes_to_capable_workers_first(manager: Manager) -> None:
    # the wait leaves room for a loaded machine between the submit and the first claim
    wf = coordinator(manager, preferred_wait=2.0)
    wf.submit_task("pref", "job", None, tags=["GPU_PREFERRED"], priority=5)
    wf.submit_task("any", "job", None)
    # a worker without a GPU skips the preferred task while it is fresh
    assert drain(wf, "cpu", []) == ["any"]
    time.sleep(2.1)
    assert drain(wf, "cpu", []) == ["pref"]
    wf.submit_task("pref2", "job", None, tags=["GPU_PREFERRED"])
    assert drain(wf, "gpu", ["GPU"]) == ["pref2"]


def test_task_types_limit_what_is_claimed(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("a", "resize", None)
    wf.submit_task("b", "index", None)
    task = wf.get_next_task("w", task_types=["index"])
    assert task is not None and task.task_id == "b"
    assert wf.get_next_task("w", task_types=["index"]) is None
    assert wf.get_next_task("w", task_types=[]) is None


def test_submit_is_idempotent_and_conflicts_are_refused(manager: Manager) -> None:
    wf = manager.workflow
    first = wf.submit_task("t", "job", {"x": [1, 2]}, priority=2, tags=["GPU"])
    again = wf.submit_task("t", "job", {"x": [1, 2]}, priority=2, tags=["GPU"])
    assert again == first
    with pytest.raises(TaskConflictError):
        wf.submit_task("t", "job", {"x": [1, 3]}, priority=2, tags=["GPU"])
    assert wf.submit_tasks([{"task_id": "t", "task_type": "job", "data": {"x": [1, 2]}},
                            {"task_id": "u", "task_type": "job"}]) == 1
    assert len(wf.list_tasks()) == 2
    submits = manager.query_logs({"type": "task_state", "data.new_state": "pending",
                                  "data.task_id": "t"})
    assert len(submits) == 1


def test_lease_expiry_lets_another_worker_claim_and_fences_the_first(manager: Manager) -> None:
    wf = coordinator(manager, lease_seconds=0.3)
    wf.submit_task("t", "job", None)
    first = wf.get_next_task("w1")
    assert first is not None and first.attempts == 1
    assert wf.get_next_task("w2") is None  # still leased
    time.sleep(0.2)
    wf.heartbeat("t", "w1", lease_token=first.lease_token)  # extends the lease
    time.sleep(0.2)
    assert wf.get_next_task("w2") is None
    time.sleep(0.35)
    second = wf.get_next_task("w2")
    assert second is not None and second.task_id == "t" and second.attempts == 2
    assert second.lease_token != first.lease_token
    with pytest.raises(LeaseLostError):
        wf.heartbeat("t", "w1", lease_token=first.lease_token)
    with pytest.raises(LeaseLostError):
        wf.complete_task("t", {"from": "w1"}, worker_id="w1", lease_token=first.lease_token)
    with pytest.raises(LeaseLostError):
        wf.fail_task("t", "late", worker_id="w1")
    done = wf.complete_task("t", {"from": "w2"}, worker_id="w2", lease_token=second.lease_token)
    assert done.state == "completed" and done.result == {"from": "w2"}
    with pytest.raises(TaskStateError):
        wf.complete_task("t", {"from": "w2"}, worker_id="w2", lease_token=second.lease_token)
    completions = manager.query_logs({"type": "task_state", "data.new_state": "completed"})
    assert len(completions) == 1 and completions[0].data["worker_id"] == "w2"


def test_retries_back_off_then_the_task_is_dead_and_can_be_resubmitted(manager: Manager) -> None:
    wf = coordinator(manager, backoff_base=0.2, backoff_max=10)
    wf.submit_task("t", "job", None, max_attempts=3)
    waits = []
    for attempt in (1, 2):
        task = wf.get_next_task("w")
        assert task is not None and task.attempts == attempt
        failed = wf.fail_task("t", f"boom {attempt}", lease_token=task.lease_token)
        assert failed.state == "retry_wait" and failed.error == f"boom {attempt}"
        assert failed.due_at_us is not None
        waits.append((failed.due_at_us - failed.updated_at_us) / 1e6)
        assert wf.get_next_task("w") is None  # backing off
        time.sleep(waits[-1] + 0.05)
    assert waits == pytest.approx([0.2, 0.4], abs=0.01)
    task = wf.get_next_task("w")
    assert task is not None and task.attempts == 3
    dead = wf.fail_task("t", "boom 3", lease_token=task.lease_token)
    assert dead.state == "dead" and dead.finished_at_us is not None
    assert wf.get_next_task("w") is None
    assert [t.task_id for t in wf.list_tasks({"state": "dead"})] == ["t"]
    revived = wf.resubmit_task("t")
    assert revived.state == "pending" and revived.attempts == 0
    assert drain(wf, "w") == ["t"]
    with pytest.raises(TaskStateError):
        wf.resubmit_task("t")


def test_lease_expiring_on_the_last_attempt_makes_the_task_dead(manager: Manager) -> None:
    wf = coordinator(manager, lease_seconds=0.2)
    wf.submit_task("t", "job", None, max_attempts=1)
    assert wf.get_next_task("w1") is not None
    time.sleep(1.1)  # past the lease, and past the once-a-second sweep
    assert wf.get_next_task("w2") is None
    task = wf.get_task_status("t")
    assert task.state == "dead" and "lease expired" in (task.error or "")


def test_release_returns_the_task_without_counting_the_attempt(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("t", "job", None)
    task = wf.get_next_task("w")
    assert task is not None
    released = wf.release_task("t", worker_id="w", lease_token=task.lease_token)
    assert released.state == "pending" and released.attempts == 0
    assert drain(wf, "w2") == ["t"]


def test_cancel_refuses_a_later_completion(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("t", "job", None)
    task = wf.get_next_task("w")
    assert task is not None
    cancelled = wf.cancel_task("t", reason="not needed")
    assert cancelled.state == "cancelled"
    with pytest.raises(TaskStateError, match="cancelled"):
        wf.complete_task("t", {"late": True}, lease_token=task.lease_token)
    with pytest.raises(TaskStateError):
        wf.cancel_task("t")
    assert wf.get_task_status("t").result is None


def test_unknown_task_ids(manager: Manager) -> None:
    wf = manager.workflow
    for call in (lambda: wf.get_task_status("nope"), lambda: wf.complete_task("nope", 1),
                 lambda: wf.fail_task("nope", "x"), lambda: wf.cancel_task("nope"),
                 lambda: wf.heartbeat("nope", "w"), lambda: wf.resubmit_task("nope")):
        with pytest.raises(TaskNotFoundError):
            call()


def test_bad_payloads_are_refused_and_nothing_is_written(manager: Manager) -> None:
    wf = manager.workflow
    with pytest.raises(InvalidDataError, match="not representable"):
        wf.submit_task("t", "job", {"when": object()})
    with pytest.raises(PayloadTooLargeError) as info:
        wf.submit_task("t", "job", {"blob": "x" * MAX_PAYLOAD_BYTES})
    assert info.value.limit == MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidDataError):
        wf.submit_task("", "job", None)
    with pytest.raises(InvalidDataError):
        wf.submit_task("t", "job", None, tags=[""])
    assert wf.list_tasks() == [] and manager.provenance.count() == 0
    wf.submit_task("t", "job", {"b": b"\x00", "n": 1.5})
    task = wf.get_next_task("w")
    assert task is not None and task.data == {"b": b"\x00", "n": 1.5}
    with pytest.raises(PayloadTooLargeError):
        wf.complete_task("t", "y" * (MAX_PAYLOAD_BYTES + 1), lease_token=task.lease_token)
    assert wf.get_task_status("t").state == "running"


def test_every_state_change_is_logged_and_announced(store_url: str) -> None:
    events: list[tuple[str | None, str, str]] = []

    class Listener:
        @hookimpl
        def task_state_changed(self, task: dict[str, Any], old_state: str | None,
                               new_state: str) -> None:
            events.append((old_state, new_state, task["task_id"]))

    with Manager(store_url=store_url, plugins=[Listener()]) as manager:
        wf = coordinator(manager, backoff_base=0)
        wf.submit_task("t", "job", None)
        task = wf.get_next_task("w")
        assert task is not None
        wf.fail_task("t", "oops", lease_token=task.lease_token)
        task = wf.get_next_task("w")
        assert task is not None
        wf.complete_task("t", {"r": 1}, lease_token=task.lease_token)
        transitions = [(None, "pending"), ("pending", "running"), ("running", "retry_wait"),
                       ("retry_wait", "running"), ("running", "completed")]
        assert [(o, n) for o, n, _ in events] == transitions
        logged = manager.query_logs({"type": "task_state"}, newest_first=False)
        assert [(r.data["old_state"], r.data["new_state"]) for r in logged] == transitions
        assert logged[2].data["error"] == "oops"
        assert "result" in logged[-1].data
        assert manager.provenance.verify().ok


def test_list_filters(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("a", "resize", None, tags=["team:ml"])
    wf.submit_task("b", "index", None)
    assert [t.task_id for t in wf.list_tasks({"tag": "team:ml"})] == ["a"]
    assert [t.task_id for t in wf.list_tasks({"task_type": "index"})] == ["b"]
    assert [t.task_id for t in wf.list_tasks({"state": ["pending"]})] == ["a", "b"]
    with pytest.raises(ValueError):
        wf.list_tasks({"state": "bogus"})
    with pytest.raises(ValueError):
        wf.list_tasks({"colour": "red"})


def test_worker_runs_handlers_and_records_failures(manager: Manager) -> None:
    wf = coordinator(manager, backoff_base=0, max_attempts=2)
    wf.submit_task("ok", "double", {"n": 2})
    wf.submit_task("bad", "double", {"n": "x"})
    wf.submit_task("other", "unknown-type", None)

    def double(task: Task) -> Any:
        return {"n": task.data["n"] * 2 if isinstance(task.data["n"], int) else 1 / 0}

    stats = Worker(wf, {"double": double}, worker_id="w").run(exit_when_idle=True)
    assert stats.completed == 1 and stats.failed == 2
    assert wf.get_task_status("ok").result == {"n": 4}
    bad = wf.get_task_status("bad")
    assert bad.state == "dead" and "ZeroDivisionError" in (bad.error or "")
    assert wf.get_task_status("other").state == "pending"


def test_worker_interrupted_mid_task_releases_it(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("t", "job", None)

    def interrupted(task: Task) -> Any:
        raise KeyboardInterrupt

    stats = Worker(wf, interrupted, worker_id="w").run()
    assert stats.released == 1
    task = wf.get_task_status("t")
    assert task.state == "pending" and task.attempts == 0


def test_handlers_from_plugins(store_url: str) -> None:
    from rubix_integration.errors import PluginError
    from rubix_integration.workflow.worker import collect_handlers

    class Handlers:
        @hookimpl
        def register_task_handlers(self) -> dict[str, Any]:
            return {"echo": lambda task: task.data}

    with Manager(store_url=store_url, plugins=[Handlers()]) as manager:
        handlers = collect_handlers(manager)
        assert set(handlers) == {"echo"}
        manager.submit_task("t", "echo", {"x": 1})
        Worker(manager.workflow, handlers, worker_id="w").run(exit_when_idle=True)
        assert manager.get_task_status("t").result == {"x": 1}
    class MoreHandlers(Handlers):
        pass

    with Manager(store_url=store_url, plugins=[Handlers(), MoreHandlers()]) as manager, \
            pytest.raises(PluginError, match="echo"):
        collect_handlers(manager)


# --- the command line ----------------------------------------------------------------------------


def test_cli_submit_list_status_cancel(store_url: str) -> None:
    from rubix_integration.cli import cli

    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(cli, ["tasks", *args], catch_exceptions=False)
        return result

    out = run("submit", "t1", "resize", "--store", store_url, "--data", '{"w": 64}',
              "--priority", "3", "--tag", "GPU", "--tag", "team:ml", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["state"] == "pending"
    assert run("submit", "t2", "index", "--store", store_url).exit_code == 0
    listed = json.loads(run("list", "--store", store_url, "--json").output)
    assert [t["task_id"] for t in listed] == ["t1", "t2"]
    assert "t1" in run("list", "--store", store_url, "--tag", "GPU").output
    status = run("status", "t1", "--store", store_url)
    assert "resize" in status.output and '"w": 64' in status.output
    cancelled = run("cancel", "t1", "--store", store_url, "--reason", "no", "--json")
    assert json.loads(cancelled.output)["state"] == "cancelled"
    again = run("cancel", "t1", "--store", store_url)
    assert again.exit_code == 1 and "TaskStateError" in again.output
    missing = run("status", "nope", "--store", store_url)
    assert missing.exit_code == 1 and "TaskNotFoundError" in missing.output
    bad = run("submit", "t3", "x", "--store", store_url, "--data", "{not json")
    assert bad.exit_code == 2
    assert json.loads(run("resubmit", "t1", "--store", store_url, "--json").output)["state"] \
        == "pending"
