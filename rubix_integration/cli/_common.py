"""What every command module shares: the error-translating group, option bundles, the Manager."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from rubix_integration._settings import IPFS_MODES, OPTION_SOURCE
from rubix_integration.errors import RubixError

if TYPE_CHECKING:
    from rubix_integration._manager import Manager

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Group",
    "configure_warnings",
    "ipfs_option",
    "json_option",
    "make_manager",
    "print_json",
    "store_option",
    "warning_shown",
]

#: The option that sets each setting; errors and ``status`` name the option, not the variable.
OPTION_NAMES: dict[str, str] = {
    "store_url": "--store",
    "ipfs_mode": "--ipfs",
    "ipfs_path": "--ipfs-path",
    "source_ip": "--source-ip",
}


def _one_line(exc: RubixError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


class Group(click.Group):
    """A group that turns library errors into one clear line.

    ``plugin_error`` is the error that kept plugin commands from being added (a bad setting,
    usually). It is not printed up front, since the command that runs reports it itself; a
    command that is not found is answered with it, as the command may be a plugin's.
    """

    plugin_error: RubixError | None = None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RubixError as exc:
            raise _one_line(exc) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            if self.plugin_error is not None:
                raise _one_line(self.plugin_error) from self.plugin_error
            raise


class _WarningLines(logging.Handler):
    """Print each warning of the package once, as one line on stderr: ``warning: <message>``.

    Stands in for logging's last-resort handler: quiet while a command sends the package's log
    elsewhere (``sync`` writes ``sync.log``). Python warnings of the same text are the same
    warning (the package logs and warns each), and are printed once, without a source path.
    """

    def __init__(self, logger: logging.Logger, stream: TextIO | None = None) -> None:
        super().__init__(logging.WARNING)
        self.logger = logger
        self.stream = stream
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if any(h is not self for h in self.logger.handlers):
            return
        self.echo(record.getMessage())

    def echo(self, message: str) -> None:
        if message in self.seen:
            return
        self.seen.add(message)
        click.echo(f"warning: {message}", err=True, file=self.stream)

    def show_warning(self, message: Warning | str, category: type[Warning], filename: str,
                     lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        self.echo(" ".join(str(message).split()))


_warning_lines: _WarningLines | None = None


def configure_warnings() -> None:
    """Make every warning one clean line, printed once (for the command line process only)."""
    global _warning_lines
    if _warning_lines is not None:
        return
    logger = logging.getLogger("rubix_integration")
    _warning_lines = _WarningLines(logger)
    logger.addHandler(_warning_lines)
    warnings.showwarning = _warning_lines.show_warning


def warning_shown(message: str) -> bool:
    """Whether ``message`` was already printed as a warning line."""
    return _warning_lines is not None and message in _warning_lines.seen


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


def make_manager(**settings: Any) -> Manager:
    """A Manager on the given option values; each is reported as coming from its option."""
    from rubix_integration._manager import Manager

    given = {k: v for k, v in settings.items() if v is not None}
    sources = {k: OPTION_SOURCE + OPTION_NAMES[k] for k in given if k in OPTION_NAMES}
    return Manager(keyword_sources=sources, **given)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
