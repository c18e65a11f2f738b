"""The queue's round trips, bulk and delayed submits, submits in the caller's transaction,
wake-ups, cancellation reaching the handler, periodic tasks, metrics and ``tasks top``."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rubix_integration import Manager
from rubix_integration.cli import cli
from rubix_integration.errors import InvalidDataError, TaskNotFoundError, TaskStateError
from rubix_integration.testing.roundtrips import RoundTripCounter
from rubix_integration.workflow import Worker, WorkflowCoordinator, cancellation, cancelled
from tests.workflow_handlers import task_changes

pytestmark = pytest.mark.timeout(120)


# --- counting round trips --------------------------------------------------------------------


@pytest.fixture
def counted_url(pg_database: str) -> Iterator[tuple[str, RoundTripCounter]]:
    with RoundTripCounter(pg_database) as relay:
        yield relay.url, relay


def _quiet_upkeep(manager: Manager) -> None:
    """Put off the once-a-second upkeep (the sweep of expired leases, the move of the change
    version sequence up to the store's clock) for the measurement: it is counted apart."""
    later = time.monotonic() + 3600
    manager.workflow._last_sweep = later
    manager.store.store_clock._synced["workflow_tasks_change_version_seq"] = later


def _trips(relay: RoundTripCounter, call: Any) -> tuple[Any, int]:
    time.sleep(0.05)  # nothing in flight
    before = relay.measure()
    out = call()
    time.sleep(0.05)  # the relay has passed the last answer on
    return out, relay.measure() - before


@pytest.mark.postgres
def test_round_trips_of_submit_claim_and_complete_on_postgresql(
        counted_url: tuple[str, RoundTripCounter]) -> None:
    url, relay = counted_url
    with Manager(store_url=url, load_plugins=()) as manager:
        wf = manager.workflow
        wf.submit_task("warm", "job", {"i": 0})  # schema, node id, chain head, own connection
        warm = wf.get_next_task("w")
        assert warm is not None
        wf.complete_task(warm.task_id, {"ok": True})
        _quiet_upkeep(manager)
        measured: dict[str, list[int]] = collections.defaultdict(list)
        for i in range(5):
            task, n = _trips(relay, lambda i=i: wf.submit_task(f"t{i}", "job", {"i": i}))
            assert task.state == "pending"
            measured["submit"].append(n)
            claimed, n = _trips(relay, lambda: wf.get_next_task("w"))
            assert claimed is not None and claimed.task_id == f"t{i}"
            measured["claim"].append(n)
            done, n = _trips(relay, lambda c=claimed: wf.complete_task(
                c.task_id, {"ok": True}, lease_token=c.lease_token))
            assert done.state == "completed"
            measured["complete"].append(n)
        _, n = _trips(relay, lambda: wf.submit_task("t0", "job", {"i": 0}))  # exists already
        measured["submit again"].append(n)
        _, n = _trips(relay, lambda: wf.get_next_task("w"))  # nothing to claim
        measured["empty claim"].append(n)
        assert max(measured["submit"]) <= 2, measured  # one statement
        assert max(measured["claim"]) <= 3, measured  # two pipelines
        assert max(measured["complete"]) <= 2, measured  # two pipelines
        assert max(measured["submit again"]) <= 2, measured
        assert max(measured["empty claim"]) <= 2, measured
        # the provenance was recorded in those round trips, and the chain holds
        states = [r.data["new_state"] for r in manager.query_logs(
            {"type": "task_state", "data.task_id": "t3"}, limit=None)]
        assert sorted(states) == ["completed", "pending", "running"]
        assert manager.provenance.verify().ok
        print(f"\nround trips: {dict(measured)}")


@pytest.mark.postgres
def test_a_refused_completion_says_why_in_the_same_round_trips(
        counted_url: tuple[str, RoundTripCounter]) -> None:
    url, relay = counted_url
    with Manager(store_url=url, load_plugins=()) as manager:
        wf = manager.workflow
        wf.submit_task("a", "job")
        task = wf.get_next_task("w")
        assert task is not None
        wf.cancel_task("a", force=True)
        _quiet_upkeep(manager)
        outcome, n = _trips(relay, lambda: wf.complete_tasks(
            [{"task_id": "a", "result": 1, "lease_token": task.lease_token},
             {"task_id": "nope", "result": 1, "lease_token": "x" * 32}]))
        assert isinstance(outcome[0], TaskStateError) and outcome[0].state == "cancelled"
        assert isinstance(outcome[1], TaskNotFoundError)
        assert n <= 2
        assert manager.provenance.verify().ok


# --- submitting --------------------------------------------------------------------------------


def test_bulk_submit_is_public_and_skips_existing_ids(manager: Manager) -> None:
    manager.submit_task("t3", "job", {"i": 3})
    rows = [{"task_id": f"t{i}", "task_type": "job", "data": {"i": i, "b": b"\x00\xff"},
             "priority": i % 3, "tags": ["x:y"]} for i in range(40)]
    rows.append({"task_id": "t5", "task_type": "job", "data": {"dup": True}})  # twice: first wins
    assert manager.submit_tasks(rows) == 39
    assert manager.submit_tasks(rows) == 0
    task = manager.get_task_status("t7")
    assert task.data == {"i": 7, "b": b"\x00\xff"} and task.priority == 1
    assert task.tags == ("x:y",) and task.state == "pending"
    assert manager.get_task_status("t5").data["i"] == 5
    assert collections.Counter(c["task_id"] for c in task_changes(
        manager, new_state="pending")) == {f"t{i}": 1 for i in range(40)}
    # the bulk submit is one record naming the 39 tasks it created, in the order given
    (bulk,) = manager.query_logs({"type": "task_states"}, limit=None)
    assert bulk.data["task_ids"] == [f"t{i}" for i in range(40) if i != 3]
    assert bulk.data["new_state"] == "pending" and set(bulk.data["old_states"]) == {None}
    assert manager.workflow.counts()["pending"] == 40
    assert manager.provenance.verify().ok
    with pytest.raises(InvalidDataError):
        manager.submit_tasks([{"task_id": "", "task_type": "job"}])


def test_delayed_tasks_are_claimed_only_when_due(manager: Manager) -> None:
    wf = manager.workflow
    start = time.monotonic()
    wf.submit_task("later", "job", delay=3.0)
    wf.submit_task("much-later", "job", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    wf.submit_task("epoch", "job", run_at=time.time() - 5)
    bulk_at = time.monotonic()
    wf.submit_tasks([{"task_id": f"bulk{i}", "task_type": "job", "delay": 3.0}
                     for i in range(20)])
    first = wf.get_next_task("w")
    assert first is not None and first.task_id == "epoch"
    assert wf.get_next_task("w") is None
    assert time.monotonic() - start < 3.0, "too slow to tell: the delay passed already"
    time.sleep(max(0.0, bulk_at + 3.3 - time.monotonic()))
    got = {t.task_id for t in wf.get_next_tasks("w", limit=50)}
    assert got == {"later", *(f"bulk{i}" for i in range(20))}
    assert wf.get_task_status("much-later").state == "pending"
    for bad in ({"delay": -1}, {"delay": float("nan")}, {"run_at": datetime(2030, 1, 1)},
                {"run_at": "tomorrow"}, {"run_at": time.time(), "delay": 1}):
        with pytest.raises(InvalidDataError):
            wf.submit_task("bad", "job", **bad)
    with pytest.raises(TaskNotFoundError):
        wf.get_task_status("bad")


@pytest.mark.parametrize("use_session", [False, True])
def test_a_task_submitted_in_a_rolled_back_host_transaction_never_runs(
        manager: Manager, use_session: bool) -> None:
    from sqlalchemy.orm import Session

    store = manager.store
    host = sa.Table("host_orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    host.create(store.engine)
    wf = manager.workflow

    def submit(conn: Any, order: int, task_id: str) -> None:
        target = conn.connection() if isinstance(conn, Session) else conn
        target.execute(sa.insert(host).values(id=order))
        wf.submit_task(task_id, "ship", {"order": order}, connection=conn)
        if task_id.startswith("bulk"):
            wf.submit_tasks([{"task_id": f"{task_id}-{i}", "task_type": "ship"}
                             for i in range(20)], connection=conn)

    def run(commit: bool, order: int, task_id: str) -> None:
        if use_session:
            with Session(store.engine) as session:
                submit(session, order, task_id)
                session.commit() if commit else session.rollback()
        else:
            with store.engine.connect() as conn, conn.begin() as trans:
                submit(conn, order, task_id)
                if not commit:
                    trans.rollback()

    run(False, 1, "rolled-back")
    run(False, 2, "bulk-rolled-back")
    run(True, 3, "committed")
    with store.engine.connect() as conn:
        assert list(conn.execute(sa.select(host.c.id))) == [(3,)]
    ran: list[str] = []
    worker = Worker(wf, lambda t: ran.append(t.task_id), poll_interval=0.05)
    worker.run(exit_when_idle=True)
    assert ran == ["committed"]
    for gone in ("rolled-back", "bulk-rolled-back", "bulk-rolled-back-3"):
        with pytest.raises(TaskNotFoundError):
            wf.get_task_status(gone)
    records = manager.query_logs({"type": "task_state"}, limit=None)
    assert {r.data["task_id"] for r in records} == {"committed"}
    assert manager.provenance.verify().ok  # no chain points at a record rolled back


# --- wake-ups and cancellation -----------------------------------------------------------------


@pytest.mark.parametrize("store_kind", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_idle_worker_is_woken_by_a_submit(manager: Manager) -> None:
    wf = manager.workflow
    claimed_at: dict[str, int] = {}

    def handler(task: Any) -> None:
        from rubix_integration.codecs.clock import now_us

        claimed_at[task.task_id] = now_us() - task.created_at_us

    worker = Worker(wf, handler, poll_interval=60.0)  # polling alone would take a minute
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.listening.wait(10)
        time.sleep(0.3)  # idle now, waiting
        for i in range(5):
            wf.submit_task(f"t{i}", "job")
            deadline = time.monotonic() + 10
            while f"t{i}" not in claimed_at:
                assert time.monotonic() < deadline, "the idle worker was not woken"
                time.sleep(0.005)
        bulk = [{"task_id": f"b{i}", "task_type": "job"} for i in range(30)]
        wf.submit_tasks(bulk)
        deadline = time.monotonic() + 10
        while len(claimed_at) < 35:
            assert time.monotonic() < deadline, "a bulk submit did not wake the worker"
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(timeout=10)
    waits = sorted(v / 1000 for k, v in claimed_at.items() if k.startswith("t"))
    print(f"\nsubmission to claim (ms): {waits}")


def test_cancelling_a_running_task_reaches_its_handler(manager: Manager) -> None:
    wf = WorkflowCoordinator(manager, lease_seconds=0.9)  # heartbeats every 0.3 s
    started = threading.Event()
    seen: dict[str, Any] = {}

    def handler(task: Any) -> dict[str, str]:
        started.set()
        seen["told"] = cancellation().wait(15)
        seen["cancelled"] = cancelled()
        return {"finished": "anyway"}

    worker = Worker(wf, handler, poll_interval=0.05)
    wf.submit_task("long", "job")
    thread = threading.Thread(target=worker.run, kwargs={"max_tasks": 1}, daemon=True)
    thread.start()
    assert started.wait(15)
    task = manager.workflow.cancel_task("long", reason="not needed", force=True)
    assert task.state == "cancelled"
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert seen == {"told": True, "cancelled": True}
    assert cancelled() is False  # outside a handler
    after = manager.get_task_status("long")
    assert after.state == "cancelled" and after.result is None and after.error == "not needed"
    assert worker.stats.completed == 0 and worker.stats.lost == 1


def test_tasks_cancel_abort_on_the_command_line(manager: Manager, store_url: str) -> None:
    manager.submit_task("r", "job")
    assert manager.get_next_task("w") is not None
    runner = CliRunner()
    refused = runner.invoke(cli, ["tasks", "cancel", "--store", store_url, "r"])
    assert refused.exit_code == 1 and "force" in refused.output
    result = runner.invoke(cli, ["tasks", "cancel", "--store", store_url, "--abort", "--json",
                                 "r"])
    assert result.exit_code == 0, result.output
    assert '"state": "cancelled"' in result.output and '"error": "aborted"' in result.output


# --- periodic tasks ----------------------------------------------------------------------------


def test_schedules_submit_once_per_period_across_coordinators(manager: Manager) -> None:
    coordinators = [WorkflowCoordinator(manager) for _ in range(4)]
    for wf in coordinators:
        wf.add_schedule("tick", "* * * * * *", "tick", {"n": 1})
    base = float(int(time.time()))
    for second in range(3):
        for wf in coordinators:  # every worker runs its schedules at (about) the same time
            wf.run_schedules(now=base + second + 0.2)
            wf.run_schedules(now=base + second + 0.7)
    tasks = manager.list_tasks({"task_type": "tick"}, limit=None)
    assert sorted(t.task_id for t in tasks) == [
        f"schedule:tick:{int(base) + s}" for s in range(3)]
    assert coordinators[0].next_schedule_wait(5.0) <= 1.0
    with pytest.raises(InvalidDataError):
        coordinators[0].add_schedule("bad", "not cron", "tick")
    with pytest.raises(InvalidDataError):
        coordinators[0].add_schedule("a:b", "* * * * *", "tick")


# --- metrics and the live view -----------------------------------------------------------------


def test_metrics_and_tasks_top(manager: Manager, store_url: str) -> None:
    from rubix_integration.workflow import metrics

    wf = manager.workflow
    wf.submit_tasks([{"task_id": f"a{i}", "task_type": "alpha"} for i in range(3)])
    wf.submit_task("b0", "beta")
    Worker(wf, {"alpha": lambda t: None}, poll_interval=0.05).run(max_tasks=2)
    wf.submit_task("d0", "beta", priority=10, max_attempts=1)
    dead = wf.get_next_task("w", task_types=["beta"])
    assert dead is not None
    wf.fail_task(dead.task_id, "boom")
    text = metrics.render(wf).decode()
    assert 'rubix_workflow_tasks{state="completed",task_type="alpha"} 2.0' in text
    assert 'rubix_workflow_tasks{state="pending",task_type="alpha"} 1.0' in text
    assert 'rubix_workflow_tasks{state="dead",task_type="beta"} 1.0' in text
    assert 'rubix_workflow_tasks{state="pending",task_type="beta"} 1.0' in text
    assert "rubix_workflow_claim_latency_seconds_count" in text
    assert 'rubix_workflow_task_duration_seconds_count{task_type="alpha"}' in text
    runner = CliRunner()
    out = runner.invoke(cli, ["tasks", "metrics", "--store", store_url])
    assert out.exit_code == 0, out.output
    assert 'rubix_workflow_tasks{state="dead",task_type="beta"} 1.0' in out.output
    top = runner.invoke(cli, ["tasks", "top", "--store", store_url, "--once"])
    assert top.exit_code == 0, top.output
    assert "alpha" in top.output and "beta" in top.output and "completed" in top.output


# --- concurrency limits ------------------------------------------------------------------------


def test_a_concurrency_limit_holds_across_concurrent_claimers(manager: Manager) -> None:
    manager.submit_tasks([{"task_id": f"slow{i}", "task_type": "slow", "priority": 5}
                          for i in range(12)])
    manager.submit_tasks([{"task_id": f"fast{i}", "task_type": "fast"} for i in range(12)])
    claimers = [WorkflowCoordinator(manager) for _ in range(4)]
    for wf in claimers:
        wf.set_limit("slow", 3)
    assert claimers[0].limits == {"slow": 3}
    got: list[Any] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claim(wf: WorkflowCoordinator, n: int) -> None:
        try:
            for _ in range(4):
                tasks = wf.get_next_tasks(f"w{n}", limit=2)
                with lock:
                    got.extend(tasks)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(wf, n)) for n, wf in enumerate(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    running = manager.list_tasks({"state": "running"}, limit=None)
    by_type = collections.Counter(t.task_type for t in running)
    assert by_type == {"slow": 3, "fast": 12}  # never more slow ones, every fast one
    assert len(got) == 15 and len({t.task_id for t in got}) == 15
    # a slot comes free when one finishes; another claimer takes it then
    done = next(t for t in got if t.task_type == "slow")
    manager.workflow.complete_task(done.task_id, None, lease_token=done.lease_token, force=True)
    more = claimers[1].get_next_tasks("w9", limit=5)
    assert [t.task_type for t in more] == ["slow"]
    claimers[1].set_limit("slow", None)
    assert len(claimers[1].get_next_tasks("w9", limit=5)) == 5
    with pytest.raises(InvalidDataError):
        claimers[0].set_limit("slow", 0)


def test_submitting_twice_in_one_host_transaction(manager: Manager) -> None:
    from rubix_integration.errors import TaskConflictError

    wf = manager.workflow
    with manager.store.engine.connect() as conn, conn.begin():
        first = wf.submit_task("twice", "job", {"a": 1}, connection=conn)
        again = wf.submit_task("twice", "job", {"a": 1}, connection=conn)
        assert again.task_id == first.task_id and again.state == "pending"
        with pytest.raises(TaskConflictError):
            wf.submit_task("twice", "job", {"a": 2}, connection=conn)
    assert wf.get_task_status("twice").data == {"a": 1}
    with pytest.raises(InvalidDataError):
        wf.submit_task("x", "job", connection="not a connection")
