"""Token sync: many Rubix nodes -> IPFS content -> one store (``Manager.sync_tokens``).

The public names are imported on first use: importing a light module of this package (say
:mod:`.discover` or :mod:`.results`, as the command line does) imports no database library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from rubix_integration.tokens.discover import DEFAULT_PATTERN as DEFAULT_PATTERN
    from rubix_integration.tokens.discover import NodeDatabase as NodeDatabase
    from rubix_integration.tokens.discover import discover as discover
    from rubix_integration.tokens.models import ProcessedDatabase as ProcessedDatabase
    from rubix_integration.tokens.models import TokenRecord as TokenRecord
    from rubix_integration.tokens.results import DatabaseResult as DatabaseResult
    from rubix_integration.tokens.results import SyncObserver as SyncObserver
    from rubix_integration.tokens.results import SyncSummary as SyncSummary
    from rubix_integration.tokens.sync import TokenSync as TokenSync

#: Each public name and the module that defines it.
_PUBLIC: dict[str, str] = {
    "DEFAULT_PATTERN": "rubix_integration.tokens.discover",
    "DatabaseResult": "rubix_integration.tokens.results",
    "NodeDatabase": "rubix_integration.tokens.discover",
    "ProcessedDatabase": "rubix_integration.tokens.models",
    "SyncObserver": "rubix_integration.tokens.results",
    "SyncSummary": "rubix_integration.tokens.results",
    "TokenRecord": "rubix_integration.tokens.models",
    "TokenSync": "rubix_integration.tokens.sync",
    "discover": "rubix_integration.tokens.discover",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
