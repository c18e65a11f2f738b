"""The tables of the built-in capabilities, registered as a plugin like any other's.

Named by module, so that the models are imported only when the store is opened.
"""

from __future__ import annotations

from collections.abc import Sequence

from rubix_integration.hookspecs import hookimpl

#: Modules defining the SQLModel tables of the store layer and the built-in capabilities.
MODEL_MODULES: tuple[str, ...] = (
    "rubix_integration.stores.models",
    "rubix_integration.tokens.models",
    "rubix_integration.provenance.models",
    "rubix_integration.workflow.models",
)


@hookimpl
def register_tables() -> Sequence[str]:
    """The store's own table and those of tokens, provenance and workflow."""
    return MODEL_MODULES
