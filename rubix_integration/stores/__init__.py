"""Where synced data lives: SQLite by default, PostgreSQL for many writers, DuckDB for analytics."""

from __future__ import annotations

from rubix_integration.stores.analytics import Analytics
from rubix_integration.stores.base import Store
from rubix_integration.stores.postgresql import PostgreSQLStore
from rubix_integration.stores.sqlite import SQLiteStore

__all__ = ["Analytics", "PostgreSQLStore", "SQLiteStore", "Store"]
