"""Worker processes on real stores: draining a queue, and a worker killed while it holds a task."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rubix_integration import Manager
from tests.workflow_handlers import task_changes

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _worker(store_url: str, log_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["RUBIX_TEST_HANDLER_LOG"] = str(log_dir)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "rubix_integration", "tasks", "worker", "--store", store_url,
         *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
            errors.append(f"worker {proc.pid} timed out: {err.decode()[-2000:]}")
            continue
        if proc.returncode != 0:
            errors.append(f"worker {proc.pid} exited {proc.returncode}: {err.decode()[-2000:]}")
    return errors


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _runs(log_dir: Path) -> collections.Counter[str]:
    runs: collections.Counter[str] = collections.Counter()
    for path in log_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            runs[line.split()[0]] += 1
    return runs


def _completions(manager: Manager) -> collections.Counter[str]:
    return collections.Counter(c["task_id"]
                               for c in task_changes(manager, new_state="completed"))


@pytest.mark.parametrize(("store_kind", "tasks", "workers", "batch"), [
    pytest.param("postgresql", 10_000, 8, 1, marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("postgresql", 10_000, 8, 16, marks=pytest.mark.postgres,
                 id="postgresql-batch"),
    pytest.param("sqlite", 1_000, 4, 1, id="sqlite"),
    pytest.param("sqlite", 1_000, 4, 8, id="sqlite-batch"),
])
def test_workers_drain_the_queue_each_task_completed_exactly_once(
    store_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], tasks: int,
    workers: int, batch: int,
) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    with Manager(store_url=store_url) as manager:
        created = manager.workflow.submit_tasks(
            {"task_id": f"t{i:05d}", "task_type": "echo", "data": {"i": i},
             "priority": i % 3} for i in range(tasks))
        assert created == tasks
        started = time.monotonic()
        cleanup.extend(_worker(store_url, log_dir, "--handler", "tests.workflow_handlers:echo",
                               "--exit-when-idle", "--idle-timeout", "1", "--poll", "0.05",
                               "--batch", str(batch))
                       for _ in range(workers))
        errors = _wait_all(cleanup, timeout=150)
        elapsed = time.monotonic() - started
        assert not errors, errors
        counts = manager.workflow.counts()
        assert counts["completed"] == tasks, counts
        done = manager.list_tasks({"state": "completed"}, limit=None)
        assert {t.task_id for t in done} == {f"t{i:05d}" for i in range(tasks)}
        assert all(t.attempts == 1 for t in done)
        assert all(t.result["echo"] == {"i": int(t.task_id[1:])} for t in done)
        # every handler ran once, and exactly one completion per task was accepted
        runs = _runs(log_dir)
        assert len(runs) == tasks and set(runs.values()) == {1}
        completions = _completions(manager)
        assert len(completions) == tasks and set(completions.values()) == {1}
        pids = {t.result["pid"] for t in done}
        assert len(pids) > 1, "the work was not shared"
        assert manager.provenance.verify().ok
    print(f"\n{workers} workers (batch {batch}) drained {tasks} tasks in {elapsed:.1f}s "
          f"({tasks / elapsed:.0f}/s)")


@pytest.mark.parametrize("batch", [1, 3])
def test_killed_worker_task_is_claimed_again_after_its_lease(
    store_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], batch: int,
) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    # with a batch, the killed worker also held the tasks waiting behind the victim
    others = [f"waiting{i}" for i in range(1, batch)]
    with Manager(store_url=store_url) as manager:
        manager.submit_task("victim", "work", {"n": 1})
        for task_id in others:
            manager.submit_task(task_id, "work", {"n": 2})
        first = _worker(store_url, log_dir, "--handler", "tests.workflow_handlers:slow_once",
                        "--lease", "1.5", "--worker-id", "first", "--batch", str(batch))
        cleanup.append(first)
        deadline = time.monotonic() + 30
        while not (log_dir / "started").exists():
            assert time.monotonic() < deadline, "the first worker never started the task"
            time.sleep(0.05)
        # the worker heartbeats while the handler runs: the leases stay held past their length
        time.sleep(2.0)
        held = manager.get_task_status("victim")
        assert held.state == "running" and held.worker_id == "first"
        assert held.lease_expires_at_us is not None
        for task_id in others:
            waiting = manager.get_task_status(task_id)
            assert waiting.state == "running" and waiting.worker_id == "first"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.time()

        second = _worker(store_url, log_dir, "--handler", "tests.workflow_handlers:slow_once",
                         "--lease", "1.5", "--worker-id", "second", "--exit-when-idle",
                         "--idle-timeout", "6", "--poll", "0.1", "--batch", str(batch))
        cleanup.append(second)
        assert not _wait_all([second], timeout=60)
        task = manager.get_task_status("victim")
        assert task.state == "completed"
        assert task.worker_id == "second" and task.attempts == 2
        assert task.result["attempt"] == 2
        assert task.finished_at_us is not None
        assert task.finished_at_us / 1e6 >= held.lease_expires_at_us / 1e6 - 0.01
        assert task.finished_at_us / 1e6 >= killed_at
        for task_id in others:  # never started by the first worker; its claim counted
            other = manager.get_task_status(task_id)
            assert other.state == "completed" and other.worker_id == "second"
            assert other.attempts == 2
        assert _completions(manager) == {"victim": 1, **dict.fromkeys(others, 1)}
        runs = _runs(log_dir)
        assert runs["victim"] == 2 and all(runs[t] == 1 for t in others)


@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_finishes_or_releases_the_current_task(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], interrupts: int,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    with Manager(store_url=store_url) as manager:
        manager.submit_task("t", "work", {"seconds": 3})
        manager.submit_task("next", "work", {"seconds": 3})
        proc = _worker(store_url, log_dir, "--handler", "tests.workflow_handlers:slow",
                       "--worker-id", "w")
        cleanup.append(proc)
        deadline = time.monotonic() + 30
        while not (log_dir / "started").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(interrupts):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        assert not _wait_all([proc], timeout=30)
        task = manager.get_task_status("t")
        if interrupts == 1:
            assert task.state == "completed" and task.result == {"slept": True}
        else:
            assert task.state == "pending" and task.attempts == 0 and task.worker_id == "w"
        # the worker stopped instead of taking the next task
        assert manager.get_task_status("next").state == "pending"


def _claims(manager: Manager) -> collections.Counter[str]:
    return collections.Counter(c["task_id"] for c in task_changes(manager, new_state="running"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("store_kind", "tasks", "workers", "kills"), [
    pytest.param("postgresql", 400, 8, 3, marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("sqlite", 150, 4, 2, id="sqlite"),
])
def test_exactly_once_while_workers_are_killed_mid_batch(
    store_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]], tasks: int,
    workers: int, kills: int,
) -> None:
    import random

    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    rng = random.Random(7)
    args = ("--handler", "tests.workflow_handlers:brief", "--batch", "4", "--lease", "1.0",
            "--poll", "0.05")
    with Manager(store_url=store_url) as manager:
        manager.submit_tasks({"task_id": f"k{i:04d}", "task_type": "brief",
                              "data": {"seconds": 0.02}} for i in range(tasks))
        crew = [_worker(store_url, log_dir, *args) for _ in range(workers)]
        cleanup.extend(crew)
        killed: list[subprocess.Popen[bytes]] = []
        deadline = time.monotonic() + 120
        for victim in rng.sample(crew, kills):
            # kill each victim once it has run a task: it holds the rest of its batch then
            while not (log_dir / f"{victim.pid}.log").exists():
                assert time.monotonic() < deadline, "a worker never ran a task"
                assert victim.poll() is None, victim.stderr.read().decode()[-2000:] \
                    if victim.stderr else "exited"
                time.sleep(0.02)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            killed.append(victim)
        while manager.workflow.counts()["completed"] < tasks:
            assert time.monotonic() < deadline, manager.workflow.counts()
            time.sleep(0.2)
        for proc in crew:
            if proc not in killed:
                proc.send_signal(signal.SIGTERM)
        assert not _wait_all([p for p in crew if p not in killed], timeout=60)
        done = manager.list_tasks({"state": "completed"}, limit=None)
        assert len(done) == tasks and manager.workflow.counts()["completed"] == tasks
        completions = _completions(manager)
        assert len(completions) == tasks and set(completions.values()) == {1}
        claims = _claims(manager)
        # every claim counted as an attempt: a killed worker's tasks were claimed again
        assert {t.task_id: t.attempts for t in done} == dict(claims)
        retried = [t for t in done if t.attempts > 1]
        assert retried, "no killed worker held a task"
        runs = _runs(log_dir)
        assert set(runs) == {t.task_id for t in done}
        # a handler ran more than once only for a task claimed more than once
        assert all(runs[t.task_id] <= t.attempts for t in done)
        assert manager.provenance.verify().ok
    print(f"\n{workers} workers, {kills} killed: {len(retried)} tasks claimed again")


@pytest.mark.timeout(120)
def test_periodic_task_runs_once_per_period_under_four_workers(
    store_url: str, tmp_path: Path, cleanup: list[subprocess.Popen[bytes]],
) -> None:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    with Manager(store_url=store_url) as manager:
        crew = [_worker(store_url, log_dir, "--handler", "tests.workflow_handlers:echo",
                        "--poll", "0.05", "--schedule", "tick:tick:* * * * * *")
                for _ in range(4)]
        cleanup.extend(crew)
        deadline = time.monotonic() + 60
        while len(_runs(log_dir)) < 5:  # five periods run, the crew started by then
            assert time.monotonic() < deadline, "the schedule did not run"
            assert all(p.poll() is None for p in crew)
            time.sleep(0.1)
        time.sleep(1.5)
        for proc in crew:
            proc.send_signal(signal.SIGTERM)
        assert not _wait_all(crew, timeout=60)
        ticks = manager.list_tasks({"task_type": "tick"}, limit=None)
        periods = sorted(int(t.task_id.rsplit(":", 1)[1]) for t in ticks)
        assert len(periods) >= 5
        assert periods == list(range(periods[0], periods[-1] + 1))  # every second, no gap
        assert all(t.state == "completed" and t.attempts == 1 for t in ticks)
        runs = _runs(log_dir)
        assert set(runs.values()) == {1} and set(runs) == {t.task_id for t in ticks}
        assert set(_completions(manager).values()) == {1}
        assert len({t.result["pid"] for t in ticks}) > 1, "one worker did all the periods"
