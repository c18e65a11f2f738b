"""The ``status`` and ``plugins`` commands: what was detected, chosen and loaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rubix_integration.cli._common import (
    ipfs_option,
    json_option,
    make_manager,
    print_json,
    store_option,
    warning_shown,
)

if TYPE_CHECKING:
    from rubix_integration._status import Status

__all__ = ["plugins", "status"]


@click.command()
@store_option
@ipfs_option
@json_option
@click.option("--ipfs-path", type=click.Path(path_type=Path), default=None,
              help="IPFS repo to check (default: RUBIX_IPFS_PATH, IPFS_PATH, else ~/.ipfs).")
def status(store_url: str | None, ipfs_mode: str | None, as_json: bool,
           ipfs_path: Path | None) -> None:
    """Show the detected IPFS access modes and stores, what was chosen and why."""
    with make_manager(store_url=store_url, ipfs_mode=ipfs_mode, ipfs_path=ipfs_path) as manager:
        report = manager.status()
    if as_json:
        print_json(report.as_dict())
        return
    _render_status(report)


def _render_status(report: Status) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]rubix_integration {report.version}[/bold]  "
                  f"integration enabled: {report.enabled} "
                  f"({report.sources.get('enabled', 'default')})")
    for title, items in (("IPFS access (repo: " + str(report.ipfs_path) + ")", report.ipfs),
                         ("Stores", report.stores), ("Analytics", (report.analytics,))):
        table = Table(title=title, title_justify="left", expand=False)
        table.add_column("")
        table.add_column("name")
        table.add_column("plugin")
        table.add_column("reason", overflow="fold")
        for c in items:
            state = "available" if c.available else "[dim]no[/]"
            mark = "[green]chosen[/]" if c.chosen else state
            table.add_row(mark, c.name, c.plugin, c.reason)
        console.print(table)
    console.print(f"plugins: {', '.join(p.name for p in report.plugins if not p.error)}")
    console.print(f"data dir: {report.data_dir}")
    console.print(f"config dir: {report.config_dir} (file: {report.config_file or 'none'})")
    for warning in report.warnings:
        if not warning_shown(warning):  # printed on stderr while the report was made
            console.print(f"[yellow]warning:[/] {warning}")


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List the loaded plugins: name, version, where they come from, the hooks they implement."""
    manager = make_manager()
    infos = manager.plugins.infos()
    if as_json:
        print_json([i.as_dict() for i in infos])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Plugins", title_justify="left")
    for col in ("name", "version", "source", "from", "hooks"):
        table.add_column(col, overflow="fold")
    for info in infos:
        hooks = f"[red]FAILED: {info.error}[/]" if info.error else ", ".join(info.hooks)
        table.add_row(info.name, info.version or "", info.source, info.origin, hooks)
    Console().print(table)
