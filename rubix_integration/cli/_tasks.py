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
def submit(store_url: str | None, as_json: bool, task_id: str, task_type: str,
           data_text: str | None, data_file: Path | None, priority: int, tags: tuple[str, ...],
           max_attempts: int | None) -> None:
    """Queue TASK_ID of TASK_TYPE (again with the same content: no change)."""
    if data_text is not None and data_file is not None:
        raise click.UsageError("give --data or --data-file, not both")
    raw = data_file.read_text() if data_file is not None else data_text
    try:
        data = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    with make_manager(store_url=store_url) as manager:
        task = manager.submit_task(task_id, task_type, data, priority=priority, tags=list(tags),
                                   max_attempts=max_attempts)
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
def cancel(store_url: str | None, as_json: bool, task_id: str, reason: str | None,
           force: bool) -> None:
    """Cancel a task that has not finished.

    A running task is held by a worker: cancelling it needs --force, and the worker's result
    is then refused.
    """
    with make_manager(store_url=store_url) as manager:
        task = manager.cancel_task(task_id, reason=reason, force=force)
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
def worker(store_url: str | None, handler_path: str | None, capabilities: str,
           worker_id: str | None, lease_seconds: float, poll_interval: float,
           batch_size: int, max_tasks: int | None, exit_when_idle: bool,
           idle_timeout: float) -> None:
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
        click.echo(f"{runner.worker_id}: claimed {stats.claimed}, completed {stats.completed}, "
                   f"failed {stats.failed}, refused {stats.lost}, released {stats.released}",
                   err=True)
    sys.stdout.flush()
