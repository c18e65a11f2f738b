"""Import rows given as mappings (JSON files, live sources): columns inferred, same loader."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.errors import ImportSchemaError, ImportSourceError
from rubix_integration.importer._load import Loader, LoadJob, Mode
from rubix_integration.importer._sql import json_cell
from rubix_integration.importer.report import ImportReport, ProgressCallback

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = ["COLUMN_TYPES", "import_json", "import_rows", "infer_columns", "read_json_rows"]

#: Column type names a source may declare, and what they become.
COLUMN_TYPES: tuple[str, ...] = ("integer", "real", "text", "boolean", "json", "blob")


def _sa_type(kind: str) -> sa.types.TypeEngine[Any]:
    from sqlalchemy.dialects.postgresql import JSONB

    kinds: dict[str, sa.types.TypeEngine[Any]] = {
        "integer": sa.BigInteger(),
        "real": sa.Double(),
        "text": sa.Text(),
        "boolean": sa.Boolean(),
        "json": sa.JSON().with_variant(JSONB(), "postgresql"),
        "blob": sa.LargeBinary(),
    }
    return kinds[kind]


def infer_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each key of the rows (first seen first) and the type its values fit."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            seen = kinds.setdefault(str(name), set())
            if value is None:
                continue
            if isinstance(value, bool):
                seen.add("boolean")
            elif isinstance(value, int):
                seen.add("integer")
            elif isinstance(value, float):
                seen.add("real")
            elif isinstance(value, (dict, list)):
                seen.add("json")
            elif isinstance(value, (bytes, bytearray)):
                seen.add("blob")
            else:
                seen.add("text")
    out: dict[str, str] = {}
    for name, seen in kinds.items():
        if not seen:
            out[name] = "text"
        elif len(seen) == 1:
            out[name] = next(iter(seen))
        elif seen <= {"integer", "real"}:
            out[name] = "real"
        else:
            out[name] = "json"  # mixed: kept as the JSON value it was
    return out


def read_json_rows(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON file: a list, ``{"data": [...]}`` (Strapi's ``{"id", "attributes"}``
    items flattened) or NDJSON (one object per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportSourceError(f"cannot read {path}: {exc}", source=str(path),
                                kind="unreadable") from exc
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as first:
        data = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ImportSourceError(f"{path} is neither JSON nor NDJSON: {first}",
                                        source=str(path), kind="malformed") from exc
            if not isinstance(data[-1], dict):
                raise ImportSourceError(f"{path} line {number} is not a JSON object",
                                        source=str(path), kind="malformed") from None
    return flatten(data, str(path))


def flatten(data: Any, where: str) -> list[dict[str, Any]]:
    """Rows from a decoded JSON document (see :func:`read_json_rows`)."""
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ImportSourceError(f"{where}: expected a list of objects or {{\"data\": [...]}}",
                                source=where, kind="malformed")
    rows: list[dict[str, Any]] = []
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise ImportSourceError(f"{where}: item {n} is not an object", source=where,
                                    kind="malformed")
        attributes = item.get("attributes")
        if isinstance(attributes, dict) and set(item) <= {"id", "attributes", "meta"}:
            item = {"id": item.get("id"), **attributes}
        rows.append(item)
    return rows


def import_rows(
    store: Store,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str] = (),
    columns: Mapping[str, str] | None = None,
    clear: bool = False,
    dry_run: bool = False,
    mode: Mode = "upsert",
    batch_size: int = 5000,
    source: str = "",
    state: tuple[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import ``rows`` (mappings) into ``table``, created from ``columns`` (name → one of
    :data:`COLUMN_TYPES`; inferred when not given) if missing, upserted by ``key``."""
    started = time.perf_counter()
    if table in store.metadata.tables:
        raise ImportSchemaError(f"table {table!r} is one of the store's own tables; import into "
                                "another table", table=table, source=source)
    listed = [dict(r) for r in rows]
    spec = dict(columns) if columns is not None else infer_columns(listed)
    for name, kind in spec.items():
        if kind not in COLUMN_TYPES:
            raise ImportSchemaError(f"column {name!r}: type {kind!r} is not one of "
                                    f"{', '.join(COLUMN_TYPES)}", table=table, source=source)
    missing_key = [k for k in key if k not in spec]
    if missing_key:
        raise ImportSchemaError(f"key column(s) {', '.join(missing_key)} are not among the "
                                f"columns {', '.join(spec) or '(none)'}", table=table,
                                source=source)
    with store.connect() as conn:
        exists = sa.inspect(conn).has_table(table)
        target = (sa.Table(table, sa.MetaData(), autoload_with=conn) if exists
                  else _new_table(table, spec, key))
    names = list(spec)
    unknown = [n for n in names if n not in target.c]
    if unknown:
        raise ImportSchemaError(f"table {table!r} has no column(s) {', '.join(unknown)}",
                                table=table, source=source)
    use_key = tuple(key) or tuple(c.name for c in target.primary_key.columns
                                  if c.name in spec)
    dialect = store.engine.dialect
    converters = [_converter(target.c[n].type.dialect_impl(dialect)) for n in names]

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v if c is None else c(v) for v, c in zip(row, converters, strict=True))

    tuples = [tuple(r.get(n) for n in names) for r in listed]

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        for start in range(0, len(tuples), batch_size):
            yield tuples[start:start + batch_size]

    create = None
    ddl: list[str] = []
    if not exists:
        ddl = [str(sa.schema.CreateTable(target).compile(dialect=dialect)).strip() + ";"]

        def create_table(conn: Connection) -> None:
            target.create(conn)
        create = create_table
    job = LoadJob(table=table, columns=names, key=use_key, rows=batches, total=len(tuples),
                  create=create, ddl=ddl, state=state,
                  convert=convert if any(c is not None for c in converters) else None)
    if not use_key and mode == "upsert":
        job.notes.append("no key: the table's rows are replaced")
    loader = Loader(store, mode=mode, clear=clear, dry_run=dry_run, progress=progress)
    report = ImportReport(source=source, store=store.masked_url, dry_run=dry_run, mode=mode)
    report.tables = loader.run([job], [[table]])
    report.seconds = time.perf_counter() - started
    return report


def _new_table(table: str, spec: Mapping[str, str], key: Sequence[str]) -> sa.Table:
    return sa.Table(table, sa.MetaData(), *(
        sa.Column(name, _sa_type(kind), primary_key=name in key, autoincrement=False)
        for name, kind in spec.items()))


def _converter(kind: sa.types.TypeEngine[Any]) -> Any:
    if isinstance(kind, sa.JSON) or type(kind).__name__ == "JSONB":
        return json_cell
    if isinstance(kind, (sa.Float, sa.Numeric)) and not isinstance(kind, sa.Integer):
        return lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if isinstance(kind, sa.String):
        return lambda v: v if v is None or isinstance(v, str) else json_cell(v)
    return None


def import_json(
    store: Store,
    path: str | os.PathLike[str],
    *,
    table: str,
    key: Sequence[str] = (),
    clear: bool = False,
    dry_run: bool = False,
    mode: Mode = "upsert",
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import a JSON file's objects into ``table`` (see :func:`read_json_rows`); the key
    defaults to ``id`` when every object has one."""
    from rubix_integration.importer._sqlite import signature

    file = Path(path).expanduser()
    rows = read_json_rows(file)
    if not key and rows and all(r.get("id") is not None for r in rows):
        key = ("id",)
    source = str(file.resolve())
    return import_rows(store, table, rows, key=key, clear=clear, dry_run=dry_run, mode=mode,
                       source=source, state=(source, signature(file)), progress=progress)
