"""DuckDB over a store's tables, for reports, audits and Parquet exports. Works offline.

DuckDB never downloads anything here (``autoinstall_known_extensions`` and
``autoload_known_extensions`` are off). The scanners come from the PyPI packages
``duckdb-extension-sqlite-scanner`` and ``duckdb-extension-postgres-scanner``, whose extension
files are loaded by absolute path:

- a SQLite store is ``ATTACH``-ed read-only through ``sqlite_scanner`` (method ``sqlite_scanner``);
- a PostgreSQL store is ``ATTACH``-ed read-only through ``postgres_scanner`` with the store's libpq
  connection string (method ``postgres_scanner``).

Scanners read the live database. When a scanner cannot be loaded or attached (missing package,
version mismatch, in-memory SQLite), the store's tables are copied into DuckDB once, at opening,
through SQLAlchemy: via Arrow when ``pyarrow`` is installed (method ``arrow_copy``), else through a
temporary newline-delimited JSON file read by DuckDB's built-in JSON reader (method
``json_copy``). ``reason`` says why that path was taken. Either way queries name the store's tables
without qualification.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import importlib
import importlib.util
import json
import os
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from rubix_integration.errors import StoreError, StoreUnavailableError

if TYPE_CHECKING:
    from rubix_integration.stores.base import Store

__all__ = ["Analytics", "quote_identifier"]

Method = Literal["auto", "scanner", "copy"]

_SCANNERS = {
    "sqlite": ("duckdb_extension_sqlite_scanner", "sqlite_scanner", "sqlite"),
    "postgresql": ("duckdb_extension_postgres_scanner", "postgres_scanner", "postgres"),
}
_CATALOG = "store"


def quote_identifier(name: str) -> str:
    """Quote ``name`` as one DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def extension_file(package: str, extension: str, duckdb_version: str) -> Path:
    """Locate ``<extension>.duckdb_extension`` inside an installed PyPI extension package.

    Prefer the file built for ``duckdb_version``; raise FileNotFoundError when there is none.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed")
    roots = [Path(p) / "extensions" for p in spec.submodule_search_locations]
    for root in roots:
        exact = root / f"v{duckdb_version}" / f"{extension}.duckdb_extension"
        if exact.is_file():
            return exact
    others = sorted(str(f) for root in roots for f in root.glob(f"*/{extension}.duckdb_extension"))
    if others:
        raise FileNotFoundError(
            f"{package} holds {extension} only for other DuckDB versions ({', '.join(others)}); "
            f"duckdb is {duckdb_version}: install {package.replace('_', '-')}=={duckdb_version}"
        )
    raise FileNotFoundError(f"{package} holds no {extension}.duckdb_extension")


class Analytics:
    """An in-memory DuckDB connection that sees the tables of ``store``.

    ``method="auto"`` prefers the scanner and falls back to copying; ``"scanner"`` fails instead of
    falling back; ``"copy"`` always copies (a snapshot taken now). After opening, ``method`` is the
    path actually used and ``reason`` explains it.
    """

    def __init__(self, store: Store, *, method: Method = "auto") -> None:
        import duckdb

        self.store = store
        self.duckdb_version: str = duckdb.__version__
        self.method = ""
        self.reason = ""
        config: dict[str, Any] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        home = os.environ.get("HOME")
        if not home or not Path(home).is_dir():
            # DuckDB resolves "~" while starting and fails when the folder is missing
            duck_home = store.settings.data_dir / "duckdb"
            duck_home.mkdir(parents=True, exist_ok=True)
            config["home_directory"] = str(duck_home)
        self._con = duckdb.connect(":memory:", config=config)
        try:
            self._open(method)
        except BaseException:
            self._con.close()
            raise

    # --- opening -------------------------------------------------------------------------------

    def _open(self, method: Method) -> None:
        import duckdb

        # reach the store through SQLAlchemy first: a clear StoreUnavailableError if it is down,
        # and a SQLite file that exists before DuckDB attaches it read-only
        with self.store.connect():
            pass
        if method in ("auto", "scanner"):
            try:
                self.method = self._attach()
                self.reason = f"{self.method} attached the store read-only"
                return
            except (duckdb.Error, FileNotFoundError, ValueError) as exc:
                reason = self._scrub(" ".join(str(exc).split()))
                if method == "scanner":
                    raise StoreUnavailableError(
                        f"analytics over {self.store.masked_url}: the DuckDB scanner cannot be "
                        f"used: {reason}",
                        url=self.store.masked_url, backend="duckdb",
                    ) from exc
                self.reason = f"scanner unavailable ({reason}); tables copied"
        else:
            self.reason = "copy asked for; tables copied"
        self.method = self._copy_tables()

    def _attach(self) -> str:
        import duckdb

        from rubix_integration.stores.postgresql import PostgreSQLStore
        from rubix_integration.stores.sqlite import SQLiteStore

        if isinstance(self.store, SQLiteStore):
            if self.store.database_path is None:
                raise ValueError("an in-memory SQLite database cannot be attached")
            kind, target = "sqlite", str(self.store.database_path)
        elif isinstance(self.store, PostgreSQLStore):
            kind, target = "postgresql", self.store.libpq_conninfo()
        else:
            raise ValueError(f"no DuckDB scanner for {self.store.name!r} stores")
        package, extension, attach_type = _SCANNERS[kind]
        path = extension_file(package, extension, self.duckdb_version)
        self._con.execute(f"LOAD {_quote_literal(str(path))}")
        try:
            self._con.execute(
                f"ATTACH {_quote_literal(target)} AS {_CATALOG} (TYPE {attach_type}, READ_ONLY)"
            )
            self._con.execute(f"USE {_CATALOG}")
        except duckdb.Error:
            self._con.execute("USE memory")
            self._con.execute(f"DETACH DATABASE IF EXISTS {_CATALOG}")
            raise
        return extension

    def _copy_tables(self) -> str:
        use_arrow = importlib.util.find_spec("pyarrow") is not None
        engine = self.store.engine
        try:
            meta = sa.MetaData()
            with warnings.catch_warnings():
                # expression indexes (provenance's CID lookup) do not matter to a copy
                warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression",
                                        sa.exc.SAWarning)
                meta.reflect(bind=engine)
            with tempfile.TemporaryDirectory(prefix="rubix-analytics-") as tmp:
                for table in meta.sorted_tables:
                    if use_arrow:
                        self._copy_arrow(table)
                    else:
                        self._copy_json(table, Path(tmp))
        except sa.exc.DBAPIError as exc:
            raise StoreUnavailableError(
                f"analytics over {self.store.masked_url}: cannot read the store's tables: "
                f"{' '.join(str(exc.orig).split())}",
                url=self.store.masked_url, backend="duckdb",
            ) from exc
        return "arrow_copy" if use_arrow else "json_copy"

    def _select_rows(self, table: sa.Table) -> list[Sequence[Any]]:
        with self.store.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table))]

    def _copy_arrow(self, table: sa.Table) -> None:  # pragma: no cover - pyarrow not installed
        pa: Any = importlib.import_module("pyarrow")

        rows = self._select_rows(table)
        names = [c.name for c in table.columns]
        arrays = {
            f"c{i}": [_plain(row[i]) for row in rows] for i in range(len(names))
        }
        data = pa.table(arrays) if names else pa.table({})
        self._con.register("_rubix_copy", data)
        try:
            select = ", ".join(
                f"CAST({quote_identifier(f'c{i}')} AS {_duck_type(c.type)}) "
                f"AS {quote_identifier(c.name)}"
                for i, c in enumerate(table.columns)
            )
            self._con.execute(
                f"CREATE TABLE {quote_identifier(table.name)} AS SELECT {select} FROM _rubix_copy"
            )
        finally:
            self._con.unregister("_rubix_copy")

    def _copy_json(self, table: sa.Table, tmp: Path) -> None:
        columns = list(table.columns)
        types = [_duck_type(c.type) for c in columns]
        file = tmp / f"{uuid.uuid4().hex}.ndjson"
        with self.store.connect() as conn, file.open("w", encoding="utf-8") as fh:
            result = conn.execution_options(yield_per=5000).execute(sa.select(table))
            for row in result:
                fh.write(json.dumps({f"c{i}": _jsonable(v, types[i]) for i, v in enumerate(row)}))
                fh.write("\n")
        # JSON carries blobs as base64 text; everything else parses straight into its type
        spec = ", ".join(
            f"{_quote_literal(f'c{i}')}: {_quote_literal('VARCHAR' if t == 'BLOB' else t)}"
            for i, t in enumerate(types)
        )
        select = ", ".join(
            (f"from_base64(c{i})" if t == "BLOB" else f"c{i}") + f" AS {quote_identifier(c.name)}"
            for i, (c, t) in enumerate(zip(columns, types, strict=True))
        )
        self._con.execute(
            f"CREATE TABLE memory.main.{quote_identifier(table.name)} AS SELECT {select} "
            f"FROM read_json({_quote_literal(str(file))}, format='newline_delimited', "
            f"columns={{{spec}}})"
        )

    def _scrub(self, text: str) -> str:
        from rubix_integration._settings import redact

        return redact(text, self.store.url)

    # --- queries -------------------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None) -> Any:
        import duckdb

        try:
            return self._con.execute(sql, params) if params is not None else self._con.execute(sql)
        except duckdb.Error as exc:
            raise StoreError(
                f"analytics query failed: {self._scrub(' '.join(str(exc).split()))}",
                url=self.store.masked_url, backend="duckdb",
            ) from exc

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``?`` or ``$name`` parameters) and return every row as a tuple."""
        rows: list[tuple[Any, ...]] = self._run(sql, params).fetchall()
        return rows

    def query_table(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql``; return its column names and every row (errors of fetching included)."""
        import duckdb

        cursor = self._run(sql, params)
        try:
            columns = [str(d[0]) for d in cursor.description or ()]
            return columns, [tuple(r) for r in cursor.fetchall()]
        except duckdb.Error as exc:
            raise StoreError(
                f"analytics query failed: {self._scrub(' '.join(str(exc).split()))}",
                url=self.store.masked_url, backend="duckdb",
            ) from exc

    def query_dicts(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run ``sql`` and return every row as a dict keyed by column name."""
        cursor = self._run(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def tables(self) -> list[str]:
        """Names of the tables queries can use unqualified, sorted."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = current_schema() "
            "ORDER BY table_name"
        )
        return [str(r[0]) for r in rows]

    def export_parquet(
        self,
        source: str,
        path: str | os.PathLike[str],
        params: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> int:
        """Write a table (when ``source`` names one) or a query's result to a Parquet file.

        Return the number of rows written. The folder of ``path`` is created if needed.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source in self.tables():
            select = f"SELECT * FROM {quote_identifier(source)}"
        else:
            select = source.strip().rstrip(";")
        result = self._run(
            f"COPY ({select}) TO {_quote_literal(str(target))} (FORMAT parquet)", params
        ).fetchone()
        return int(result[0]) if result else 0

    def describe(self) -> dict[str, Any]:
        """What ``status()`` shows: DuckDB version, the method used and why."""
        return {
            "backend": "duckdb",
            "duckdb_version": self.duckdb_version,
            "method": self.method,
            "reason": self.reason,
            "store": self.store.masked_url,
        }

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._con.close()

    def __enter__(self) -> Analytics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _duck_type(sa_type: sa.types.TypeEngine[Any]) -> str:
    """The DuckDB column type for a reflected SQLAlchemy type; VARCHAR when unsure."""
    checks: list[tuple[type[sa.types.TypeEngine[Any]], str]] = [
        (sa.Boolean, "BOOLEAN"),
        (sa.Integer, "BIGINT"),
        (sa.Float, "DOUBLE"),
        (sa.Numeric, "DOUBLE"),
        (sa.DateTime, "TIMESTAMPTZ" if getattr(sa_type, "timezone", False) else "TIMESTAMP"),
        (sa.Date, "DATE"),
        (sa.Time, "TIME"),
        (sa.LargeBinary, "BLOB"),
    ]
    for cls, name in checks:
        if isinstance(sa_type, cls):
            return name
    return "VARCHAR"


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _jsonable(value: Any, duck_type: str) -> Any:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value) if duck_type == "VARCHAR" else value
    if isinstance(value, decimal.Decimal):
        return float(value) if duck_type == "DOUBLE" else str(value)
    if duck_type == "VARCHAR" and not isinstance(value, str):
        return value if isinstance(value, (int, float, bool)) else str(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
