"""``rubix-integration tasks …``: submit, list, inspect, cancel and run workflow tasks."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from rubix_integration.cli._common import Group, json_option, make_manager, store_option
from rubix_integration.errors import PluginError

__all__ = ["tasks"]


def _print_task(task: Any, as_json: bool) -> None:
    data = task.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("task_id", "task_type", "state", "priority", "tags", "attempts", "max_attempts",
                "worker_id", "lease_expires_at", "created_at", "updated_at", "finished_at",
                "error", "data", "result"):
        value = data[key]
        if value in (None, [], ""):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{key:>16}: {value}")


@click.group(cls=Group)
def tasks() -> None:
    """Workflow tasks shared by workers on many machines (see `tasks worker`).

    Tags: NAME requires the worker capability NAME; NAME_PREFERRED prefers it (other workers
    take the task after it waited 30 s); tags with a ':' are labels.
    """


@tasks.command("submit")
@store_option
@json_option
@click.argument("task_id")
@click.argument("task_type")
@click.option("--data", "data_text", default=None, help="Task data as JSON text.")
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Read the task data (JSON) from a file ('-' not supported).")
@click.option("--priority", type=int, default=0, show_default=True,
              help="Higher runs first.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable): GPU, GPU_PREFERRED, a:b.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Attempts before the task is dead (default 3).")
@click.option("--delay", type=click.FloatRange(min=0), default=None,
              help="Claimable only this many seconds from now.")
@click.option("--run-at", default=None, metavar="ISO-TIME",
              help="Claimable only from this time on (ISO 8601 with a time zone).")
def submit(store_url: str | None, as_json: bool, task_id: str, task_type: str,
           data_text: str | None, data_file: Path | None, priority: int, tags: tuple[str, ...],
           max_attempts: int | None, delay: float | None, run_at: str | None) -> None:
    """Queue TASK_ID of TASK_TYPE (again with the same content: no change)."""
    if data_text is not None and data_file is not None:
        raise click.UsageError("give --data or --data-file, not both")
    raw = data_file.read_text() if data_file is not None else data_text
    try:
        data = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    when = None
    if run_at is not None:
        from datetime import datetime

        try:
            when = datetime.fromisoformat(run_at)
        except ValueError as exc:
            raise click.BadParameter(f"not an ISO 8601 time: {run_at!r}",
                                     param_hint="--run-at") from exc
    with make_manager(store_url=store_url) as manager:
        task = manager.submit_task(task_id, task_type, data, priority=priority, tags=list(tags),
                                   max_attempts=max_attempts, run_at=when, delay=delay)
    _print_task(task, as_json)


@tasks.command("list")
@store_option
@json_option
@click.option("--state", "states", multiple=True, help="Only these states (repeatable).")
@click.option("--type", "task_type", default=None, help="Only this task type.")
@click.option("--tag", default=None, help="Only tasks carrying this tag.")
@click.option("--worker", "worker_id", default=None, help="Only tasks held or run by a worker.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def list_(store_url: str | None, as_json: bool, states: tuple[str, ...], task_type: str | None,
          tag: str | None, worker_id: str | None, limit: int) -> None:
    """List tasks, oldest first."""
    filters: dict[str, Any] = {}
    if states:
        filters["state"] = list(states)
    if task_type:
        filters["task_type"] = task_type
    if tag:
        filters["tag"] = tag
    if worker_id:
        filters["worker_id"] = worker_id
    with make_manager(store_url=store_url) as manager:
        try:
            found = manager.list_tasks(filters, limit=limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Tasks ({len(found)})", title_justify="left")
    for col in ("task_id", "type", "state", "priority", "attempts", "worker", "tags"):
        table.add_column(col, overflow="fold")
    for t in found:
        table.add_row(t.task_id, t.task_type, t.state, str(t.priority),
                      f"{t.attempts}/{t.max_attempts}", t.worker_id or "", ", ".join(t.tags))
    Console().print(table)


@tasks.command("status")
@store_option
@json_option
@click.argument("task_id")
def status(store_url: str | None, as_json: bool, task_id: str) -> None:
    """Show one task."""
    with make_manager(store_url=store_url) as manager:
        task = manager.get_task_status(task_id)
    _print_task(task, as_json)


@tasks.command("cancel")
@store_option
@json_option
@click.argument("task_id")
@click.option("--reason", default=None, help="Recorded as the task's error.")
@click.option("--force", is_flag=True,
              help="Also cancel a running task, which a worker holds: an operator's override, "
                   "logged and marked in the task's provenance record.")
@click.option("--abort", is_flag=True,
              help="Cancel a running task and tell its worker now: its handler sees the "
                   "cancellation (workflow.cancelled()) and its result is refused. Implies "
                   "--force.")
def cancel(store_url: str | None, as_json: bool, task_id: str, reason: str | None,
           force: bool, abort: bool) -> None:
    """Cancel a task that has not finished.

    A running task is held by a worker: cancelling it needs --force (or --abort), and the
    worker's result is then refused; its handler is told (at once on PostgreSQL, at its next
    heartbeat elsewhere).
    """
    with make_manager(store_url=store_url) as manager:
        task = manager.cancel_task(task_id, reason=reason or ("aborted" if abort else None),
                                   force=force or abort)
    _print_task(task, as_json)


@tasks.command("resubmit")
@store_option
@json_option
@click.argument("task_id")
def resubmit(store_url: str | None, as_json: bool, task_id: str) -> None:
    """Queue a dead or cancelled task again."""
    with make_manager(store_url=store_url) as manager:
        task = manager.workflow.resubmit_task(task_id)
    _print_task(task, as_json)


@tasks.command("worker")
@store_option
@click.option("--handler", "handler_path", default=None, metavar="MODULE:FUNCTION",
              help="Run every task type with this function (default: handlers registered by "
                   "plugins through register_task_handlers).")
@click.option("--capabilities", default="", metavar="A,B",
              help="Capabilities of this worker, comma-separated (e.g. GPU,CUDA).")
@click.option("--worker-id", default=None, help="Default: host:pid.")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Lease length in seconds; heartbeats every third of it.")
@click.option("--poll", "poll_interval", type=click.FloatRange(min=0.01), default=0.5,
              show_default=True, help="Seconds between claims when the queue is empty.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1, max=1000), default=1,
              show_default=True,
              help="Claim up to this many tasks at a time and report their results together: "
                   "faster for many short tasks; the tasks of a batch wait for each other.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None,
              help="Stop after this many tasks.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once nothing is left to claim.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --exit-when-idle: how long to wait for new tasks first.")
@click.option("--schedule", "schedules", multiple=True, metavar="NAME:TYPE:CRON",
              help="Submit a TYPE task once per period of CRON (5 fields, or 6 with seconds "
                   "last), e.g. 'nightly:cleanup:0 3 * * *' (repeatable). Give the same "
                   "schedules to every worker: each period runs once.")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--limit", "limits", multiple=True, metavar="TYPE=N",
              help="Run at most N tasks of TYPE at once across all workers (repeatable; give "
                   "every worker the same limits).")
def worker(store_url: str | None, handler_path: str | None, capabilities: str,
           worker_id: str | None, lease_seconds: float, poll_interval: float,
           batch_size: int, max_tasks: int | None, exit_when_idle: bool,
           idle_timeout: float, schedules: tuple[str, ...], metrics_port: int | None,
           limits: tuple[str, ...]) -> None:
    """Claim and run tasks until stopped.

    Ctrl-C (or SIGTERM) once: finish the current task, then stop. Twice: interrupt it and give
    it back to the queue. Either way, the tasks of a --batch not started yet go back to the
    queue (their attempt not counted); they stay leased, with heartbeats, while they wait.
    """
    from rubix_integration.workflow import Worker, WorkflowCoordinator, load_handler
    from rubix_integration.workflow.worker import collect_handlers

    with make_manager(store_url=store_url) as manager:
        handlers: Any
        if handler_path:
            try:
                handlers = load_handler(handler_path)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--handler") from exc
        else:
            handlers = collect_handlers(manager)
            if not handlers:
                raise PluginError("no --handler given and no plugin registers task handlers")
        coordinator = WorkflowCoordinator(manager, lease_seconds=lease_seconds)
        for spec in schedules:
            name, _, rest = spec.partition(":")
            task_type, _, cron = rest.partition(":")
            if not name or not task_type or not cron:
                raise click.BadParameter(f"{spec!r} is not NAME:TYPE:CRON",
                                         param_hint="--schedule")
            coordinator.add_schedule(name, cron.strip(), task_type)
        for spec in limits:
            task_type, _, most = spec.rpartition("=")
            if not task_type or not most.isdigit() or int(most) < 1:
                raise click.BadParameter(f"{spec!r} is not TYPE=N (N >= 1)",
                                         param_hint="--limit")
            coordinator.set_limit(task_type, int(most))
        server = None
        if metrics_port is not None:
            from rubix_integration.workflow import metrics

            server = metrics.serve(coordinator, metrics_port)
        runner = Worker(coordinator, handlers, worker_id=worker_id, capabilities=capabilities,
                        poll_interval=poll_interval, batch_size=batch_size)

        def first_stop(signum: int, frame: FrameType | None) -> None:
            click.echo(f"{runner.worker_id}: stopping after the current task "
                       "(Ctrl-C again to interrupt it)", err=True)
            runner.stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, first_stop)
        signal.signal(signal.SIGTERM, first_stop)
        click.echo(f"{runner.worker_id}: working (capabilities: {capabilities or 'none'})",
                   err=True)
        try:
            stats = runner.run(max_tasks=max_tasks, exit_when_idle=exit_when_idle,
                               idle_timeout=idle_timeout)
        except KeyboardInterrupt:  # between tasks: what is held is left to its lease
            stats = runner.stats
        finally:
            if server is not None:
                server.shutdown()
            coordinator.close()
        click.echo(f"{runner.worker_id}: claimed {stats.claimed}, completed {stats.completed}, "
                   f"failed {stats.failed}, refused {stats.lost}, released {stats.released}",
                   err=True)
    sys.stdout.flush()


@tasks.command("metrics")
@store_option
def metrics_(store_url: str | None) -> None:
    """Print the queue's metrics in Prometheus' text format."""
    from rubix_integration.workflow import metrics

    with make_manager(store_url=store_url) as manager:
        click.echo(metrics.render(manager.workflow).decode(), nl=False)


@tasks.command("top")
@store_option
@click.option("--once", is_flag=True, help="Print one view and exit (also when not a terminal).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--limit", type=click.IntRange(min=1), default=15, show_default=True,
              help="Running tasks shown.")
def top(store_url: str | None, once: bool, interval: float, limit: int) -> None:
    """A live view of the queue: tasks by type and state, and the running tasks with their
    workers. Ctrl-C leaves."""
    import time

    from rich.console import Console
    from rich.console import Group as RichGroup
    from rich.live import Live
    from rich.table import Table

    from rubix_integration.codecs.clock import now_us
    from rubix_integration.workflow.states import STATES

    console = Console()

    def view(manager: Any) -> Any:
        counts = manager.workflow.counts_by_type()
        queue = Table(title="tasks by type and state")
        queue.add_column("task type")
        for state in STATES:
            queue.add_column(state, justify="right")
        types = sorted({t for t, _ in counts})
        for task_type in types:
            queue.add_row(task_type, *(str(counts.get((task_type, s), 0)) for s in STATES))
        queue.add_row("[b]all[/b]", *(str(sum(counts.get((t, s), 0) for t in types))
                                      for s in STATES))
        running = Table(title="running")
        for name in ("task", "type", "worker", "attempt", "running for", "lease left"):
            running.add_column(name)
        now = now_us()
        for task in manager.workflow.list_tasks({"state": "running"}, limit=limit):
            lease = (task.lease_expires_at_us or now) - now
            running.add_row(task.task_id, task.task_type, task.worker_id or "",
                            f"{task.attempts}/{task.max_attempts}",
                            f"{(now - task.updated_at_us) / 1e6:.1f}s", f"{lease / 1e6:.1f}s")
        return RichGroup(queue, running)

    with make_manager(store_url=store_url) as manager:
        if once or not console.is_terminal:
            console.print(view(manager))
            return
        try:
            with Live(view(manager), console=console, refresh_per_second=4) as live:
                while True:
                    time.sleep(interval)
                    live.update(view(manager))
        except KeyboardInterrupt:
            pass
