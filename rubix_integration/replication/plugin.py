"""Replication registered as a built-in plugin: its routes, and stopping with the host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rubix_integration._host import Host
from rubix_integration.hookspecs import hookimpl


@hookimpl
def register_routes(manager: Host) -> Sequence[Any]:
    """The ``/p2p`` routes of the host's replication, once the host uses it (its
    ``replication`` was touched: configured, a table registered)."""
    replication = getattr(manager, "__dict__", {}).get("replication")
    return replication.routes() if replication is not None else []


@hookimpl
def shutdown(manager: Host) -> None:
    """Stop syncing before the store closes."""
    replication = getattr(manager, "__dict__", {}).get("replication")
    if replication is not None:
        replication.stop()
