"""Batched claims and results, and workers running batches, on real stores: leases, fencing,
refusals, stopping, and the kept connection."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

from rubix_integration import Manager, hookimpl
from rubix_integration.provenance import InvalidDataError, PayloadTooLargeError
from rubix_integration.workflow import (
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    LeaseLostError,
    Task,
    TaskNotFoundError,
    TaskStateError,
    Worker,
    WorkflowCoordinator,
)
from tests.workflow_handlers import task_changes


def _transitions(manager: Manager, task_id: str) -> list[tuple[str | None, str]]:
    return [(c["old_state"], c["new_state"]) for c in task_changes(manager, task_id=task_id)]


def _new_states(manager: Manager, new_state: str) -> collections.Counter[str]:
    return collections.Counter(c["task_id"]
                               for c in task_changes(manager, new_state=new_state))


# --- the coordinator ------------------------------------------------------------------------------


def test_get_next_tasks_claims_in_order_each_with_its_own_lease(manager: Manager) -> None:
    wf = manager.workflow
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 9), ("gpu", 99)]:
        wf.submit_task(task_id, "job", {"id": task_id}, priority=priority,
                       tags=["GPU"] if task_id == "gpu" else None)
    first = wf.get_next_tasks("w", limit=3)
    assert [t.task_id for t in first] == ["d", "b", "a"]
    assert all(t.state == "running" and t.worker_id == "w" and t.attempts == 1 for t in first)
    assert len({t.lease_token for t in first}) == 3 and all(t.lease_token for t in first)
    assert all(t.lease_expires_at_us == first[0].lease_expires_at_us for t in first)
    assert first[0].data == {"id": "d"}
    rest = wf.get_next_tasks("w2", limit=10)
    assert [t.task_id for t in rest] == ["c"]  # the GPU task needs a capability
    assert wf.get_next_tasks("w2", limit=10) == []
    assert [t.task_id for t in wf.get_next_tasks("g", "gpu", limit=2)] == ["gpu"]
    for task in first:
        assert _transitions(manager, task.task_id) == [(None, "pending"), ("pending", "running")]
    assert manager.provenance.verify().ok


def test_get_next_tasks_arguments(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("a", "resize", None)
    wf.submit_task("b", "index", None)
    for bad in (0, -1, MAX_BATCH + 1, True, 2.0):
        with pytest.raises(ValueError, match="limit"):
            wf.get_next_tasks("w", limit=bad)  # type: ignore[arg-type]
    assert wf.get_next_tasks("w", limit=5, task_types=[]) == []
    assert [t.task_id for t in wf.get_next_tasks("w", limit=5, task_types=["index"])] == ["b"]
    with pytest.raises(InvalidDataError):
        wf.get_next_tasks("", limit=1)


def test_complete_tasks_accepts_what_is_held_and_says_why_the_rest_is_refused(
    store_url: str,
) -> None:
    events: list[tuple[str, str]] = []

    class Listener:
        @hookimpl
        def task_state_changed(self, task: dict[str, Any], old_state: str | None,
                               new_state: str) -> None:
            if new_state == "completed":
                events.append((task["task_id"], new_state))

    with Manager(store_url=store_url, plugins=[Listener()]) as manager:
        wf = WorkflowCoordinator(manager, lease_seconds=0.3)
        for task_id in ("ok1", "cancelled", "big", "ok2", "done"):
            wf.submit_task(task_id, "job", {"id": task_id})
        held = {t.task_id: t for t in wf.get_next_tasks("w", limit=6)}
        assert len(held) == 5
        wf.complete_task("done", 1, lease_token=held["done"].lease_token)
        wf.cancel_task("cancelled")
        time.sleep(0.35)  # every lease ran out, but nobody else claimed the tasks
        items: list[dict[str, Any]] = [
            {"task_id": "ok1", "result": {"n": 1}, "lease_token": held["ok1"].lease_token},
            {"task_id": "nope", "result": 0},
            {"task_id": "cancelled", "result": 2, "lease_token": held["cancelled"].lease_token},
            {"task_id": "big", "result": "x" * MAX_PAYLOAD_BYTES,
             "lease_token": held["big"].lease_token},
            {"task_id": "ok2", "result": {"b": b"\x01"}, "lease_token": held["ok2"].lease_token},
            {"task_id": "done", "result": 3, "lease_token": held["done"].lease_token},
        ]
        out = wf.complete_tasks(items, worker_id="w")
        assert len(out) == len(items)
        ok1, nope, cancelled, big, ok2, done = out
        # a lease that ran out is still held while nobody else claimed the task
        assert isinstance(ok1, Task) and ok1.state == "completed" and ok1.result == {"n": 1}
        assert isinstance(ok2, Task) and ok2.result == {"b": b"\x01"}
        assert isinstance(nope, TaskNotFoundError)
        assert isinstance(cancelled, TaskStateError) and "cancelled" in str(cancelled)
        assert isinstance(big, PayloadTooLargeError)
        assert isinstance(done, TaskStateError) and "completed" in str(done)
        assert wf.get_task_status("big").state == "running"
        assert wf.get_task_status("cancelled").result is None
        assert wf.get_task_status("done").result == 1
        assert sorted(events) == [("done", "completed"), ("ok1", "completed"),
                                  ("ok2", "completed")]
        assert _new_states(manager, "completed") == {"done": 1, "ok1": 1, "ok2": 1}
        assert manager.provenance.verify().ok


def test_complete_tasks_fences_each_result(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager, lease_seconds=0.3)
    for task_id in ("a", "b", "c"):
        wf.submit_task(task_id, "job", None)
    mine = {t.task_id: t for t in wf.get_next_tasks("w1", limit=3)}
    time.sleep(0.35)
    theirs = wf.get_next_tasks("w2", limit=1)  # "a" is claimed again, with a new token
    assert [t.task_id for t in theirs] == ["a"] and theirs[0].attempts == 2
    out = wf.complete_tasks(
        [{"task_id": t, "result": t, "lease_token": mine[t].lease_token} for t in "abc"],
        worker_id="w1")
    assert isinstance(out[0], LeaseLostError) and "another claim" in str(out[0])
    assert [o.state for o in out[1:] if isinstance(o, Task)] == ["completed", "completed"]
    # the worker id alone fences too
    refused = wf.complete_tasks([{"task_id": "a", "result": 1}], worker_id="w1")
    assert isinstance(refused[0], LeaseLostError) and "held by 'w2'" in str(refused[0])
    done = wf.complete_tasks([{"task_id": "a", "result": 1,
                               "lease_token": theirs[0].lease_token}])
    assert isinstance(done[0], Task) and done[0].worker_id == "w2"
    assert _new_states(manager, "completed") == {"a": 1, "b": 1, "c": 1}


def test_complete_tasks_arguments(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("a", "job", None)
    task = wf.get_next_task("w")
    assert task is not None
    assert wf.complete_tasks([]) == []
    with pytest.raises(ValueError, match="twice"):
        wf.complete_tasks([{"task_id": "a", "result": 1}, {"task_id": "a", "result": 2}])
    with pytest.raises(ValueError, match="at most"):
        wf.complete_tasks({"task_id": f"t{i}"} for i in range(MAX_BATCH + 1))
    (bad,) = wf.complete_tasks([{"task_id": "a", "result": {"x": object()}}])
    assert isinstance(bad, InvalidDataError)
    assert wf.get_task_status("a").state == "running"
    assert manager.provenance.count({"data.new_state": "completed"}) == 0


# --- workers running batches ----------------------------------------------------------------------


def test_batched_worker_runs_everything_once(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager, backoff_base=0, max_attempts=1)
    wf.submit_tasks({"task_id": f"t{i:02d}", "task_type": "double", "data": {"n": i},
                     "priority": i % 3} for i in range(25))
    wf.submit_task("bad", "double", {"n": "x"})
    wf.submit_task("unstorable", "double", {"n": -1})
    runs: list[str] = []

    def double(task: Task) -> Any:
        runs.append(task.task_id)
        n = task.data["n"]
        if n == -1:
            return {"x": object()}
        return {"n": n * 2 if isinstance(n, int) else 1 / 0}

    worker = Worker(wf, {"double": double}, worker_id="w", batch_size=8)
    stats = worker.run(exit_when_idle=True)
    assert stats.claimed == 27 and stats.completed == 25 and stats.failed == 2
    assert stats.lost == 0 and stats.released == 0
    assert len(runs) == len(set(runs)) == 27  # each ran once
    assert wf.get_task_status("t07").result == {"n": 14}
    bad = wf.get_task_status("bad")
    assert bad.state == "dead" and "ZeroDivisionError" in (bad.error or "")
    unstorable = wf.get_task_status("unstorable")
    assert unstorable.state == "dead" and "not storable" in (unstorable.error or "")
    assert set(_new_states(manager, "running").values()) == {1}
    assert set(_new_states(manager, "completed").values()) == {1}
    assert manager.provenance.verify().ok
    with pytest.raises(ValueError, match="batch_size"):
        Worker(wf, double, batch_size=0)


def test_max_tasks_bounds_the_batches(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_tasks({"task_id": f"t{i}", "task_type": "job"} for i in range(10))
    stats = Worker(wf, lambda task: None, worker_id="w", batch_size=4).run(max_tasks=6)
    assert stats.claimed == 6 and stats.completed == 6
    assert wf.counts()["pending"] == 4


def test_tasks_waiting_in_a_batch_keep_their_lease(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager, lease_seconds=0.6)
    wf.submit_task("first", "job", None, priority=1)
    wf.submit_task("second", "job", None)
    other = WorkflowCoordinator(manager, lease_seconds=0.6)
    seen: list[Task | None] = []

    def slow(task: Task) -> Any:
        if task.task_id == "first":
            time.sleep(1.0)  # longer than the lease: heartbeats keep both tasks held
            seen.append(other.get_next_task("thief"))
        return task.task_id

    stats = Worker(wf, slow, worker_id="w", batch_size=2).run(exit_when_idle=True)
    assert seen == [None]
    assert stats.completed == 2 and stats.lost == 0
    second = wf.get_task_status("second")
    assert second.state == "completed" and second.worker_id == "w" and second.attempts == 1


def test_lease_lost_and_cancel_during_a_batch(manager: Manager) -> None:
    # no heartbeats during the test: the leases run out while "a" runs
    wf = WorkflowCoordinator(manager, lease_seconds=0.3)
    thief = WorkflowCoordinator(manager, lease_seconds=30)
    for task_id, priority in (("a", 3), ("b", 2), ("c", 1)):
        wf.submit_task(task_id, "job", {"id": task_id}, priority=priority)
    runs: list[str] = []
    stolen: list[str] = []

    def handler(task: Task) -> Any:
        runs.append(task.task_id)
        if task.task_id == "a":
            time.sleep(0.4)
            wf.heartbeat("a", "w", lease_token=task.lease_token)  # only "a" is kept
            stolen.extend(t.task_id for t in thief.get_next_tasks("thief", limit=1))
        if task.task_id == "c":
            wf.cancel_task("a")  # its result is still waiting for the report
        return {"ran": task.task_id}

    worker = Worker(wf, handler, worker_id="w", batch_size=3, heartbeat_interval=30)
    stats = worker.run(max_tasks=3)
    # "b" was taken over while it waited: not run; "c" lapsed too, but nobody took it: renewed
    assert stolen == ["b"] and runs == ["a", "c"]
    assert stats.claimed == 3 and stats.completed == 1 and stats.lost == 2
    assert wf.get_task_status("a").state == "cancelled"
    b = wf.get_task_status("b")
    assert b.state == "running" and b.worker_id == "thief"
    c = wf.get_task_status("c")
    assert c.state == "completed" and c.result == {"ran": "c"} and c.attempts == 1
    assert _new_states(manager, "completed") == {"c": 1}


def test_a_task_found_cancelled_by_a_heartbeat_is_not_started(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager)
    for task_id, priority in (("a", 2), ("b", 1)):
        wf.submit_task(task_id, "job", None, priority=priority)
    runs: list[str] = []

    def handler(task: Task) -> Any:
        runs.append(task.task_id)
        if task.task_id == "a":
            wf.cancel_task("b")
            time.sleep(0.5)  # several heartbeats
        return None

    stats = Worker(wf, handler, worker_id="w", batch_size=2, heartbeat_interval=0.05).run(
        max_tasks=2)
    assert runs == ["a"]
    assert stats.completed == 1 and stats.lost == 1
    assert wf.get_task_status("b").state == "cancelled"


def test_stopping_releases_the_tasks_not_started(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_tasks({"task_id": f"t{i}", "task_type": "job", "priority": -i}
                    for i in range(4))
    worker: Worker

    def handler(task: Task) -> Any:
        worker.stop()
        return "done"

    worker = Worker(wf, handler, worker_id="w", batch_size=3)
    stats = worker.run()
    assert stats.claimed == 3 and stats.completed == 1 and stats.released == 2
    assert wf.get_task_status("t0").state == "completed"
    for task_id in ("t1", "t2"):
        task = wf.get_task_status(task_id)
        assert task.state == "pending" and task.attempts == 0
        assert _transitions(manager, task_id)[-1] == ("running", "pending")
    assert wf.get_task_status("t3").attempts == 0


def test_interrupt_in_a_batch_reports_releases_and_stops(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_tasks({"task_id": f"t{i}", "task_type": "job", "priority": -i}
                    for i in range(4))

    def handler(task: Task) -> Any:
        if task.task_id == "t1":
            raise KeyboardInterrupt
        return task.task_id

    stats = Worker(wf, handler, worker_id="w", batch_size=3).run()
    assert stats.completed == 1 and stats.released == 2
    assert wf.get_task_status("t0").state == "completed"
    assert [wf.get_task_status(t).state for t in ("t1", "t2", "t3")] == ["pending"] * 3
    assert wf.get_task_status("t1").attempts == 0


def test_slow_results_are_reported_before_the_batch_ends(
    manager: Manager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rubix_integration.workflow import worker as worker_module

    monkeypatch.setattr(worker_module, "REPORT_AFTER", 0.2)
    wf = manager.workflow
    wf.submit_tasks({"task_id": f"t{i}", "task_type": "job", "priority": -i}
                    for i in range(3))
    states: list[str] = []

    def handler(task: Task) -> Any:
        if task.task_id == "t2":
            states.append(wf.get_task_status("t0").state)
        time.sleep(0.25)
        return None

    stats = Worker(wf, handler, worker_id="w", batch_size=3).run(max_tasks=3)
    assert states == ["completed"] and stats.completed == 3


# --- the kept connection (PostgreSQL) -------------------------------------------------------------


@pytest.mark.parametrize("store_kind", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_lost_kept_connection_is_replaced(manager: Manager,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import sqlalchemy as sa

    caplog.set_level(logging.INFO, logger="rubix_integration.workflow")
    wf = manager.workflow
    wf.submit_tasks({"task_id": f"t{i}", "task_type": "job", "priority": -i} for i in range(3))
    engine = manager.store.engine
    with wf.keep_connection():
        first = wf.get_next_task("w")
        assert first is not None
        kept = wf._tx.kept()
        assert kept is not None
        pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        kept.commit()
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        time.sleep(0.1)
        done = wf.complete_task(first.task_id, 1, lease_token=first.lease_token)
        assert done.state == "completed"
        assert "connection lost" in caplog.text  # and the call was run again
        second = wf.get_next_task("w")
        assert second is not None and second.task_id == "t1"
        replaced = wf._tx.kept()
        assert replaced is not None and replaced is not kept  # the thread keeps the new one
        assert replaced.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        replaced.commit()
    assert _new_states(manager, "completed") == {"t0": 1}
    assert manager.provenance.verify().ok


@pytest.mark.parametrize("store_kind", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_kept_connection_that_cannot_be_replaced(
    manager: Manager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg
    import sqlalchemy as sa

    from rubix_integration.errors import StoreUnavailableError

    wf = manager.workflow
    wf.submit_task("t", "job", None)
    with wf.keep_connection():
        kept = wf._tx.kept()
        assert kept is not None
        pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        kept.commit()
        with manager.store.engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        time.sleep(0.1)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise psycopg.OperationalError("connection refused (test)")

        monkeypatch.setattr(psycopg, "connect", refuse)
        manager.store.engine.pool.dispose()
        with pytest.raises(StoreUnavailableError, match="could not be replaced"):
            wf.get_next_task("w")
        monkeypatch.undo()
        task = wf.get_next_task("w")  # the server is back: a new connection is made
        assert task is not None and task.task_id == "t" and task.attempts == 1


def test_text_and_scalar_payloads(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_task("s", "job", "some text")
    wf.submit_task("n", "job", 7)
    assert wf.get_task_status("s").data == "some text"
    tasks = {t.task_id: t for t in wf.get_next_tasks("w", limit=2)}
    assert tasks["s"].data == "some text" and tasks["n"].data == 7
    done = wf.complete_task("s", "a text result", lease_token=tasks["s"].lease_token)
    assert done.result == "a text result"
    (other,) = wf.complete_tasks([{"task_id": "n", "result": "x",
                                   "lease_token": tasks["n"].lease_token}])
    assert isinstance(other, Task) and other.result == "x"
    assert wf.get_task_status("n").result == "x"


def test_two_callers_completing_the_same_batch_in_opposite_orders(manager: Manager) -> None:
    """Rows are locked in one order whatever the order given: no deadlock, one result each."""
    wf = manager.workflow
    errors: list[BaseException] = []
    accepted: collections.Counter[str] = collections.Counter()
    for rnd in range(15):
        ids = [f"r{rnd}-{i:02d}" for i in range(64)]
        wf.submit_tasks({"task_id": t, "task_type": "job"} for t in ids)
        assert len(wf.get_next_tasks("w", limit=64)) == 64
        barrier = threading.Barrier(2)

        def complete(order: list[str], barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=10)
                out = wf.complete_tasks([{"task_id": t, "result": t} for t in order])
                accepted.update(o.task_id for o in out if isinstance(o, Task))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=complete, args=(order,))
                   for order in (ids, ids[::-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
    assert len(accepted) == 15 * 64 and set(accepted.values()) == {1}
    assert _new_states(manager, "completed") == accepted


def test_the_manager_claims_and_completes_batches(manager: Manager) -> None:
    manager.submit_task("a", "job", {"n": 1}, priority=1)
    manager.submit_task("b", "job", {"n": 2})
    claimed = manager.get_next_tasks("w", limit=5)
    assert [t.task_id for t in claimed] == ["a", "b"]
    out = manager.complete_tasks(
        [{"task_id": t.task_id, "result": t.data["n"] * 10, "lease_token": t.lease_token}
         for t in claimed] + [{"task_id": "nope", "result": None}], worker_id="w")
    assert [o.result for o in out[:2] if isinstance(o, Task)] == [10, 20]
    assert isinstance(out[2], TaskNotFoundError)
    assert manager.get_next_tasks("w", limit=5) == []


# --- reporting and claiming in one step, and the records of batch operations ----------------------


def test_complete_and_claim_reports_each_result_then_claims(manager: Manager) -> None:
    wf = manager.workflow
    wf.submit_tasks([{"task_id": t, "task_type": "job", "data": {"id": t}, "priority": p}
                     for t, p in [("a", 9), ("b", 8), ("c", 7), ("d", 6), ("e", 5), ("f", 4)]])
    held = wf.get_next_tasks("w", limit=3)
    assert [t.task_id for t in held] == ["a", "b", "c"]
    results: list[dict[str, Any]] = [
        {"task_id": "a", "result": {"n": 1}, "lease_token": held[0].lease_token},
        {"task_id": "b", "result": 2, "lease_token": "not-the-token"},
        {"task_id": "zz", "result": 3, "lease_token": "x"},
        {"task_id": "c", "result": [3], "lease_token": held[2].lease_token},
    ]
    outcomes, claimed = wf.complete_and_claim(results, "w", limit=2)
    a, b, zz, c = outcomes
    assert isinstance(a, Task) and a.state == "completed" and a.result == {"n": 1}
    assert isinstance(b, LeaseLostError) and isinstance(zz, TaskNotFoundError)
    assert isinstance(c, Task) and c.result == [3]
    assert [t.task_id for t in claimed] == ["d", "e"]
    assert all(t.state == "running" and t.worker_id == "w" and t.attempts == 1 for t in claimed)
    assert wf.get_task_status("b").state == "running"  # refused: unchanged
    assert _transitions(manager, "a") == [(None, "pending"), ("pending", "running"),
                                          ("running", "completed")]
    assert _transitions(manager, "d") == [(None, "pending"), ("pending", "running")]
    # the bare call of the claimer completes what it claimed in the same step
    outcomes, claimed = wf.complete_and_claim(
        [{"task_id": "d", "result": None}, {"task_id": "e", "result": None}], "w", limit=5)
    assert [o.state for o in outcomes if isinstance(o, Task)] == ["completed", "completed"]
    assert [t.task_id for t in claimed] == ["f"]
    assert wf.complete_and_claim([], "w", limit=5) == ([], [])
    assert manager.workflow.counts()["completed"] == 4
    assert manager.provenance.verify().ok


def test_a_batch_operation_is_one_record_that_expands_to_the_changes_of_its_tasks(
    manager: Manager,
) -> None:
    from rubix_integration.codecs import dagjson
    from rubix_integration.workflow.states import BATCH_RECORD, expand, record_data

    wf = manager.workflow
    wf.submit_tasks([{"task_id": f"t{i}", "task_type": "job", "data": {"i": i}}
                     for i in range(5)])
    wf.submit_task("one", "job")
    held = wf.get_next_tasks("w", limit=5)
    single = wf.get_next_task("w")
    assert single is not None and single.task_id == "one"
    done = wf.complete_tasks([{"task_id": t.task_id, "result": {"r": t.task_id},
                               "lease_token": t.lease_token} for t in held])
    wf.complete_task("one", {"r": "one"}, lease_token=single.lease_token)
    batches = manager.query_logs({"type": BATCH_RECORD}, newest_first=False, limit=None)
    assert [r.data["new_state"] for r in batches] == ["pending", "running", "completed"]
    assert all(r.data["task_ids"] == [f"t{i}" for i in range(5)] for r in batches)
    completion = batches[-1]
    # what each task's own record would have held, exactly
    for task, change in zip(done, expand(completion.type, completion.data), strict=True):
        assert isinstance(task, Task)
        assert change == record_data(task, "running")
        assert str(change["result"]) == dagjson.cid_text_for_block(dagjson.encode(task.result))
    (own,) = manager.query_logs({"type": "task_state", "data.task_id": "one",
                                 "data.new_state": "completed"}, limit=None)
    assert expand(own.type, own.data) == [own.data]
    assert set(own.data) == set(expand(completion.type, completion.data)[0])
    assert expand("operation", {"task_ids": ["x"]}) == []
    assert manager.provenance.verify().ok
