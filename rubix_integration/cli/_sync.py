"""The ``sync``, ``report`` and ``demo`` commands."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rubix_integration.cli._common import make_manager, store_option
from rubix_integration.tokens.discover import DEFAULT_PATTERN, NodeDatabase
from rubix_integration.tokens.report import REPORTS, ReportResult, run_report
from rubix_integration.tokens.results import DatabaseResult, SyncObserver, SyncSummary

if TYPE_CHECKING:
    from rubix_integration._manager import Manager
    from rubix_integration.tokens.sync import _SyncLogHandler

__all__ = ["demo", "report", "sync"]


class _RichProgress(SyncObserver):
    """A live display: databases, tokens, IPFS ok/failed, rate."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=_stderr_console(), transient=False,
        )
        self.dbs = self.progress.add_task("databases", total=None, detail="")
        self.tokens = self.progress.add_task("tokens", total=0, detail="")
        self.ok = 0
        self.failed = 0

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def discovered(self, databases: int, to_process: int) -> None:
        self.progress.update(self.dbs, total=databases,
                             detail=f"{databases - to_process} unchanged")

    def database_started(self, node: NodeDatabase, tokens: int) -> None:
        task = self.progress.tasks[self.tokens]
        self.progress.update(self.tokens, total=(task.total or 0) + tokens)

    def tokens_fetched(self, count: int, ok: int, failed: int) -> None:
        self.ok += ok
        self.failed += failed
        task = self.progress.tasks[self.tokens]
        rate = (task.completed + count) / task.elapsed if task.elapsed else 0.0
        self.progress.update(self.tokens, advance=count,
                             detail=f"IPFS ok {self.ok} failed {self.failed} {rate:,.0f}/s")

    def database_finished(self, result: DatabaseResult) -> None:
        self.progress.update(self.dbs, advance=1)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Concurrent content fetches for daemon/CLI access (default 16).")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Databases read at once by worker processes (default: one per CPU for large "
                   "runs, else all in this process).")
@click.option("--ipfs", "ipfs_mode", metavar="MODE", default=None,
              help="IPFS access mode for every node: auto, repo, http, cli, local "
                   "(default: RUBIX_IPFS, else auto per node).")
@click.option("--source-ip", default=None, metavar="IP",
              help="Address recorded as the rows' source (default: RUBIX_SOURCE_IP, else the "
                   "address of the interface that routes outward).")
@click.option("--full", is_flag=True, help="Process every database, changed or not.")
@click.option("--pattern", default=DEFAULT_PATTERN, show_default=True,
              help="Path of the database inside a node folder.")
@click.option("--db-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Time one database may take before it is given up as failed (default: "
                   "RUBIX_SYNC_DB_TIMEOUT, else 600).")
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Log file (default: sync.log in the data dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No live progress display.")
def sync(roots: tuple[Path, ...], store_url: str | None, workers: int | None,
         processes: int | None, ipfs_mode: str | None, source_ip: str | None, full: bool,
         pattern: str, db_timeout: float | None, log_file: Path | None, as_json: bool,
         no_progress: bool) -> None:
    """Sync the tokens of every Rubix node below ROOTS into the store.

    Finds <node>/Rubix/rubix.db files, reads TokensTable and FTTokenTable, fetches each token's
    content from the node's IPFS repo, and replaces each changed database's rows in one
    transaction. Unchanged databases are skipped. Exit status: 0 when every database synced,
    1 when one failed or a folder was unreadable, 130 when interrupted.
    """
    missing = [str(r) for r in roots if not os.path.lexists(r)]
    if len(missing) == len(roots):
        raise click.ClickException(f"no such folder: {', '.join(missing)}")
    with make_manager(store_url=store_url, ipfs_mode=ipfs_mode, source_ip=source_ip,
                      sync_db_timeout=db_timeout) as manager:
        handler = _log_to(log_file or manager.settings.data_dir / "sync.log")
        try:
            summary = _run_sync(manager, list(roots), workers=workers, processes=processes,
                                full=full,
                                pattern=pattern, progress=not (as_json or no_progress))
        finally:
            handler.detach()
    _print_summary(summary, as_json)
    if summary.interrupted:
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)


