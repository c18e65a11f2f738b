"""Import other databases and services into the store.

:func:`import_sqlite` copies any SQLite database (schema kept, foreign-key order, upserted,
incremental); :func:`import_json` a JSON or NDJSON file; :func:`import_source` the rows of a
``source`` plugin (:class:`Source`). Each returns an :class:`ImportReport`. Names are
imported on first use: importing the importer's models runs no other module of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

_PUBLIC: dict[str, str] = {
    "ImportReport": "rubix_integration.importer.report",
    "MODES": "rubix_integration.importer._load",
    "Mode": "rubix_integration.importer._load",
    "Progress": "rubix_integration.importer.report",
    "Source": "rubix_integration.importer.sources.base",
    "TableReport": "rubix_integration.importer.report",
    "import_json": "rubix_integration.importer._rows",
    "import_rows": "rubix_integration.importer._rows",
    "import_source": "rubix_integration.importer._sources",
    "import_sqlite": "rubix_integration.importer._sqlite",
}

if TYPE_CHECKING:
    from rubix_integration.importer._load import MODES as MODES
    from rubix_integration.importer._load import Mode as Mode
    from rubix_integration.importer._rows import import_json as import_json
    from rubix_integration.importer._rows import import_rows as import_rows
    from rubix_integration.importer._sources import import_source as import_source
    from rubix_integration.importer._sqlite import import_sqlite as import_sqlite
    from rubix_integration.importer.report import ImportReport as ImportReport
    from rubix_integration.importer.report import Progress as Progress
    from rubix_integration.importer.report import TableReport as TableReport
    from rubix_integration.importer.sources.base import Source as Source

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
