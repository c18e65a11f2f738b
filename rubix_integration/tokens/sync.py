"""The token sync: node databases -> token content through IPFS -> one store.

How it runs:

- discovery finds every node database; each is fingerprinted by ``stat`` alone (database and
  ``-wal``) and skipped when the store already holds a successful sync of that fingerprint;
- the IPFS backend of each node is chosen in this process (by the ``choose_backend`` given);
- the store may be given as a callable opening it: a run of every database (``full``), which
  needs nothing of the store to plan, then starts its worker processes before opening it, so
  that reading the first databases overlaps importing the store's libraries, opening it and
  creating its schema. Workers import no SQLAlchemy: they only read and spool. The spool kind
  is then the one the store's URL names
  (:func:`~rubix_integration.stores.spools.spool_kind_for_url`); a store that loads another
  kind still gets every row, only slower;
- each changed database is one unit of work (:mod:`.pool`), done by a pool of worker processes
  (or threads, for small runs, or when the host registered plugin objects a process cannot
  import): open a snapshot of the database, stream its tokens in batches, fetch each token's
  content (through a pool of threads for backends that wait on a daemon or a subprocess), spool
  the rows to a temporary file (:mod:`.spool`), then merge them into the store in one
  transaction (upsert the rows still there, tombstone those gone, record the fingerprint in
  ``processeddatabases``, commit; :mod:`.writer`). Processes keep the CPU-bound reading and
  hashing of several databases off one interpreter lock; the store serialises writers. The
  store picks the spool it loads fastest (:mod:`rubix_integration.stores.spools`): a SQLite
  store attaches a SQLite spool and merges it with one ``INSERT … SELECT … ON CONFLICT``, so
  the one writer spends no Python time per row; PostgreSQL reads pickled batches back and
  ``COPY``-s them into a staging table first;
- a crash, ``kill -9`` or Ctrl-C at any moment leaves every database either fully synced or as it
  was, so a re-run converges to the same state; memory stays bounded by a few batches per worker;
- one database never stops the others: each has a time limit (``sync_db_timeout``; SQLite's work
  is interrupted from its progress handler, which also ends it at once on Ctrl-C), and rows the
  store refuses roll back that database's transaction only and mark it failed
  (``rejected_by_store``) in a transaction of its own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rubix_integration.stores.spools import spool_kind, spool_kind_for_url
from rubix_integration.tokens.content import DEFAULT_MAX_SIZE
from rubix_integration.tokens.discover import (
    DEFAULT_PATTERN,
    DiscoveryProblem,
    NodeDatabase,
    discover,
    fingerprint,
)
from rubix_integration.tokens.pool import (
    IPFSOpener,
    Options,
    Prepared,
    Stopped,
    Task,
    init_worker,
    prepare,
    run_in_worker,
)
from rubix_integration.tokens.results import DatabaseResult, SyncObserver, SyncSummary
from rubix_integration.tokens.spool import COLUMNS

if TYPE_CHECKING:
    from rubix_integration._settings import Settings
    from rubix_integration.stores.base import Store

log = logging.getLogger("rubix_integration.sync")

__all__ = [
    "DatabaseResult",
    "SyncObserver",
    "SyncSummary",
    "TokenSync",
    "detect_source_ip",
    "sync_log_handler",
]

#: Calls an event hook of the plugins: ``notify(hook_name, **arguments)``.
Notify = Callable[..., object]

# below this much database, starting worker processes costs more than it saves
_PROCESS_THRESHOLD_BYTES = 4 * 1024 * 1024


class TokenSync:
    """One sync run over ``store``: build it and call :meth:`run` (``Manager.sync_tokens`` does).

    ``store`` is the store, or a callable opening it (called once, as late as the run allows).
    ``choose_backend`` names the IPFS backend serving a node's repo (``None``: the configured
    one); ``open_ipfs`` builds it, and is pickled to worker processes, where it builds only the
    backends their databases use. ``notify`` fires the plugins' event hooks; ``announce_tokens``
    says whether ``token_synced`` has listeners; ``in_process`` keeps every database in this
    process (for plugin objects a worker process cannot rebuild).

    ``workers`` is the number of concurrent content fetches per database for backends that wait
    on a daemon or a subprocess (default 16). ``processes`` is how many databases are worked on
    at once in worker processes: ``None`` picks the number of CPUs for runs large enough to gain
    from it, else threads in this process; ``1`` keeps everything in this process.
    ``db_timeout`` limits the seconds one database may take (default: the ``sync_db_timeout``
    setting). A run writes what the package logs to ``log_file`` (default ``sync.log`` in the
    data dir) unless a :func:`sync_log_handler` is attached already.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        settings: Settings,
        *,
        choose_backend: Callable[[Path | None], str],
        open_ipfs: IPFSOpener,
        notify: Notify = lambda hook_name, **kwargs: None,
        announce_tokens: bool = False,
        in_process: bool = False,
        workers: int | None = None,
        processes: int | None = None,
        full: bool = False,
        source_ip: str | None = None,
        pattern: str = DEFAULT_PATTERN,
        max_size: int = DEFAULT_MAX_SIZE,
        batch_size: int = 2000,
        observer: SyncObserver | None = None,
        db_timeout: float | None = None,
        log_file: Path | str | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        if processes is not None and processes < 1:
            raise ValueError("processes must be at least 1")
        if db_timeout is not None and not db_timeout > 0:
            raise ValueError("db_timeout must be a positive number of seconds")
        self._store: Store | None = None
        self._open_store: Callable[[], Store] | None = None
        if callable(store):
            self._open_store = store
            spool = spool_kind_for_url(settings.store_url)
        else:
            self._store = store
            spool = spool_kind(self._store)
        self.settings = settings
        self.choose_backend = choose_backend
        self.open_ipfs = open_ipfs
        self.notify = notify
        self.announce_tokens = announce_tokens
        self.in_process = in_process
        self.workers = workers or 16
        self.processes = processes
        self.full = full
        self.source_ip = source_ip
        self.pattern = pattern
        self.observer = observer or SyncObserver()
        self.log_file = Path(log_file) if log_file is not None else None
        self.options = Options(max_size=max_size, batch_size=batch_size,
                               fetch_threads=self.workers, tmp_dir="",
                               db_timeout=db_timeout or settings.sync_db_timeout,
                               spool=spool)

    @property
    def store(self) -> Store:
        """The store, opened now if it was given as a callable."""
        if self._store is None:
            assert self._open_store is not None
            self._store = self._open_store()
        return self._store

    def run(self, roots: Sequence[Path | str]) -> SyncSummary:
        """Sync every node database below ``roots``; return the summary (also when interrupted)."""
        handler = None
        if not _has_sync_log():
            handler = sync_log_handler(self.log_file or self.settings.data_dir / "sync.log")
        try:
            summary = self._run(roots)
        finally:
            if handler is not None:
                handler.detach()
        return summary

    def _run(self, roots: Sequence[Path | str]) -> SyncSummary:
        started = time.perf_counter()
        summary = SyncSummary()
        problems: list[DiscoveryProblem] = []
        folders: list[Path | str] = []
        for root in roots:
            if not os.path.lexists(root):
                problems.append(DiscoveryProblem(Path(root), "no such folder"))
            elif not Path(root).is_dir():
                problems.append(DiscoveryProblem(Path(root), "not a folder"))
            else:
                folders.append(root)
        log.info("sync of %s started", ", ".join(str(r) for r in roots))
        nodes = discover(folders, pattern=self.pattern, problems=problems)
        summary.discovery_problems = [f"{p.path}: {p.reason}" for p in problems]
        summary.databases_found = len(nodes)
        source_ip = self.source_ip or self.settings.source_ip or detect_source_ip()

        # a run of every database skips none: it needs nothing of the store before it starts
        previous = {} if self.full else self._previous(self.store)
        tasks: list[Task] = []
        by_index: dict[int, NodeDatabase] = {}
        for node in nodes:
            fp, modified = fingerprint(node.db_path)
            if not self.full and previous.get(str(node.db_path)) == (fp, "processed"):
                result = DatabaseResult(str(node.db_path), node.node_name, "skipped")
                summary.databases_skipped += 1
                summary.databases.append(result)
                self.observer.database_finished(result)
                self._announce(result)
                continue
            by_index[len(tasks)] = node
            tasks.append(Task(len(tasks), str(node.db_path), node.node_name,
                               str(node.ipfs_path) if node.ipfs_path else None,
                               self._backend_for(node), fp, modified, source_ip))
        self.observer.discovered(len(nodes), len(tasks))

        processes = self._process_count(tasks)
        summary.workers = (f"{processes} processes" if processes > 1 else "in-process") + \
            f", {self.workers} fetch threads"
        run_dir = _run_folder(self.settings) if tasks else None
        opts = replace(self.options, tmp_dir=str(run_dir) if run_dir else "")
        try:
            if processes > 1:
                self._run_processes(tasks, by_index, processes, summary, opts)
            else:
                self._run_threads(tasks, by_index, summary, opts)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted: databases not yet committed are left as they were")
        finally:
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
        if not summary.interrupted:
            self.store  # noqa: B018 - a run with nothing to write still opens its store
        summary.duration_s = time.perf_counter() - started
        for problem in summary.discovery_problems:
            log.warning("unreadable: %s", problem)
        log.info("sync finished%s: %d found, %d processed, %d skipped, %d failed, %d records, "
                 "IPFS %d ok / %d failed, %.1f s", " (interrupted)" if summary.interrupted else "",
                 summary.databases_found, summary.databases_processed,
                 summary.databases_skipped, summary.databases_failed, summary.records,
                 summary.ipfs_success, summary.ipfs_failed, summary.duration_s)
        return summary

    # --- planning --------------------------------------------------------------------------------

    def _previous(self, store: Store) -> dict[str, tuple[str | None, str]]:
        import sqlalchemy as sa

        from rubix_integration.tokens.models import PROCESSED_TABLE

        t = PROCESSED_TABLE
        with store.connect() as conn:
            rows = conn.execute(sa.select(t.c.db_path, t.c.fingerprint, t.c.status)).all()
        return {str(r[0]): (r[1], str(r[2])) for r in rows}

    def _backend_for(self, node: NodeDatabase) -> str | None:
        if node.ipfs_path is None:
            # with an explicit mode the configured backend serves nodes without a repo of their own
            if self.settings.ipfs_mode in ("auto", "repo"):
                return None
            return self.choose_backend(None)
        return self.choose_backend(node.ipfs_path)

    def _process_count(self, tasks: list[Task]) -> int:
        if self.processes is not None:
            wanted = self.processes
        else:
            size = 0
            for task in tasks:
                for suffix in ("", "-wal"):
                    with contextlib.suppress(OSError):
                        size += os.stat(task.db_path + suffix).st_size
            wanted = os.cpu_count() or 1 if size >= _PROCESS_THRESHOLD_BYTES else 1
        # objects a host registered cannot be rebuilt in another process
        if self.in_process:
            wanted = 1
        return max(1, min(wanted, len(tasks)))

    # --- running ---------------------------------------------------------------------------------

    def _run_threads(self, tasks: list[Task], nodes: dict[int, NodeDatabase],
                     summary: SyncSummary, opts: Options) -> None:
        progress: queue.Queue[tuple[Any, ...]] = queue.Queue()
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, min(4, self.workers, len(tasks))),
                                  thread_name_prefix="rubix-sync")

        def work(task: Task) -> Prepared | None:
            try:
                return prepare(self.open_ipfs, task, opts, stop, progress.put)
            except Stopped:
                return None

        try:
            futures = {pool.submit(work, task): task for task in tasks}
            self._collect(futures, nodes, summary, progress, stop)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_processes(self, tasks: list[Task], nodes: dict[int, NodeDatabase],
                       processes: int, summary: SyncSummary, opts: Options) -> None:
        # fork where there is one: spawn would re-import the host's __main__ in every worker,
        # which breaks (or re-runs) scripts that lack a main guard
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        # no pooled database connection may be shared with the children (they never use one)
        if self._store is not None:
            self._store.close()
        progress = context.Queue()
        stop = context.Event()
        pool = ProcessPoolExecutor(
            max_workers=processes, mp_context=context, initializer=init_worker,
            initargs=(self.open_ipfs, progress, stop, os.getpid()))
        try:
            futures = {pool.submit(run_in_worker, task, opts): task for task in tasks}
            self._collect(futures, nodes, summary, progress, stop)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            progress.close()
            progress.join_thread()

    def _collect(self, futures: dict[Future[Prepared | None], Task],
                 nodes: dict[int, NodeDatabase], summary: SyncSummary, progress: Any,
                 stop: Any) -> None:
        from rubix_integration.tokens.writer import commit

        pending = set(futures)
        try:
            # opened while the workers read (when it was not open yet): the first commit needs it
            store = self.store
            while pending:
                done, pending = wait(pending, timeout=0.1)
                self._drain(progress, nodes)
                for future in done:
                    task = futures[future]
                    try:
                        prepared = future.result()
                    except (BrokenProcessPool, OSError) as exc:
                        prepared = Prepared(DatabaseResult(
                            task.db_path, task.node_name, "failed",
                            error=f"{task.db_path}: worker died: {exc}", error_kind="unexpected"))
                    if prepared is None:
                        continue  # stopped before it was read
                    # the one writer: commits each database while the workers read the next
                    result = commit(store, task, prepared)
                    self._account(summary, result)
                    self.observer.database_finished(result)
                    if result.status == "processed":
                        self._announce_tokens(result)
                    self._announce(result)
            self._drain(progress, nodes)
        except BaseException:
            # readers stop at once (SQLite is interrupted from its progress handler); spools of
            # databases read but not committed are not needed any more
            stop.set()
            for future in pending:
                future.cancel()
            wait(pending, timeout=30)
            for future in pending:
                if future.done() and not future.cancelled() and future.exception() is None:
                    prepared = future.result()
                    if prepared is not None and prepared.spool is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(prepared.spool)
            raise

    def _drain(self, progress: Any, nodes: dict[int, NodeDatabase]) -> None:
        while True:
            try:
                message = progress.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if message[0] == "start":
                self.observer.database_started(nodes[message[1]], message[2])
            elif message[0] == "fetched":
                count, ok = message[2], message[3]
                self.observer.tokens_fetched(count, ok, count - ok)

    def _account(self, summary: SyncSummary, result: DatabaseResult) -> None:
        summary.databases.append(result)
        if result.status == "processed":
            summary.databases_processed += 1
        else:
            summary.databases_failed += 1
        summary.records += result.record_count
        summary.ipfs_success += result.ipfs_success_count
        summary.ipfs_failed += result.ipfs_fail_count
        summary.bad_timestamps += result.bad_timestamp_count
        summary.bad_values += result.bad_value_count
        for kind, count in result.errors_by_kind.items():
            summary.errors_by_kind[kind] = summary.errors_by_kind.get(kind, 0) + count

    # --- events ----------------------------------------------------------------------------------

    def _announce(self, result: DatabaseResult) -> None:
        self.notify("database_processed", result=result.as_dict())

    def _announce_tokens(self, result: DatabaseResult) -> None:
        if not self.announce_tokens:
            return
        import sqlalchemy as sa

        from rubix_integration.tokens.models import TOKEN_TABLE

        t = TOKEN_TABLE
        with self.store.connect() as conn:
            rows = conn.execute(sa.select(*(t.c[c] for c in COLUMNS))
                                .where(t.c.db_path == result.db_path,
                                       t.c.deleted_at.is_(None)))
            for row in rows:
                self.notify("token_synced", record=dict(zip(COLUMNS, row, strict=True)))


