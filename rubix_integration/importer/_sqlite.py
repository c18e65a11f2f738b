"""``import sqlite``: any SQLite database into the store, schema kept, in dependency order."""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.errors import ImportSchemaError, ImportSourceError
from rubix_integration.importer._load import Batches, Loader, LoadJob, Mode
from rubix_integration.importer._schema import (
    SourceTable,
    _quote,
    build_target,
    dependency_order,
    postgres_type,
    reflect_sqlite,
)
from rubix_integration.importer.report import ImportReport, ProgressCallback

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = ["import_sqlite", "open_source"]

_MAGIC = b"SQLite format 3\x00"


def open_source(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-only (never written, not even its journal); check it is SQLite."""
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise ImportSourceError(f"cannot read {path}: {exc.strerror or exc}", source=str(path),
                                kind="unreadable") from exc
    if head and not head.startswith(_MAGIC):
        raise ImportSourceError(f"{path} is not a SQLite database", source=str(path),
                                kind="not_sqlite")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise ImportSourceError(f"{path} cannot be opened as a SQLite database: {exc}",
                                source=str(path), kind="not_sqlite") from exc
    return conn


def signature(path: Path) -> str:
    """Sizes, modification times and change counter of the file and its WAL."""
    parts: list[str] = []
    for p in (path, Path(f"{path}-wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
        parts.append(head[24:28].hex() + head[40:44].hex())
    except OSError:
        parts.append("?")
    return "|".join(parts)


def _batches(conn: sqlite3.Connection, table: SourceTable, batch_size: int) -> Batches:
    cols = ", ".join(_quote(c) for c in table.column_names)
    order = ", ".join(_quote(k) for k in table.primary_key) if table.primary_key else "rowid"
    without_rowid = "WITHOUT ROWID" in table.sql.upper() and not table.primary_key
    cursor = conn.execute(f"SELECT {cols} FROM {_quote(table.name)}"
                          + ("" if without_rowid else f" ORDER BY {order}"))
    try:
        while True:
            batch = cursor.fetchmany(batch_size)
            if not batch:
                return
            yield batch
    finally:
        cursor.close()


def _rows_of(conn: sqlite3.Connection, table: SourceTable,
             batch_size: int) -> Callable[[], Batches]:
    def rows() -> Batches:
        return _batches(conn, table, batch_size)
    return rows


def _check_existing(conn: Connection, table: SourceTable, postgres: bool) -> list[str]:
    """Problems mapping ``table``'s columns onto the existing target table."""
    found = {c["name"]: c for c in sa.inspect(conn).get_columns(table.name)}
    problems: list[str] = []
    for col in table.columns:
        target = found.get(col.name)
        if target is None:
            problems.append(f"column {col.name!r} is missing from the target table")
            continue
        if postgres and isinstance(postgres_type(col.declared), sa.LargeBinary) and \
                not isinstance(target["type"], sa.LargeBinary):
            problems.append(f"column {col.name!r} holds blobs but the target column is "
                            f"{target['type']}")
    names = set(table.column_names)
    for name, info in found.items():
        if name not in names and not info["nullable"] and info.get("default") is None \
                and info.get("autoincrement") is not True and not info.get("identity"):
            problems.append(f"target column {name!r} is NOT NULL without a default and the "
                            "source has no such column")
    return problems


def import_sqlite(
    store: Store,
    path: str | os.PathLike[str],
    *,
    tables: Sequence[str] | None = None,
    clear: bool = False,
    dry_run: bool = False,
    batch_size: int = 5000,
    mode: Mode = "upsert",
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import the tables of the SQLite file at ``path`` into ``store`` (see the module doc)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    source_path = Path(path).expanduser()
    if not source_path.is_file():
        raise ImportSourceError(f"{source_path} is not a file", source=str(source_path),
                                kind="unreadable")
    sig = signature(source_path)  # before the snapshot: a later change shows next time
    source_id = str(source_path.resolve())
    with closing(open_source(source_path)) as src:
        src.execute("BEGIN")  # one snapshot for every table, even while a writer goes on
        try:
            reflected = reflect_sqlite(src)
            if tables:
                unknown = [t for t in tables if t not in reflected]
                if unknown:
                    raise ImportSourceError(
                        f"{source_path} has no table(s) {', '.join(unknown)}; it has "
                        f"{', '.join(reflected) or 'none'}", source=str(source_path),
                        kind="no_table")
                chosen = {t: reflected[t] for t in reflected if t in tables}
            else:
                chosen = reflected
            report = _run(store, src, chosen, source_id, sig, clear=clear, dry_run=dry_run,
                          batch_size=batch_size, mode=mode, progress=progress)
        finally:
            src.rollback()
    report.seconds = time.perf_counter() - started
    return report


def _run(store: Store, src: sqlite3.Connection, chosen: dict[str, SourceTable], source_id: str,
         sig: str, *, clear: bool, dry_run: bool, batch_size: int, mode: Mode,
         progress: ProgressCallback | None) -> ImportReport:
    order = dependency_order({t: [fk.ref_table for fk in s.foreign_keys if fk.ref_table != t]
                              + ([t] if any(fk.ref_table == t for fk in s.foreign_keys) else [])
                              for t, s in chosen.items()})
    postgres = store.engine.dialect.name == "postgresql"
    own = [t for t in chosen if t in store.metadata.tables]
    if own:
        raise ImportSchemaError(
            f"table(s) {', '.join(own)} share a name with the store's own tables and would be "
            "written into them; leave them out with --tables", table=own[0], source=source_id)
    metadata = sa.MetaData()
    with store.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        problems: dict[str, list[str]] = {}
        for name, table in chosen.items():
            if name in existing:
                found = _check_existing(conn, table, postgres)
                if found:
                    problems[name] = found
        referenced = {fk.ref_table for t in chosen.values() for fk in t.foreign_keys}
        outside = [t for t in referenced if t in existing]
        if postgres and outside:
            metadata.reflect(conn, only=outside)
    if problems:
        lines = "; ".join(f"{t}: {', '.join(p)}" for t, p in problems.items())
        raise ImportSchemaError(f"existing target table(s) cannot take the source's columns: "
                                f"{lines}", table=next(iter(problems)))
    creators = _creators(store, chosen, order.tables, order.groups, existing, metadata,
                         postgres)
    jobs: list[LoadJob] = []
    for name in order.tables:
        table = chosen[name]
        create, ddl, notes = creators.get(name, (None, [], []))
        after = None
        if create is not None and name in metadata.tables and len(order.groups[name]) == 1:
            # a cycle's tables get theirs as they are created: PostgreSQL builds no index on
            # a table with deferred key checks pending
            after = _after_load(metadata.tables[name])
        jobs.append(LoadJob(
            table=name, columns=table.column_names, key=table.key,
            rows=_rows_of(src, table, batch_size),
            total=int(src.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]),
            create=create, ddl=ddl, notes=notes,
            depends_on=tuple(fk.ref_table for fk in table.foreign_keys
                             if fk.ref_table in chosen and fk.ref_table != name),
            state=(source_id, sig),
            after_create=after))
        if not table.key and mode == "upsert":
            jobs[-1].notes.append("no primary or unique key: the table's rows are replaced")
    groups: list[list[str]] = []
    for name in order.tables:
        group = list(order.groups[name])
        if group not in groups:
            groups.append(group)
    loader = Loader(store, mode=mode, clear=clear, dry_run=dry_run, progress=progress)
    report = ImportReport(source=source_id, store=store.masked_url, dry_run=dry_run, mode=mode,
                          cycles=order.cycles, self_references=order.self_references)
    report.tables = loader.run(jobs, groups)
    return report


Creator = tuple[Callable[["Connection"], None], list[str], list[str]]


def _creators(store: Store, chosen: dict[str, SourceTable], order: list[str],
              groups: dict[str, tuple[str, ...]], existing: set[str], metadata: sa.MetaData,
              postgres: bool) -> dict[str, Creator]:
    """How to create each missing table, the DDL it runs and what it cannot keep.

    The tables of a foreign-key cycle are created together, by the first of them loaded.
    """
    out: dict[str, Creator] = {}
    if not postgres:
        for name in order:
            if name in existing:
                continue
            statements = [sql for t in groups[name] if t not in existing
                          for sql in (chosen[t].sql, *chosen[t].index_sql)]

            def create_sqlite(conn: Connection, statements: list[str] = statements) -> None:
                raw: Any = conn.connection.dbapi_connection
                for sql in statements:
                    raw.execute(sql)
            out[name] = (create_sqlite, [s.strip() + ";" for s in statements], [])
        return out
    targets: dict[str, sa.Table] = {}
    notes: dict[str, list[str]] = {}
    for name in order:
        if name in existing:
            continue
        cyclic = len(groups[name]) > 1
        targets[name], notes[name] = build_target(chosen[name], metadata, chosen, cyclic)
    for name in targets:
        together = [targets[t] for t in groups[name] if t in targets]
        cyclic = len(groups[name]) > 1

        def create_postgres(conn: Connection, together: list[sa.Table] = together,
                            cyclic: bool = cyclic) -> None:
            if cyclic:  # created whole, their keys deferrable
                metadata.create_all(conn, tables=together)
                return
            # secondary indexes and foreign keys come after the rows (see _after_load)
            for table in together:
                conn.execute(sa.schema.CreateTable(table, include_foreign_key_constraints=[]))
        out[name] = (create_postgres, _ddl(store, metadata, together), notes[name])
    return out


def _after_load(table: sa.Table) -> Callable[[Connection], None]:
    """Build ``table``'s secondary indexes and add its foreign keys once its rows are in: one
    pass each instead of a check per row."""
    def build(conn: Connection) -> None:
        for index in table.indexes:
            index.create(conn)
        for fk in table.foreign_key_constraints:
            conn.execute(sa.schema.AddConstraint(fk))
    return build


def _ddl(store: Store, metadata: sa.MetaData, targets: list[sa.Table]) -> list[str]:
    out: list[str] = []

    def collect(sql: Any, *_args: Any, **_kw: Any) -> None:
        out.append(str(sql.compile(dialect=engine.dialect)).strip() + ";")

    engine = sa.create_mock_engine(store.engine.url, collect)
    metadata.create_all(engine, tables=targets, checkfirst=False)
    return out


def iter_rows(batches: Batches) -> Iterator[tuple[Any, ...]]:
    """Every row of a stream of batches."""
    for batch in batches:
        yield from batch
