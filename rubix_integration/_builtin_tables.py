"""The tables of the built-in capabilities, registered as a plugin like any other's.

Named by module, so that the models are imported only when the store is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rubix_integration.hookspecs import hookimpl

if TYPE_CHECKING:
    from rubix_integration._registry import LazyBackend

#: Modules defining the SQLModel tables of the store layer and the built-in capabilities.
MODEL_MODULES: tuple[str, ...] = (
    "rubix_integration.stores.models",
    "rubix_integration.tokens.models",
    "rubix_integration.provenance.models",
    "rubix_integration.workflow.models",
    "rubix_integration.replication.models",
    "rubix_integration.importer.models",
    "rubix_integration.pins.models",
)


@hookimpl
def register_tables() -> Sequence[str]:
    """The store's own table and those of tokens, provenance and workflow."""
    return MODEL_MODULES


@hookimpl
def register_sources() -> list[LazyBackend]:
    """The importer's built-in sources (imported when the ``source`` role is first used)."""
    from rubix_integration._registry import BUILTIN_SOURCES

    return list(BUILTIN_SOURCES)
