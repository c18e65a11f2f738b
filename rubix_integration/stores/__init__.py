"""Where synced data lives: SQLite by default, PostgreSQL for many writers, DuckDB for analytics.

The public names are imported on first use: a sync imports the store it writes to, never the
analytics module (DuckDB) nor the other store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from rubix_integration.stores.analytics import Analytics as Analytics
    from rubix_integration.stores.base import Store as Store
    from rubix_integration.stores.postgresql import PostgreSQLStore as PostgreSQLStore
    from rubix_integration.stores.sqlite import SQLiteStore as SQLiteStore

#: Each public name and the module that defines it.
_PUBLIC: dict[str, str] = {
    "Analytics": "rubix_integration.stores.analytics",
    "PostgreSQLStore": "rubix_integration.stores.postgresql",
    "SQLiteStore": "rubix_integration.stores.sqlite",
    "Store": "rubix_integration.stores.base",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
