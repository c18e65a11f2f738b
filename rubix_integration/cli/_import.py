"""``rubix-integration import …``: SQLite databases, JSON files and live sources into the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rubix_integration.cli._common import Group, json_option, make_manager, print_json, store_option

if TYPE_CHECKING:
    from rubix_integration.importer import ImportReport, Progress

__all__ = ["import_"]

_MODES = ("upsert", "insert", "replace")


def _printer(as_json: bool) -> Any:
    if as_json:
        return None

    def show(event: Progress) -> None:
        if event.phase == "start":
            click.echo(f"Importing {event.table}...")
            click.echo(f"  Total rows to import: {event.total}")
        elif event.phase == "rows":
            share = 100 if not event.total else event.done * 100 // event.total
            click.echo(f"  Progress: {event.done}/{event.total} ({share}%)")
        elif event.report is not None and event.report.status == "imported":
            click.echo(f"  Imported {event.report.imported} rows")
    return show


def _render(report: ImportReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        for cycle in report.cycles:
            click.echo(f"Foreign-key cycle, loaded together: {', '.join(cycle)}")
        for table in report.self_references:
            click.echo(f"Self-referencing table: {table}")
        if report.source_stats:
            for key, value in report.source_stats.items():
                click.echo(f"{key}: {value}")
        for t in report.tables:
            if t.status == "imported":
                click.echo(f"{t.table}: imported {t.imported} rows ({t.new} new, {t.changed} "
                           f"changed, {t.unchanged} unchanged) in {t.seconds:.2f}s")
            elif t.status == "planned":
                click.echo(f"{t.table}: would import {t.total} rows ({t.new} new, "
                           f"{t.changed} changed, {t.unchanged} unchanged)")
            elif t.status == "unchanged":
                click.echo(f"{t.table}: unchanged since the last import ({t.total} rows)")
            else:
                click.echo(f"{t.table}: {t.status}: {t.error}")
                if t.failed_keys:
                    keys = ", ".join(repr(k) for k in t.failed_keys)
                    click.echo(f"  rows that fail (keys): {keys}")
            for sql in t.ddl:
                click.echo(f"  {'would run' if report.dry_run else 'ran'}: {sql}")
            for note in t.notes:
                click.echo(f"  note: {note}")
        totals = report.as_dict()["totals"]
        click.echo(f"Summary: {len(report.tables)} table(s), {totals['total']} rows read, "
                   f"{totals['new']} new, {totals['changed']} changed, {totals['unchanged']} "
                   f"unchanged{' (dry run: nothing written)' if report.dry_run else ''} in "
                   f"{report.seconds:.2f}s")
    if not report.ok:
        raise SystemExit(1)


@click.group("import", cls=Group)
def import_() -> None:
    """Import a SQLite database, a JSON file or a live source into the store."""


@import_.command("sqlite")
@store_option
@json_option
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tables", default=None, help="Comma-separated tables (default: all).")
@click.option("--clear", is_flag=True, help="Empty the tables first (same transaction).")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--mode", type=click.Choice(_MODES), default="upsert", show_default=True)
def sqlite(store_url: str | None, as_json: bool, path: Path, tables: str | None, clear: bool,
           dry_run: bool, batch_size: int, mode: str) -> None:
    """Import every table of the SQLite database PATH (read-only), schema kept."""
    names = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
    with make_manager(store_url=store_url) as manager:
        report = manager.import_sqlite(path, tables=names, clear=clear, dry_run=dry_run,
                                       batch_size=batch_size, mode=mode,
                                       progress=_printer(as_json))
    _render(report, as_json)


@import_.command("json")
@store_option
@json_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--table", required=True, help="Target table.")
@click.option("--key", default=None, help="Key column(s), comma-separated (default: id).")
@click.option("--clear", is_flag=True, help="Empty the table first (same transaction).")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--mode", type=click.Choice(_MODES), default="upsert", show_default=True)
def json_file(store_url: str | None, as_json: bool, file: Path, table: str, key: str | None,
              clear: bool, dry_run: bool, mode: str) -> None:
    """Import FILE (a JSON list, {"data": [...]}, Strapi's export or NDJSON) into TABLE."""
    keys = tuple(k.strip() for k in key.split(",") if k.strip()) if key else ()
    with make_manager(store_url=store_url) as manager:
        report = manager.import_json(file, table=table, key=keys, clear=clear,
                                     dry_run=dry_run, mode=mode, progress=_printer(as_json))
    _render(report, as_json)


@import_.command("source")
@store_option
@json_option
@click.argument("name")
@click.option("--table", default=None, help="Target table (default: the source's).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A source setting (repeatable), e.g. -o seed=7.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .env file with the source's credentials (default: ./.env).")
@click.option("--clear/--no-clear", default=None,
              help="Empty the table first (default: the source's choice).")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
def source(store_url: str | None, as_json: bool, name: str, table: str | None,
           options: tuple[str, ...], env_file: Path | None, clear: bool | None,
           dry_run: bool) -> None:
    """Import the rows of the live source NAME (see `rubix-integration plugins`)."""
    parsed: dict[str, str] = {}
    for item in options:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        parsed[k.strip()] = v
    with make_manager(store_url=store_url) as manager:
        report = manager.import_source(name, options=parsed, table=table, clear=clear,
                                       dry_run=dry_run, env_file=env_file,
                                       progress=_printer(as_json))
    _render(report, as_json)
