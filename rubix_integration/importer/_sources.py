"""Run a ``source`` plugin into the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rubix_integration.errors import ImportSourceError
from rubix_integration.importer._load import Mode
from rubix_integration.importer._rows import import_rows
from rubix_integration.importer.report import ImportReport, ProgressCallback
from rubix_integration.importer.sources.base import Source

if TYPE_CHECKING:
    from rubix_integration.stores.base import Store

__all__ = ["import_source"]


def import_source(store: Store, source: Source, *, table: str | None = None,
                  clear: bool | None = None, dry_run: bool = False, mode: Mode = "upsert",
                  progress: ProgressCallback | None = None) -> ImportReport:
    """Import the rows of ``source`` into ``table`` (default: the source's own).

    A snapshot source (``Source.snapshot``) clears its table unless ``clear=False``.
    """
    target = table or source.table
    if not target:
        raise ImportSourceError(f"source {source.name!r} names no target table; give one",
                                source=source.name)
    try:
        rows = list(source.rows())
    finally:
        source.close()
    report = import_rows(store, target, rows, key=source.key, columns=_columns(source, rows),
                         clear=source.snapshot if clear is None else clear, dry_run=dry_run,
                         mode=mode, source=f"source:{source.name}", progress=progress)
    report.source_stats = source.stats()
    return report


def _columns(source: Source, rows: list[Mapping[str, object]]) -> dict[str, str] | None:
    if source.columns is None:
        return None
    return dict(source.columns)
