"""Where synced data lives: SQLite by default, PostgreSQL for many writers, DuckDB for analytics.

The public names are imported on first use: a sync imports the store it writes to, never the
analytics module (DuckDB) nor the other store.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any

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


def __getattr__(name: str) -> _Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})
