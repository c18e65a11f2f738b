"""The ``rubix-integration`` command line: thin over :class:`rubix_integration.Manager`.

Each command builds a Manager from its options, calls one method and renders the result. Expected
failures (every :class:`~rubix_integration.errors.RubixError`) become one line on stderr and exit
status 1, never a traceback.

One module per command group: :mod:`._status` (``status``, ``plugins``), :mod:`._ipfs`,
:mod:`._sync` (``sync``, ``report``, ``demo``) and :mod:`._tasks`. Building the command tree
imports nothing heavy (no SQLAlchemy, DuckDB or IPFS client): ``--help`` answers at once, with
the commands of plugins added through the same plugin manager a command's Manager builds (its
built-in backends are imported only when a command uses them).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from rubix_integration import __version__
from rubix_integration._plugins import Plugins
from rubix_integration._settings import resolve_settings
from rubix_integration.cli._common import Group, configure_warnings
from rubix_integration.cli._import import import_
from rubix_integration.cli._ipfs import ipfs
from rubix_integration.cli._pins import pins
from rubix_integration.cli._serve import serve
from rubix_integration.cli._status import plugins, status
from rubix_integration.cli._sync import demo, report, sync
from rubix_integration.cli._tasks import tasks
from rubix_integration.errors import RubixError

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rubix-integration")
def cli() -> None:
    """Gather what many Rubix nodes hold, resolve token content through IPFS, and keep it in
    one store that can be queried, audited and shared.

    Configuration: command options > RUBIX_* environment variables > config.toml in the config
    dir > defaults. Run `rubix-integration status` to see what was detected and why.
    """


for _command in (status, plugins, ipfs, sync, report, demo, tasks, import_, serve, pins):
    cli.add_command(_command)


def add_plugin_commands(group: Group) -> None:
    """Let each plugin the settings select add its commands to ``group``."""
    try:
        selected = resolve_settings().load_plugins
    except RubixError as exc:
        # every command resolves the settings and reports a bad one itself: not twice
        group.plugin_error = exc
        return
    Plugins(load_plugins=selected).register_commands(group)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    configure_warnings()
    add_plugin_commands(cli)
    cli.main(args=list(argv) if argv is not None else None, prog_name="rubix-integration")


if __name__ == "__main__":  # pragma: no cover
    main()
