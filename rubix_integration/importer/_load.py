"""Load streams of rows into store tables: staged, upserted, one transaction per table.

Each table (or each set of tables in a foreign-key cycle) is created if missing and loaded in a
transaction of its own, so an interrupted import leaves every table as it was or as it is in the
source, never half. With ``clear`` every table is emptied (children first) and loaded in one
transaction, each table inside a savepoint; a table that fails is left out with the tables that
depend on it, and the rest is done again without them.

Rows go to a temporary staging table (``COPY`` on PostgreSQL, ``executemany`` on SQLite) and
then into the target with one ``INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE`` the row
differs, so unchanged rows are not rewritten. Into an empty table the rows go directly.
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from rubix_integration.importer._sql import (
    batch_digest,
    execute,
    is_database_error,
    release,
    rollback_to,
    row,
    savepoint,
    scalar,
    short_error,
)
from rubix_integration.importer.models import IMPORT_STATE
from rubix_integration.importer.report import Progress, ProgressCallback, TableReport

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.stores.base import Store

__all__ = ["MODES", "LoadJob", "Loader", "Mode"]

Mode = Literal["upsert", "insert", "replace"]
MODES: tuple[str, ...] = ("upsert", "insert", "replace")
#: Row keys of a failed table reported at most.
MAX_FAILED_KEYS = 20
#: Seconds between two progress events of one table.
PROGRESS_EVERY_S = 0.1

Batches = Iterator[list[tuple[Any, ...]]]


@dataclass
class LoadJob:
    """One target table to fill from a stream of row batches.

    ``rows`` returns a fresh iterator of batches (tuples in ``columns`` order); ``create``
    creates the target in a connection's transaction (``None``: it exists); ``depends_on``
    names the tables that must load first; ``state`` is ``(source, signature)`` for
    incremental imports: an unchanged signature skips the table unread, an unchanged digest of
    its rows (computed while they are staged) skips the merge.
    """

    table: str
    columns: list[str]
    key: tuple[str, ...]
    rows: Callable[[], Batches]
    total: int
    create: Callable[[Connection], None] | None = None
    ddl: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    depends_on: tuple[str, ...] = ()
    state: tuple[str, str] | None = None
    convert: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    #: Run after the rows of a table created by ``create`` are in (its secondary indexes:
    #: built once over the loaded rows instead of row by row).
    after_create: Callable[[Connection], None] | None = None


class _TableFailed(Exception):
    def __init__(self, table: str, error: str, keys: list[Any] | None = None) -> None:
        super().__init__(error)
        self.table = table
        self.error = error
        self.keys = keys


class Loader:
    """Loads :class:`LoadJob` s into ``store`` in order, reporting per table."""

    def __init__(self, store: Store, *, mode: Mode = "upsert", clear: bool = False,
                 dry_run: bool = False, progress: ProgressCallback | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.store = store
        self.mode: Mode = mode
        self.clear = clear
        self.dry_run = dry_run
        self.progress = progress
        self.postgres = store.engine.dialect.name == "postgresql"
        self._q = store.engine.dialect.identifier_preparer.quote
        #: Each table's foreign-key group, and the tables created in the open transaction (a
        #: cycle's tables are created together, by the first of them loaded).
        self._groups: dict[str, tuple[str, ...]] = {}
        self._created: set[str] = set()

    # --- public --------------------------------------------------------------------------------

    def run(self, jobs: Sequence[LoadJob], groups: Sequence[Sequence[str]]) -> list[TableReport]:
        """Load ``jobs``; ``groups`` are the tables in load order, cycles grouped together."""
        by_name = {j.table: j for j in jobs}
        self._groups = {t: tuple(g) for g in groups for t in g}
        reports = {j.table: TableReport(j.table, ddl=list(j.ddl) if j.create else [],
                                        notes=list(j.notes)) for j in jobs}
        with self.store.connect() as conn:
            self._prepare_state(conn)
        if self.dry_run:
            self._dry_run(by_name, groups, reports)
        elif self.clear:
            self._run_cleared(by_name, groups, reports)
        else:
            self._run_each(by_name, groups, reports)
        return [reports[t] for g in groups for t in g if t in reports]

    # --- flows ---------------------------------------------------------------------------------

    def _run_each(self, jobs: dict[str, LoadJob], groups: Sequence[Sequence[str]],
                  reports: dict[str, TableReport]) -> None:
        failed: set[str] = set()
        for group in groups:
            members = [jobs[t] for t in group if t in jobs]
            blocked = self._blocked(members, failed, reports)
            if blocked:
                continue
            started = time.perf_counter()
            self._created = set()
            try:
                try:
                    with self.store.connect() as conn, self.store.transaction_on(conn):
                        self._defer(conn)
                        for job in members:
                            self._load_job(conn, job, reports[job.table], emptied=False)
                        self._check_foreign_keys(conn, members)
                except _TableFailed:
                    raise
                except Exception as exc:  # deferred keys are checked as the transaction commits
                    if not is_database_error(exc):
                        raise
                    raise _TableFailed(members[0].table, short_error(exc)) from exc
            except _TableFailed as exc:
                self._fail(exc, members, reports, failed)
            for job in members:
                reports[job.table].seconds = time.perf_counter() - started
                self._emit(job, "end", reports[job.table].total, reports[job.table])

    def _run_cleared(self, jobs: dict[str, LoadJob], groups: Sequence[Sequence[str]],
                     reports: dict[str, TableReport]) -> None:
        failed: set[str] = set()
        order = [t for g in groups for t in g if t in jobs]
        while True:
            live = [t for t in order if t not in failed
                    and reports[t].status != "skipped"]
            self._created = set()
            try:
                with self.store.connect() as conn, self.store.transaction_on(conn):
                    self._defer(conn)
                    self._clear_all(conn, [jobs[t] for t in reversed(live)], reports)
                    for group in groups:
                        members = [jobs[t] for t in group if t in live]
                        if not members:
                            continue
                        point = savepoint(conn)
                        try:
                            for job in members:
                                self._load_job(conn, job, reports[job.table], emptied=True)
                            self._check_foreign_keys(conn, members)
                        except _TableFailed:
                            rollback_to(conn, point)
                            raise
                        release(conn, point)
                        for job in members:  # loaded; committed with the whole transaction
                            self._emit(job, "end", reports[job.table].total,
                                       reports[job.table])
            except _TableFailed as exc:
                # the transaction is gone: leave the table (and its dependents) out, go again
                group = next(g for g in groups if exc.table in g)
                self._fail(exc, [jobs[t] for t in group if t in jobs], reports, failed)
                self._block_dependents(jobs, order, failed, reports)
                for t in live:
                    if t not in failed and reports[t].status != "skipped":
                        reports[t] = TableReport(t, ddl=reports[t].ddl, notes=reports[t].notes)
                continue
            for t in live:
                reports[t].cleared = True
            return

    def _dry_run(self, jobs: dict[str, LoadJob], groups: Sequence[Sequence[str]],
                 reports: dict[str, TableReport]) -> None:
        with self.store.connect() as conn:
            trans = conn.begin()
            try:
                for group in groups:
                    for table in group:
                        if table in jobs:
                            self._plan_job(conn, jobs[table], reports[table])
            finally:
                trans.rollback()

    # --- one table -----------------------------------------------------------------------------

    def _load_job(self, conn: Connection, job: LoadJob, report: TableReport, *,
                  emptied: bool) -> None:
        started = time.perf_counter()
        try:
            if job.table not in self._created and job.create is not None and \
                    not self._exists(conn, job.table):
                group = self._groups.get(job.table, (job.table,))
                missing = [t for t in group if not self._exists(conn, t)]
                job.create(conn)
                self._created.update(missing)
            if job.table in self._created:
                report.created = True
                emptied = True
            else:
                report.ddl = []
            previous = None
            if not self.clear and not report.created:
                previous = self._previous(conn, job)
                if previous is not None and job.state is not None and \
                        previous[0] == job.state[1]:
                    self._mark_unchanged(report, job)
                    return
            self._emit(job, "start", job.total)
            report.total = job.total
            digest = self._load_rows(conn, job, job.rows(), report,
                                     empty=emptied or self._is_empty(conn, job.table),
                                     previous=previous[1:] if previous else None)
            if report.status == "unchanged":
                self._save_state(conn, job, digest)
                return
            if report.created and job.after_create is not None:
                job.after_create(conn)
            self._reset_sequences(conn, job.table)
            self._save_state(conn, job, digest)
        except _TableFailed:
            raise
        except Exception as exc:
            if not is_database_error(exc):
                raise
            raise _TableFailed(job.table, short_error(exc)) from exc
        finally:
            report.seconds = time.perf_counter() - started

    def _load_rows(self, conn: Connection, job: LoadJob, batches: Batches,
                   report: TableReport | None, *, empty: bool,
                   previous: tuple[str, int] | None = None) -> str:
        """Write the rows; fill ``report``'s counts; return the rows' digest.

        ``previous`` is the digest and row count of the last import: when the staged rows
        hash the same, the merge is skipped and the report says ``unchanged``."""
        q = self._q
        target = q(job.table)
        cols = ", ".join(q(c) for c in job.columns)
        raw: Any = conn.connection.dbapi_connection
        replace = self.mode == "replace" or (self.mode == "upsert" and not job.key)
        if replace and not empty:
            execute(conn, f"DELETE FROM {target}")
            empty = True
        staged = not empty
        into = target
        if staged:
            into = self._staging_table(conn, "rubix_import", target, cols)
        digest = batch_digest()
        written = self._stream(raw, job, into, cols, batches, digest)
        if report is not None:
            report.total = written
        if not staged:
            if report is not None:
                report.new = written
            return str(digest.hexdigest())
        if previous is not None and report is not None and self.mode == "upsert" and \
                previous == (str(digest.hexdigest()), self._count(conn, job.table)):
            execute(conn, f"DROP TABLE {into}")
            self._mark_unchanged(report, job)
            return str(digest.hexdigest())
        new, changed = self._merge(conn, job, into, cols)
        execute(conn, f"DROP TABLE {into}")
        if report is not None:
            report.new, report.changed = new, changed
            report.unchanged = max(0, written - new - changed)
        return str(digest.hexdigest())

    def _stream(self, raw: Any, job: LoadJob, into: str, cols: str, batches: Batches,
                digest: Any) -> int:
        done = 0
        convert = job.convert
        last = time.monotonic()
        if self.postgres:
            with raw.cursor() as cursor, cursor.copy(f"COPY {into} ({cols}) FROM STDIN") as cp:
                write = cp.write_row
                for batch in batches:
                    digest.update(pickle.dumps(batch, 5))
                    rows = batch if convert is None else [convert(r) for r in batch]
                    for item in rows:
                        write(item)
                    done += len(batch)
                    last = self._tick(job, done, last)
            return done
        marks = ", ".join("?" for _ in job.columns)
        cursor = raw.cursor()
        try:
            sql = f"INSERT INTO {into} ({cols}) VALUES ({marks})"
            for batch in batches:
                digest.update(pickle.dumps(batch, 5))
                cursor.executemany(sql, batch if convert is None else map(convert, batch))
                done += len(batch)
                last = self._tick(job, done, last)
        finally:
            cursor.close()
        return done

    def _tick(self, job: LoadJob, done: int, last: float) -> float:
        now = time.monotonic()
        if self.progress is not None and (now - last >= PROGRESS_EVERY_S or done >= job.total):
            self._emit(job, "rows", done)
            return now
        return last

    def _merge(self, conn: Connection, job: LoadJob, staging: str, cols: str) -> tuple[int, int]:
        """Move the staged rows into the target; return (new, changed)."""
        q = self._q
        target = q(job.table)
        if not job.key:
            count = scalar(conn, f"SELECT count(*) FROM {staging}")
            execute(conn, f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging}")
            return count, 0
        conflict = ", ".join(q(k) for k in job.key)
        rest = [c for c in job.columns if c not in job.key]
        if self.postgres:
            if self.mode == "insert" or not rest:
                action = "DO NOTHING"
            else:
                sets = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in rest)
                old = ", ".join(f"{target}.{q(c)}" for c in rest)
                new = ", ".join(f"EXCLUDED.{q(c)}" for c in rest)
                action = (f"DO UPDATE SET {sets} WHERE ROW({old}, NULL) IS DISTINCT FROM "
                          f"ROW({new}, NULL)")
            # new rows counted by one anti-join: cheaper than RETURNING a million rows
            match = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in job.key)
            new_rows = scalar(conn, f"SELECT count(*) FROM {staging} AS s WHERE NOT "
                                          f"EXISTS (SELECT 1 FROM {target} AS t WHERE {match})")
            raw: Any = conn.connection.dbapi_connection
            with raw.cursor() as cursor:
                cursor.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staging} "
                               f"ON CONFLICT ({conflict}) {action}")
                touched = max(0, cursor.rowcount)
            return new_rows, max(0, touched - new_rows)
        match = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in job.key)
        new_rows = scalar(conn, f"SELECT count(*) FROM {staging} AS s WHERE NOT EXISTS "
                                      f"(SELECT 1 FROM main.{target} AS t WHERE {match})")
        if self.mode == "insert" or not rest:
            action = "DO NOTHING"
        else:
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in rest)
            differs = " OR ".join(f"{target}.{q(c)} IS NOT excluded.{q(c)}" for c in rest)
            action = f"DO UPDATE SET {sets} WHERE {differs}"
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            cursor.execute(f"INSERT INTO main.{target} ({cols}) SELECT {cols} FROM {staging} "
                           f"WHERE true ON CONFLICT ({conflict}) {action}")
            touched = max(0, cursor.rowcount)
        finally:
            cursor.close()
        return new_rows, max(0, touched - new_rows)

    def _staging_table(self, conn: Connection, prefix: str, target: str, cols: str) -> str:
        """Create an empty temporary table with the columns ``cols`` (quoted) of ``target``
        (quoted), dropped at commit on PostgreSQL; return its quoted name."""
        name = self._q(f"{prefix}_{uuid.uuid4().hex[:12]}")
        if self.postgres:
            execute(conn, f"CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS "
                          f"SELECT {cols} FROM {target} WITH NO DATA")
        else:
            execute(conn, f"CREATE TEMPORARY TABLE {name} ({cols})")
        return name

    def _plan_job(self, conn: Connection, job: LoadJob, report: TableReport) -> None:
        """Count new, changed and unchanged rows without writing; roll back afterwards."""
        report.status = "planned"
        report.total = job.total
        exists = self._exists(conn, job.table)
        if not exists:
            report.new = job.total
            return
        report.ddl = []
        replace = self.clear or self.mode == "replace" or not job.key
        if self.clear:
            report.ddl.append(f"DELETE FROM {self._q(job.table)}")
        if replace:
            report.new = job.total
            return
        q = self._q
        cols = ", ".join(q(c) for c in job.columns)
        staging = self._staging_table(conn, "rubix_plan", q(job.table), cols)
        raw: Any = conn.connection.dbapi_connection
        report.total = self._stream(raw, job, staging, cols, job.rows(), batch_digest())
        match = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in job.key)
        rest = [c for c in job.columns if c not in job.key]
        same = " OR ".join(
            (f"t.{q(c)} IS DISTINCT FROM s.{q(c)}" if self.postgres else
             f"t.{q(c)} IS NOT s.{q(c)}") for c in rest) or "false"
        target = q(job.table) if self.postgres else f"main.{q(job.table)}"
        counts = row(conn, (
            f"SELECT sum(CASE WHEN t.{q(job.key[0])} IS NULL THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN t.{q(job.key[0])} IS NOT NULL AND ({same}) THEN 1 ELSE 0 END) "
            f"FROM {staging} AS s LEFT JOIN {target} AS t ON {match}"))
        report.new = int(counts[0] or 0)
        report.changed = int(counts[1] or 0) if self.mode == "upsert" else 0
        report.unchanged = report.total - report.new - report.changed

    # --- incremental state ---------------------------------------------------------------------

    def _prepare_state(self, conn: Connection) -> None:
        if self.dry_run:
            return
        with self.store.transaction_on(conn):
            IMPORT_STATE.create(conn, checkfirst=True)

    def _previous(self, conn: Connection, job: LoadJob) -> tuple[str, str, int] | None:
        """The signature, digest and row count of the last import of ``job``'s table, if the
        table still holds that many rows (else it changed since, and is loaded again)."""
        if job.state is None or self.mode != "upsert":
            return None
        t = IMPORT_STATE
        found = conn.execute(sa.select(t.c.signature, t.c.digest, t.c.rows).where(
            t.c.source == job.state[0], t.c.table_name == job.table)).first()
        if found is None or self._count(conn, job.table) != found.rows:
            return None
        return str(found.signature), str(found.digest), int(found.rows)

    def _mark_unchanged(self, report: TableReport, job: LoadJob) -> None:
        report.status = "unchanged"
        report.total = report.unchanged = job.total
        report.new = report.changed = 0

    def _count(self, conn: Connection, table: str) -> int:
        return scalar(conn, f"SELECT count(*) FROM {self._q(table)}")

    def _save_state(self, conn: Connection, job: LoadJob, digest: str) -> None:
        if job.state is None:
            return
        source, signature = job.state
        count = scalar(conn, f"SELECT count(*) FROM {self._q(job.table)}")
        self.store.upsert(IMPORT_STATE, [{"source": source, "table_name": job.table,
                                          "signature": signature, "digest": digest,
                                          "rows": count, "imported_at": time.time()}],
                          connection=conn)

    # --- failures ------------------------------------------------------------------------------

    def _blocked(self, members: list[LoadJob], failed: set[str],
                 reports: dict[str, TableReport]) -> bool:
        names = {j.table for j in members}
        for job in members:
            bad = [d for d in job.depends_on if d in failed and d not in names]
            if bad:
                for j in members:
                    reports[j.table].status = "skipped"
                    reports[j.table].error = f"depends on {', '.join(bad)}, which failed"
                    failed.add(j.table)
                return True
        return False

    def _block_dependents(self, jobs: dict[str, LoadJob], order: list[str], failed: set[str],
                          reports: dict[str, TableReport]) -> None:
        changed = True
        while changed:
            changed = False
            for t in order:
                if t in failed:
                    continue
                bad = [d for d in jobs[t].depends_on if d in failed]
                if bad:
                    reports[t] = TableReport(t, status="skipped", notes=reports[t].notes,
                                             error=f"depends on {', '.join(bad)}, which failed")
                    failed.add(t)
                    changed = True

    def _fail(self, exc: _TableFailed, members: list[LoadJob],
              reports: dict[str, TableReport], failed: set[str]) -> None:
        for job in members:
            report = reports[job.table]
            failed.add(job.table)
            report.status = "failed"
            report.new = report.changed = report.unchanged = 0
            report.cleared = False
            if job.table == exc.table:
                report.error = exc.error
                if exc.keys is not None:
                    report.failed_keys = exc.keys
                    continue
                try:
                    report.failed_keys = self._find_bad_rows(job)
                except Exception as probe:  # the report keeps the first error either way
                    report.notes.append(f"could not single out the rows: {short_error(probe)}")
            else:
                report.error = f"rolled back with {exc.table} (same foreign-key cycle)"

    def _find_bad_rows(self, job: LoadJob) -> list[Any]:
        """The keys of rows that fail on their own, found by halving batches; rolled back."""
        found: list[Any] = []
        keys = [job.columns.index(k) for k in job.key] or list(range(len(job.columns)))
        with self.store.connect() as conn:
            trans = conn.begin()
            try:
                self._defer(conn)
                if job.create is not None and not self._exists(conn, job.table):
                    job.create(conn)
                    if job.after_create is not None:
                        job.after_create(conn)

                def probe(rows: list[tuple[Any, ...]]) -> None:
                    if len(found) >= MAX_FAILED_KEYS or not rows:
                        return
                    point = savepoint(conn)
                    try:
                        self._load_rows(conn, job, iter([rows]), None, empty=False)
                        release(conn, point)
                        return
                    except Exception as exc:
                        if not is_database_error(exc):
                            raise
                        rollback_to(conn, point)
                    if len(rows) == 1:
                        first = rows[0]
                        key = tuple(first[i] for i in keys)
                        found.append(key[0] if len(key) == 1 else key)
                        return
                    half = len(rows) // 2
                    probe(rows[:half])
                    probe(rows[half:])

                for batch in job.rows():
                    probe(batch)
                    if len(found) >= MAX_FAILED_KEYS:
                        break
            finally:
                trans.rollback()
        return found

    # --- helpers -------------------------------------------------------------------------------

    def _clear_all(self, conn: Connection, jobs: list[LoadJob],
                   reports: dict[str, TableReport]) -> None:
        present = [j for j in jobs if self._exists(conn, j.table)]
        if not present:
            return
        if self.postgres:
            point = savepoint(conn)
            try:
                names = ", ".join(self._q(j.table) for j in present)
                execute(conn, f"TRUNCATE {names}")
                release(conn, point)
                return
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                rollback_to(conn, point)  # referenced from elsewhere: delete instead
        for job in present:
            point = savepoint(conn)
            try:
                execute(conn, f"DELETE FROM {self._q(job.table)}")
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                rollback_to(conn, point)
                raise _TableFailed(job.table, f"cannot clear: {short_error(exc)}") from exc
            release(conn, point)

    def _check_foreign_keys(self, conn: Connection, members: list[LoadJob]) -> None:
        """On SQLite, whose keys are checked only as the transaction commits: fail the first
        table holding rows whose parent row is missing, naming them."""
        if self.postgres:
            return  # checked by each statement, or (in a cycle) as the transaction commits
        raw: Any = conn.connection.dbapi_connection
        for job in members:
            found = raw.execute(f"PRAGMA foreign_key_check({self._q(job.table)})").fetchall()
            if not found:
                continue
            rowids = sorted({r[1] for r in found if r[1] is not None})[:MAX_FAILED_KEYS]
            keys: list[Any] = list(rowids)
            if job.key and rowids:
                cols = ", ".join(self._q(k) for k in job.key)
                marks = ", ".join("?" for _ in rowids)
                rows = raw.execute(f"SELECT {cols} FROM {self._q(job.table)} WHERE rowid IN "
                                   f"({marks}) ORDER BY rowid", rowids).fetchall()
                keys = [r[0] if len(r) == 1 else tuple(r) for r in rows]
            parents = ", ".join(sorted({str(r[2]) for r in found}))
            raise _TableFailed(job.table, f"FOREIGN KEY constraint failed: {len(found)} row(s) "
                                          f"refer to rows missing from {parents}", keys)

    def _reset_sequences(self, conn: Connection, table: str) -> None:
        if not self.postgres:
            return  # SQLite's AUTOINCREMENT counter follows the largest id written
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.execute(
                "SELECT a.attname, pg_get_serial_sequence(%(t)s, a.attname) FROM pg_attribute a "
                "WHERE a.attrelid = %(t)s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                {"t": self._q(table)})
            found = [(c, s) for c, s in cursor.fetchall() if s]
            for column, sequence in found:
                col = self._q(column)
                cursor.execute(
                    f"SELECT setval(%(s)s, COALESCE(max({col}), 0) + 1, false) "
                    f"FROM {self._q(table)}", {"s": sequence})

    def _defer(self, conn: Connection) -> None:
        if self.postgres:
            execute(conn, "SET CONSTRAINTS ALL DEFERRED")
        else:
            execute(conn, "PRAGMA defer_foreign_keys = ON")

    def _exists(self, conn: Connection, table: str) -> bool:
        return bool(sa.inspect(conn).has_table(table))

    def _is_empty(self, conn: Connection, table: str) -> bool:
        return scalar(conn, f"SELECT count(*) FROM (SELECT 1 FROM {self._q(table)} "
                                  "LIMIT 1) AS one") == 0

    def _emit(self, job: LoadJob, phase: Literal["start", "rows", "end"], done: int,
              report: TableReport | None = None) -> None:
        if self.progress is not None:
            self.progress(Progress(job.table, phase, job.total, done, report))
