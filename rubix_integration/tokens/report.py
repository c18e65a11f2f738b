"""The reports over synced tokens (``rubix-integration report ...``).

Each report is one SQL query written in the subset shared by DuckDB, SQLite and PostgreSQL. It
runs on DuckDB over the store (fast on large stores: columnar scans through the scanner
extensions); when DuckDB cannot reach the store it runs on the store itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rubix_integration.errors import RubixError, StoreError

if TYPE_CHECKING:
    from rubix_integration.stores.base import Store

log = logging.getLogger("rubix_integration.report")

__all__ = ["REPORTS", "Report", "ReportResult", "run_report"]

_OK = "CASE WHEN ipfs_fetched THEN 1 ELSE 0 END"
_FAIL = "CASE WHEN ipfs_fetched THEN 0 ELSE 1 END"
# tombstoned rows (tokens gone from their node) are history, not part of any report
_LIVE = "deleted_at IS NULL"


@dataclass(frozen=True)
class Report:
    """A named query and what it answers."""

    name: str
    title: str
    sql: str


REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("nodes", "Tokens per node, with IPFS success and failure",
           f"SELECT node_name, source_ip, COUNT(*) AS tokens, SUM({_OK}) AS ipfs_ok, "
           f"SUM({_FAIL}) AS ipfs_failed FROM tokenrecords WHERE {_LIVE} "
           "GROUP BY node_name, source_ip ORDER BY node_name, source_ip"),
    Report("failures", "IPFS failures grouped by error",
           "SELECT ipfs_error, COUNT(*) AS tokens, COUNT(DISTINCT node_name) AS nodes "
           f"FROM tokenrecords WHERE {_LIVE} AND NOT ipfs_fetched GROUP BY ipfs_error "
           "ORDER BY tokens DESC, ipfs_error"),
    Report("shared", "Tokens present on several nodes",
           "SELECT token_id, COUNT(DISTINCT node_name) AS nodes, COUNT(*) AS copies, "
           "MIN(node_name) AS first_node, MAX(node_name) AS last_node FROM tokenrecords "
           f"WHERE {_LIVE} AND token_id IS NOT NULL GROUP BY token_id "
           "HAVING COUNT(DISTINCT node_name) > 1 ORDER BY nodes DESC, token_id"),
    Report("content-diff", "Tokens whose content differs between nodes",
           "SELECT token_id, COUNT(DISTINCT ipfs_data) AS variants, "
           "COUNT(DISTINCT node_name) AS nodes FROM tokenrecords "
           f"WHERE {_LIVE} AND ipfs_fetched AND token_id IS NOT NULL GROUP BY token_id "
           "HAVING COUNT(DISTINCT ipfs_data) > 1 ORDER BY variants DESC, token_id"),
    Report("success-rate", "IPFS success rate per node",
           f"SELECT node_name, COUNT(*) AS tokens, SUM({_OK}) AS ipfs_ok, "
           f"ROUND(100.0 * SUM({_OK}) / COUNT(*), 2) AS success_pct FROM tokenrecords "
           f"WHERE {_LIVE} GROUP BY node_name ORDER BY success_pct, node_name"),
    Report("history", "Processing history of node databases",
           "SELECT db_path, node_name, status, record_count, ipfs_success_count, "
           "ipfs_fail_count, last_modified, last_processed, error FROM processeddatabases "
           f"WHERE {_LIVE} ORDER BY last_processed DESC, db_path"),
)}


@dataclass(frozen=True)
class ReportResult:
    """Columns and rows of a report, and which engine answered it."""

    report: Report
    columns: list[str]
    rows: list[tuple[Any, ...]]
    engine: str

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def run_report(store: Store, name: str, *, engine: str = "auto") -> ReportResult:
    """Run report ``name`` (a key of :data:`REPORTS`) on DuckDB over ``store`` or, failing
    that, on the store itself (open, with its tables created).

    ``engine`` is ``"auto"``, ``"duckdb"`` or ``"store"``.
    """
    if name not in REPORTS:
        raise RubixError(f"unknown report {name!r}; reports: {', '.join(REPORTS)}")
    report = REPORTS[name]
    # imported here: the command line lists the reports without loading SQLAlchemy
    import sqlalchemy as sa

    if engine in ("auto", "duckdb"):
        try:
            from rubix_integration.stores.analytics import Analytics

            with Analytics(store) as analytics:
                columns, rows = analytics.query_table(report.sql)
                return ReportResult(report, columns, rows, f"duckdb ({analytics.method})")
        except (RubixError, ImportError) as exc:
            if engine == "duckdb":
                raise
            log.info("report %s: DuckDB unavailable (%s); running on the store", name, exc)
    try:
        with store.connect() as conn:
            result = conn.execute(sa.text(report.sql))
            columns = list(result.keys())
            rows = [tuple(r) for r in result]
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"report {name} failed on {store.masked_url}: {exc.orig}",
                         url=store.masked_url, backend=store.name) from exc
    return ReportResult(report, columns, rows, store.name)