class _SyncLogHandler(logging.FileHandler):
    """The handler of ``sync.log``: attached to the package's logger for one run."""

    def detach(self) -> None:
        logging.getLogger("rubix_integration").removeHandler(self)
        self.close()


def sync_log_handler(path: Path | str) -> _SyncLogHandler:
    """Attach a handler writing the package's log to ``path`` (created with its folder) and
    return it; ``handler.detach()`` removes it. A sync run while one is attached writes no
    log of its own."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = _SyncLogHandler(target, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("rubix_integration").addHandler(handler)
    return handler


def _has_sync_log() -> bool:
    return any(isinstance(h, _SyncLogHandler)
               for h in logging.getLogger("rubix_integration").handlers)


def detect_source_ip() -> str:
    """The address of the interface that routes outward, found without sending a packet."""
    import socket

    targets = ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9)))
    for family, target in targets:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(target)  # a UDP connect only picks a route; nothing is sent
                address = str(sock.getsockname()[0])
                if address and not address.startswith(("0.", "::")):
                    return address
        except OSError:
            continue
    return "127.0.0.1"


def _tmp_root(settings: Settings) -> Path:
    folder = settings.data_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_RUN_PREFIX = "sync-"


def _run_folder(settings: Settings) -> Path:
    """A fresh folder for one run's spools and snapshots, named after this process, after
    removing the folders of runs whose process is gone (killed before it could clean up)."""
    root = _tmp_root(settings)
    for entry in root.glob(f"{_RUN_PREFIX}*"):
        pid = entry.name[len(_RUN_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a sync that ended without cleaning up", entry)
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_RUN_PREFIX}{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: not ours to judge
    return True