def _run_sync(manager: Manager, roots: list[Path], *, workers: int | None, processes: int | None,
              full: bool, pattern: str, progress: bool) -> SyncSummary:
    options: dict[str, Any] = {"workers": workers, "processes": processes, "full": full,
                               "pattern": pattern}
    summary: SyncSummary
    if progress and sys.stderr.isatty():
        with _RichProgress() as observer:
            summary = manager.sync_tokens(roots, observer=observer, **options)
    else:
        summary = manager.sync_tokens(roots, **options)
    return summary


def _log_to(path: Path) -> _SyncLogHandler:
    from rubix_integration.tokens.sync import sync_log_handler

    handler = sync_log_handler(path)
    logger = logging.getLogger("rubix_integration")
    # the command owns this process's logging: progress lines too, not only failures
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _print_summary(summary: SyncSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        click.echo(str(summary))


# --- report -------------------------------------------------------------------------------------


def _render(result: ReportResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result.as_dicts(), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return buf.getvalue()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.report.title} ({len(result.rows)} rows, {result.engine})",
                  title_justify="left")
    for column in result.columns:
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


@click.command()
@click.argument("name", type=click.Choice(list(REPORTS)), default="nodes")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--engine", type=click.Choice(["auto", "duckdb", "store"]), default="auto",
              show_default=True, help="Run on DuckDB over the store, or on the store itself.")
def report(name: str, store_url: str | None, fmt: str, engine: str) -> None:
    """Answer questions about the synced tokens.

    \b
    nodes         tokens per node with IPFS success/failure
    failures      IPFS failures grouped by error
    shared        tokens present on several nodes
    content-diff  tokens whose content differs between nodes
    success-rate  IPFS success rate per node
    history       processing history of node databases
    """
    with make_manager(store_url=store_url) as manager:
        result = run_report(manager.store, name, engine=engine)
    click.echo(_render(result, fmt), nl=fmt != "csv")


# --- demo ---------------------------------------------------------------------------------------


@click.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--nodes", type=click.IntRange(min=1), default=4, show_default=True,
              help="Healthy nodes to create.")
@click.option("--tokens", type=click.IntRange(min=0), default=25, show_default=True,
              help="Tokens per healthy node, in all: 3 every node holds, up to 3 fungible "
                   "tokens, the rest its own.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(directory: Path | None, nodes: int, tokens: int, store_url: str | None,
         as_json: bool) -> None:
    """Create a realistic sample of Rubix nodes in DIRECTORY and sync it.

    The sample (default: demo/ in the data dir) holds healthy nodes with kubo-layout IPFS repos
    and the cases found in the field: missing and corrupt blocks, bad token ids, a hand-made
    database, .ipfs in the parent folder, a node without a repo, a database that is not SQLite and
    one without TokensTable. Prints the sync summary and the per-node report.
    """
    from rubix_integration.tokens.demo import BROKEN_ON_PURPOSE, make_sample

    with make_manager(store_url=store_url) as manager:
        root = directory or manager.settings.data_dir / "demo"
        if root.exists() and any(root.iterdir()):
            click.echo(f"using the existing sample in {root}", err=True)
        else:
            with _building(not as_json) as progress:
                sample = make_sample(root, nodes=nodes, node_tokens=tokens, progress=progress)
            click.echo(f"created {len(sample.nodes) + sample.broken_databases} node folders "
                       f"with {sample.tokens} tokens in {root}", err=True)
        summary = _run_sync(manager, [root], workers=None, processes=None, full=False,
                            pattern=DEFAULT_PATTERN, progress=not as_json)
        result = run_report(manager.store, "nodes")
    broken = sorted({r.node_name for r in summary.databases} & set(BROKEN_ON_PURPOSE))
    note = (f"{len(broken)} sample nodes are broken on purpose to show failure handling: "
            + ", ".join(f"{n} ({BROKEN_ON_PURPOSE[n]})" for n in broken)) if broken else ""
    _print_summary(summary, as_json)
    if as_json:
        if note:
            click.echo(note, err=True)
        return
    if note:
        click.echo(note)
    click.echo(_render(result, "table"))


@contextlib.contextmanager
def _building(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on a terminal's stderr while the sample is written."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("writing sample nodes"), BarColumn(), MofNCompleteColumn(),
                  console=_stderr_console(), transient=True) as bar:
        task = bar.add_task("nodes", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
