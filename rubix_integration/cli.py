"""The ``rubix-integration`` command line: thin over :class:`rubix_integration.Manager`.

Each command builds a Manager from its options, calls one method and renders the result. Expected
failures (every :class:`~rubix_integration.errors.RubixError`) become one line on stderr and exit
status 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from rubix_integration import __version__
from rubix_integration._cli_common import (
    Group,
    configure_warnings,
    ipfs_option,
    json_option,
    make_manager,
    print_json,
    store_option,
    warning_shown,
)
from rubix_integration.errors import RubixError, UnsupportedOperationError


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rubix-integration")
def cli() -> None:
    """Gather what many Rubix nodes hold, resolve token content through IPFS, and keep it in
    one store that can be queried, audited and shared.

    Configuration: command options > RUBIX_* environment variables > config.toml in the config
    dir > defaults. Run `rubix-integration status` to see what was detected and why.
    """


@cli.command()
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


def _render_status(report: Any) -> None:
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


@cli.command()
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


@cli.group(cls=Group)
def ipfs() -> None:
    """Add and read content through the chosen IPFS backend."""


@ipfs.command("add")
@ipfs_option
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--no-pin", is_flag=True, help="Do not pin what is added.")
@json_option
def ipfs_add(ipfs_mode: str | None, path: Path, no_pin: bool, as_json: bool) -> None:
    """Add a file or a directory (recursively); print the CIDs."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        if path.is_dir():
            result = manager.add_directory(path, pin=not no_pin)
            entries = [{"path": e.path, "cid": e.cid, "size": e.size, "dir": e.is_dir}
                       for e in result.entries]
            if as_json:
                print_json({"cid": result.cid, "entries": entries})
            else:
                for e in entries:
                    suffix = "/" + e["path"] if e["path"] else ""
                    click.echo(f"added {e['cid']} {path.name}{suffix}")
        else:
            cid = manager.add_file(path, pin=not no_pin)
            if as_json:
                print_json({"cid": cid})
            else:
                click.echo(f"added {cid} {path.name}")


@ipfs.command("cat")
@ipfs_option
@click.argument("cid")
@click.option("--max-size", type=click.IntRange(min=0), default=None, metavar="BYTES",
              help="Refuse a file larger than this, before writing any of it.")
def ipfs_cat(ipfs_mode: str | None, cid: str, max_size: int | None) -> None:
    """Write a file's content to stdout, streamed block by block.

    The whole read is bounded by the IPFS timeout (RUBIX_IPFS_TIMEOUT).
    """
    out = sys.stdout.buffer
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        backend = manager.ipfs()
        try:
            chunks: Iterable[bytes] = backend.iter_cat(cid, max_size=max_size)
        except UnsupportedOperationError:
            chunks = (backend.cat(cid, max_size=max_size),)
        try:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            sys.exit(1)


@ipfs.command("ls")
@ipfs_option
@click.argument("cid")
@json_option
def ipfs_ls(ipfs_mode: str | None, cid: str, as_json: bool) -> None:
    """List a directory."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        entries = manager.list_directory(cid)
    if as_json:
        print_json([{"name": e.name, "cid": e.cid, "size": e.size, "type": e.type}
                     for e in entries])
        return
    for e in entries:
        click.echo(f"{e.cid} {e.size:>10} {e.name}{'/' if e.type == 'directory' else ''}")


@ipfs.command("get")
@ipfs_option
@click.argument("cid")
@click.argument("dest", type=click.Path(path_type=Path))
def ipfs_get(ipfs_mode: str | None, cid: str, dest: Path) -> None:
    """Write a file or a directory tree to DEST."""
    with make_manager(ipfs_mode=ipfs_mode) as manager:
        out = manager.get_file(cid, dest)
    click.echo(f"saved {cid} to {out}")


def _add_builtin_commands() -> None:
    from rubix_integration._cli_sync import demo, report, sync

    for command in (sync, report, demo):
        cli.add_command(command)

    from rubix_integration._cli_tasks import tasks

    cli.add_command(tasks)


_add_builtin_commands()


def _add_plugin_commands() -> None:
    """Let each plugin add its commands; a plugin that fails is reported by name, once."""
    try:
        manager = make_manager()
        manager.notify("register_commands", cli=cli)
    except RubixError as exc:
        # every command resolves the settings and reports a bad one itself: not twice
        cli.plugin_error = exc


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    configure_warnings()
    _add_plugin_commands()
    cli.main(args=list(argv) if argv is not None else None, prog_name="rubix-integration")


if __name__ == "__main__":  # pragma: no cover
    main()
