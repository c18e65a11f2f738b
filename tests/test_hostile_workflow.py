"""The workflow queue against callers that do not hold a task, and against hostile input.

Every case runs on both stores: the same call must give the same classified error on SQLite and on
PostgreSQL, before any SQL runs, and change nothing.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from rubix_integration import Manager
from rubix_integration.errors import InvalidDataError, TaskError
from rubix_integration.workflow import (
    LeaseLostError,
    Task,
    TaskStateError,
    WorkflowCoordinator,
)

NUL = "a\x00b"


def _claimed(manager: Manager, task_id: str = "t", worker: str = "wA",
             ) -> tuple[WorkflowCoordinator, Task]:
    """A fresh coordinator that submitted and claimed ``task_id`` as ``worker``."""
    holder = WorkflowCoordinator(manager)
    holder.submit_task(task_id, "job", {"id": task_id})
    task = holder.get_next_task(worker)
    assert task is not None and task.task_id == task_id
    return holder, task


def _completions(manager: Manager, task_id: str) -> list[Any]:
    return manager.query_logs({"type": "task_state", "data.new_state": "completed",
                               "data.task_id": task_id}, limit=None)


# --- fencing: changing a running task requires holding it ----------------------------------------


def test_another_caller_cannot_change_a_held_task(manager: Manager) -> None:
    holder, task = _claimed(manager)
    other = WorkflowCoordinator(manager)
    attempts: list[Callable[[], Any]] = [
        lambda: other.complete_task("t", {"from": "other"}),
        lambda: other.complete_task("t", {"from": "other"}, worker_id="wA"),
        lambda: other.fail_task("t", "not mine", retry=False),
        lambda: other.fail_task("t", "not mine", worker_id="wA"),
        lambda: other.release_task("t"),
        lambda: other.release_task("t", worker_id="wA"),
        lambda: other.heartbeat("t", "wA"),
        lambda: other.cancel_task("t"),
        lambda: manager.complete_task("t", {"from": "manager"}),  # the Manager's own instance
    ]
    for attempt in attempts:
        with pytest.raises(LeaseLostError, match="does not hold"):
            attempt()
    (refused,) = other.complete_tasks([{"task_id": "t", "result": 1}], worker_id="wA")
    assert isinstance(refused, LeaseLostError)
    still = other.get_task_status("t")
    assert still.state == "running" and still.lease_token == task.lease_token
    assert still.attempts == 1 and still.result is None
    # the holder's own bare calls (as the coordinator that claimed it) are accepted
    beat = holder.heartbeat("t", "wA")
    assert beat.lease_token == task.lease_token
    done = holder.complete_task("t", {"from": "holder"})
    assert done.state == "completed" and done.result == {"from": "holder"}
    assert len(_completions(manager, "t")) == 1
    with pytest.raises(TaskStateError):
        holder.complete_task("t", {"again": True})


def test_the_holder_keeps_the_bare_calls_of_the_datasets_api(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager, backoff_base=0)
    wf.submit_tasks({"task_id": i, "task_type": "job"} for i in ("a", "b", "c", "d"))
    a = wf.get_next_task("w")
    assert a is not None
    assert wf.fail_task(a.task_id, "boom").state == "retry_wait"
    b = wf.get_next_task("w")
    assert b is not None
    assert wf.release_task(b.task_id).state == "pending"
    c, d = wf.get_next_tasks("w", limit=2)
    out = wf.complete_tasks([{"task_id": c.task_id, "result": 1},
                             {"task_id": d.task_id, "result": 2}])
    assert [o.state for o in out if isinstance(o, Task)] == ["completed", "completed"]
    e = wf.get_next_task("w")
    assert e is not None
    assert wf.cancel_task(e.task_id).state == "cancelled"  # the holder may cancel its own task


def test_the_lease_token_lets_another_caller_act(manager: Manager) -> None:
    _, task = _claimed(manager)
    other = WorkflowCoordinator(manager)
    beat = other.heartbeat("t", "wA", lease_token=task.lease_token)
    assert beat.lease_token == task.lease_token
    (done,) = other.complete_tasks([{"task_id": "t", "result": 7,
                                     "lease_token": task.lease_token}])
    assert isinstance(done, Task) and done.result == 7
    _, second = _claimed(manager, "u")
    with pytest.raises(LeaseLostError, match="another claim"):
        other.complete_task("u", 1, lease_token=task.lease_token)
    assert other.get_task_status("u").lease_token == second.lease_token


def test_force_is_an_administrative_override_and_is_recorded(
    manager: Manager, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rubix_integration.workflow")
    holder, _ = _claimed(manager, "stuck")
    holder.submit_task("c", "job", None)
    holder.submit_task("r", "job", None)
    c = holder.get_next_task("wA")
    r = holder.get_next_task("wA")
    assert c is not None and r is not None
    admin = WorkflowCoordinator(manager)
    dead = admin.fail_task("stuck", "operator gave up", retry=False, force=True)
    assert dead.state == "dead"
    cancelled = admin.cancel_task("c", reason="not needed", force=True)
    assert cancelled.state == "cancelled"
    released = admin.release_task("r", force=True)
    assert released.state == "pending"
    (forced,) = admin.complete_tasks([{"task_id": "late", "result": 1}], force=True)
    assert isinstance(forced, TaskError)  # force never invents a task
    for task_id in ("stuck", "c", "r"):
        (record,) = manager.query_logs({"type": "task_state", "data.task_id": task_id,
                                        "data.old_state": "running"}, limit=None)
        assert record.data["forced"] is True
        assert f"{task_id!r}" in caplog.text
    assert "administrative override" in caplog.text
    # the former holder's result is refused, and no forced record is made for its own calls
    with pytest.raises(TaskError):
        holder.complete_task("stuck", {"late": True})
    t = holder.get_next_task("wB")
    assert t is not None and t.task_id == "r"
    assert holder.complete_task("r", 1).state == "completed"
    last = manager.query_logs({"type": "task_state", "data.task_id": "r",
                               "data.new_state": "completed"}, limit=None)
    assert "forced" not in last[0].data


def test_force_on_a_completed_task_is_still_refused(manager: Manager) -> None:
    holder, _ = _claimed(manager)
    holder.complete_task("t", 1)
    admin = WorkflowCoordinator(manager)
    with pytest.raises(TaskStateError):
        admin.complete_task("t", 2, force=True)
    with pytest.raises(TaskStateError):
        admin.cancel_task("t", force=True)
    assert admin.get_task_status("t").result == 1


def test_cancel_of_a_task_nobody_holds_needs_no_force(manager: Manager) -> None:
    submitter = WorkflowCoordinator(manager)
    submitter.submit_task("p", "job", None)
    other = WorkflowCoordinator(manager)
    assert other.cancel_task("p").state == "cancelled"


def test_remembered_leases_are_per_instance_and_thread_safe(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager)
    wf.submit_tasks({"task_id": f"t{i:03d}", "task_type": "job"} for i in range(80))
    errors: list[BaseException] = []
    done: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        try:
            while (task := wf.get_next_task(name)) is not None:
                wf.heartbeat(task.task_id, name)
                finished = wf.complete_task(task.task_id, {"by": name})
                with lock:
                    done.append(finished.task_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(done) == [f"t{i:03d}" for i in range(80)]
    assert wf.counts()["completed"] == 80


def test_cli_cancel_of_a_running_task_needs_force(store_url: str) -> None:
    from rubix_integration.cli import cli

    with Manager(store_url=store_url) as manager:
        _claimed(manager)
    runner = CliRunner()
    refused = runner.invoke(cli, ["tasks", "cancel", "t", "--store", store_url])
    assert refused.exit_code == 1
    assert "LeaseLostError" in refused.output and "--force" in refused.output
    assert "Traceback" not in refused.output
    forced = runner.invoke(cli, ["tasks", "cancel", "t", "--store", store_url, "--force",
                                 "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["state"] == "cancelled"


# --- hostile input: classified, identical on both stores, nothing written -------------------------


def _nothing_written(manager: Manager) -> None:
    assert manager.workflow.list_tasks() == []
    assert manager.provenance.count() == 0


@pytest.mark.parametrize("task_id", ["", "x" * 256, NUL, "\x00", 5, None, b"t", "\ud800"])
def test_bad_task_ids_are_refused_at_submit(manager: Manager, task_id: Any) -> None:
    with pytest.raises(InvalidDataError) as info:
        manager.workflow.submit_task(task_id, "job", None)
    assert info.value.path == "task_id"
    with pytest.raises(InvalidDataError):
        manager.workflow.submit_tasks([{"task_id": task_id, "task_type": "job"}])
    _nothing_written(manager)


def test_task_id_length_bounds(manager: Manager) -> None:
    wf = manager.workflow
    for task_id in ("x", "y" * 255, "ünï-cødé ☃"):
        assert wf.submit_task(task_id, "job", None).task_id == task_id
        assert wf.get_task_status(task_id).task_id == task_id


@pytest.mark.parametrize("task_id", ["", "x" * 256, NUL, 7, None])
def test_bad_task_ids_are_refused_by_every_call(manager: Manager, task_id: Any) -> None:
    wf = manager.workflow
    calls: list[Callable[[], Any]] = [
        lambda: wf.get_task_status(task_id),
        lambda: wf.complete_task(task_id, 1, force=True),
        lambda: wf.fail_task(task_id, "x", force=True),
        lambda: wf.release_task(task_id, force=True),
        lambda: wf.heartbeat(task_id, "w", lease_token="tok"),
        lambda: wf.cancel_task(task_id, force=True),
        lambda: wf.resubmit_task(task_id),
    ]
    for call in calls:
        with pytest.raises(InvalidDataError) as info:
            call()
        assert info.value.path == "task_id"
    (item,) = wf.complete_tasks([{"task_id": task_id, "result": 1}], force=True)
    assert isinstance(item, InvalidDataError) and item.path == "task_id"
    _nothing_written(manager)


@pytest.mark.parametrize("data", [
    NUL, {"k": NUL}, {NUL: 1}, [1, ["\x00"]], {"nested": {"deep": [{"s": "\x00"}]}},
    math.nan, {"x": math.inf}, [-math.inf], "\ud800",
])
def test_bad_task_data_is_refused(manager: Manager, data: Any) -> None:
    with pytest.raises(InvalidDataError):
        manager.workflow.submit_task("t", "job", data)
    _nothing_written(manager)


def test_escaped_text_that_only_looks_like_nul_is_accepted(manager: Manager) -> None:
    wf = manager.workflow
    data = {"s": "\\u0000", "b": b"\x00\x01", "k\\u0000": "\\\\u0000"}
    assert wf.submit_task("t", "job", data).data == data
    assert wf.get_task_status("t").data == data


def test_results_with_nul_are_refused_and_the_task_kept(manager: Manager) -> None:
    holder, _ = _claimed(manager)
    with pytest.raises(InvalidDataError):
        holder.complete_task("t", {"out": NUL})
    (item,) = holder.complete_tasks([{"task_id": "t", "result": [NUL]}])
    assert isinstance(item, InvalidDataError)
    assert holder.get_task_status("t").state == "running"
    assert holder.complete_task("t", {"out": "fine"}).state == "completed"


@pytest.mark.parametrize("priority", [-2**31, -1, 0, 2**31 - 1])
def test_priority_bounds_accepted(manager: Manager, priority: int) -> None:
    task = manager.workflow.submit_task("t", "job", None, priority=priority)
    assert manager.workflow.get_task_status("t").priority == task.priority == priority


@pytest.mark.parametrize("priority", [-2**31 - 1, 2**31, 2**63, "1", 1.0, True, None])
def test_priority_out_of_range_or_not_an_int(manager: Manager, priority: Any) -> None:
    with pytest.raises(InvalidDataError) as info:
        manager.workflow.submit_task("t", "job", None, priority=priority)
    assert info.value.path == "priority"
    _nothing_written(manager)


@pytest.mark.parametrize("attempts", [0, -1, 2**31, "3", 2.5, True])
def test_bad_max_attempts(manager: Manager, attempts: Any) -> None:
    with pytest.raises(InvalidDataError) as info:
        manager.workflow.submit_task("t", "job", None, max_attempts=attempts)
    assert info.value.path == "max_attempts"
    _nothing_written(manager)


def test_max_attempts_bounds(manager: Manager) -> None:
    wf = manager.workflow
    assert wf.submit_task("one", "job", None, max_attempts=1).max_attempts == 1
    assert wf.submit_task("big", "job", None, max_attempts=2**31 - 1).max_attempts == 2**31 - 1
    wf.cancel_task("one")
    with pytest.raises(InvalidDataError):
        wf.resubmit_task("one", max_attempts=0)
    with pytest.raises(InvalidDataError):
        wf.resubmit_task("one", max_attempts=2**31)
    assert wf.resubmit_task("one", max_attempts=2).max_attempts == 2


@pytest.mark.parametrize("kwargs", [
    {"task_type": NUL}, {"task_type": ""}, {"task_type": "x" * 201}, {"tags": [NUL]},
    {"tags": ["GPU", 5]},
])
def test_bad_type_and_tags(manager: Manager, kwargs: dict[str, Any]) -> None:
    args = {"task_type": "job", **kwargs}
    with pytest.raises(InvalidDataError):
        manager.workflow.submit_task("t", args.pop("task_type"), None, **args)
    _nothing_written(manager)


@pytest.mark.parametrize("kwargs", [
    {"worker_id": NUL}, {"worker_id": ""}, {"worker_id": "w" * 256},
    {"capabilities": ["GPU", NUL]}, {"capabilities": [5]}, {"task_types": [NUL]},
    {"task_types": [None]},
])
def test_bad_claim_arguments(manager: Manager, kwargs: dict[str, Any]) -> None:
    wf = manager.workflow
    wf.submit_task("t", "job", None)
    args = {"worker_id": "w", **kwargs}
    with pytest.raises(InvalidDataError):
        wf.get_next_task(args.pop("worker_id"), **args)
    assert wf.get_task_status("t").state == "pending"


@pytest.mark.parametrize("kwargs", [
    {"worker_id": NUL}, {"lease_token": NUL}, {"lease_token": 5}, {"lease_token": ""},
    {"lease_token": "x" * 65},
])
def test_bad_holder_arguments(manager: Manager, kwargs: dict[str, Any]) -> None:
    holder, _ = _claimed(manager)
    for call in (holder.complete_task, holder.fail_task):
        with pytest.raises(InvalidDataError):
            call("t", "x", **kwargs)
    assert holder.get_task_status("t").state == "running"


def test_nul_in_error_text_is_stored_the_same_on_both_stores(manager: Manager) -> None:
    holder, _ = _claimed(manager)
    failed = holder.fail_task("t", "bad\x00byte")
    assert failed.error == "bad\ufffdbyte"
    holder.submit_task("c", "job", None)
    assert holder.cancel_task("c", reason="why\x00").error == "why\ufffd"


@pytest.mark.parametrize("limit", [0, 1, None, 2**63 - 1])
def test_list_limit_bounds_accepted(manager: Manager, limit: int | None) -> None:
    manager.workflow.submit_task("t", "job", None)
    found = manager.workflow.list_tasks(limit=limit)
    assert [t.task_id for t in found] == ([] if limit == 0 else ["t"])


@pytest.mark.parametrize("kwargs", [
    {"limit": -1}, {"limit": 2**63}, {"limit": "5"}, {"limit": 2.5}, {"limit": True},
    {"offset": -1}, {"offset": 2**63}, {"offset": None}, {"offset": "0"},
])
def test_list_limit_and_offset_refused(manager: Manager, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataError):
        manager.workflow.list_tasks(**kwargs)


@pytest.mark.parametrize("filters", [
    {"state": "bogus"}, {"state": ["pending", "nope"]}, {"state": 5}, {"state": [None]},
    {"task_type": NUL}, {"task_type": 5}, {"worker_id": NUL}, {"tag": NUL}, {"tag": 5},
    {"colour": "red"}, ["state"],
])
def test_list_filters_refused(manager: Manager, filters: Any) -> None:
    with pytest.raises(InvalidDataError):
        manager.workflow.list_tasks(filters)


def test_batch_limit_is_classified(manager: Manager) -> None:
    for bad in (0, -1, 1001, True, 2.0):
        with pytest.raises(InvalidDataError, match="limit"):
            manager.workflow.get_next_tasks("w", limit=bad)


def test_the_oldest_remembered_leases_are_forgotten_past_the_bound(
    manager: Manager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rubix_integration.workflow import _leases

    monkeypatch.setattr(_leases, "MAX_REMEMBERED", 2)
    wf = WorkflowCoordinator(manager)
    wf.submit_tasks({"task_id": t, "task_type": "job", "priority": -i}
                    for i, t in enumerate("abc"))
    a, *_ = wf.get_next_tasks("w", limit=3)
    with pytest.raises(LeaseLostError, match="does not hold"):
        wf.complete_task("a", 1)  # forgotten: its holder must now pass the token
    assert wf.complete_task("a", 1, lease_token=a.lease_token).state == "completed"
    assert wf.complete_task("b", 2).state == "completed"
    assert wf.complete_task("c", 3).state == "completed"


def test_one_task_type_given_as_text(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("a", "index", None)
    wf.submit_task("b", "x", None, priority=5)
    task = wf.get_next_task("w", task_types="index")
    assert task is not None and task.task_id == "a"
