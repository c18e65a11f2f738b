"""Token sync: many Rubix nodes -> IPFS content -> one store (``Manager.sync_tokens``)."""

from __future__ import annotations

from rubix_integration.tokens.discover import DEFAULT_PATTERN, NodeDatabase, discover
from rubix_integration.tokens.models import ProcessedDatabase, TokenRecord
from rubix_integration.tokens.sync import DatabaseResult, SyncObserver, SyncSummary, TokenSync

__all__ = [
    "DEFAULT_PATTERN",
    "DatabaseResult",
    "NodeDatabase",
    "ProcessedDatabase",
    "SyncObserver",
    "SyncSummary",
    "TokenRecord",
    "TokenSync",
    "discover",
]
