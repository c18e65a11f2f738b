"""What every command module shares: the error-translating group, option bundles, the Manager."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rubix_integration._settings import IPFS_MODES
from rubix_integration.errors import RubixError

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Group", "ipfs_option", "json_option", "make_manager", "print_json", "store_option"]


class Group(click.Group):
    """A group that turns library errors into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RubixError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


def store_option(func: F) -> F:
    """``--store URL``: the store to use (overrides RUBIX_STORE_URL)."""
    return click.option(
        "--store", "store_url", metavar="URL", default=None,
        help="Store URL, e.g. sqlite:///path.db or postgresql+psycopg://user@host/db "
             "(default: RUBIX_STORE_URL, else the embedded SQLite file in the data dir).",
    )(func)


def ipfs_option(func: F) -> F:
    """``--ipfs MODE``: the IPFS access mode (overrides RUBIX_IPFS)."""
    return click.option(
        "--ipfs", "ipfs_mode", metavar="MODE", default=None,
        help=f"IPFS access mode: {', '.join(IPFS_MODES)} or a plugin's backend name "
             "(default: RUBIX_IPFS, else auto).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print data as JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(
        func
    )


def make_manager(**settings: Any) -> Any:
    from rubix_integration._manager import Manager

    return Manager(**{k: v for k, v in settings.items() if v is not None})


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
