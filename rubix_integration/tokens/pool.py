"""The unit of work of a sync, one node database, and the worker processes that run it.

A worker opens a snapshot of the database, streams its tokens in batches, fetches each token's
content (through a pool of threads for backends that wait on a daemon or a subprocess) and spools
the rows to a file. It never touches the store: the coordinator's one writer loads the spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from rubix_integration.errors import NodeDatabaseError, RubixError
from rubix_integration.ipfs.base import IPFSBackend
from rubix_integration.stores.spools import Spool, spool_class
from rubix_integration.tokens.content import Content, fetch_content
from rubix_integration.tokens.reader import TokenRow, count_tokens, open_snapshot, read_tokens
from rubix_integration.tokens.results import DatabaseResult
from rubix_integration.tokens.spool import COLUMNS, records

log = logging.getLogger("rubix_integration.sync")

__all__ = ["IPFSOpener", "Options", "Prepared", "Stopped", "Task", "prepare", "run_in_worker"]

#: Builds the IPFS backend ``name`` for a node's repo path.
IPFSOpener = Callable[[str, str | None], IPFSBackend]

# backends whose reads wait on a socket or a process, and so gain from many threads
_IO_BOUND = frozenset({"http", "cli"})


@dataclass(frozen=True)
class Task:
    """One node database to read, and the IPFS backend that serves its content."""

    index: int
    db_path: str
    node_name: str
    ipfs_path: str | None
    backend: str | None
    fingerprint: str
    last_modified: datetime | None
    source_ip: str


@dataclass(frozen=True)
class Options:
    """How every database of a run is read and spooled."""

    max_size: int
    batch_size: int
    fetch_threads: int
    tmp_dir: str  # this run's folder for spools and snapshots (removed when it ends)
    spool: str = "pickle"  # the store's spool kind (see rubix_integration.stores.spools)
    db_timeout: float = 600.0  # seconds one database may take, reading and fetching


class Stopped(Exception):
    """The run was asked to stop; the database is left as it was."""


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


Report = Callable[[tuple[Any, ...]], None]


@dataclass
class Prepared:
    """A database read and fetched, its rows spooled to ``spool`` (or the reason it failed)."""

    result: DatabaseResult
    spool: str | None = None


def prepare(open_ipfs: IPFSOpener, task: Task, opts: Options, stop: StopFlag, report: Report,
            parent: int | None = None) -> Prepared:
    """Read one database and fetch its content into a spool file; never touches the store."""
    result = DatabaseResult(task.db_path, task.node_name, "processed", ipfs_mode=task.backend)
    began = time.perf_counter()
    tmp_dir = Path(opts.tmp_dir)
    kind = spool_class(opts.spool)
    fd, spool_path = tempfile.mkstemp(prefix="rubix-rows-", suffix=kind.suffix, dir=tmp_dir)
    os.close(fd)
    try:
        with contextlib.closing(kind(spool_path, COLUMNS)) as spool:
            backend = (open_ipfs(task.backend, task.ipfs_path)
                       if task.backend is not None else None)
            _read_and_fetch(backend, task, opts, stop, report, result, spool, parent, tmp_dir)
    except BaseException as exc:
        os.unlink(spool_path)
        if isinstance(exc, NodeDatabaseError):
            return Prepared(failure(task, result, exc.kind, str(exc), began))
        if isinstance(exc, Stopped) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, RubixError):
            return Prepared(failure(task, result, "error", str(exc), began))
        log.exception("unexpected failure while reading %s", task.db_path)
        return Prepared(failure(task, result, "unexpected", f"{type(exc).__name__}: {exc}",
                                began))
    result.duration_s = time.perf_counter() - began
    return Prepared(result, spool_path)


def failure(task: Task, result: DatabaseResult, kind: str, message: str,
            began: float) -> DatabaseResult:
    """The result of a database that failed with ``message`` (of kind ``kind``)."""
    return DatabaseResult(task.db_path, task.node_name, "failed", error=message, error_kind=kind,
                          ipfs_mode=result.ipfs_mode, duration_s=time.perf_counter() - began)


def _read_and_fetch(backend: IPFSBackend | None, task: Task, opts: Options, stop: StopFlag,
                    report: Report, result: DatabaseResult, spool: Spool,
                    parent: int | None, tmp_dir: Path) -> None:
    db = Path(task.db_path)
    bad = [0]
    pool = (ThreadPoolExecutor(max_workers=opts.fetch_threads, thread_name_prefix="rubix-fetch")
            if backend is not None and backend.name.split("+")[0] in _IO_BOUND else None)
    errors = result.errors_by_kind
    deadline = time.monotonic() + opts.db_timeout
    bad_values = [0]

    def cancelled() -> bool:
        # polled by SQLite's progress handler: a run asked to stop, or this database's time up
        return stop.is_set() or time.monotonic() > deadline

    try:
        with open_snapshot(db, tmp_dir=tmp_dir, cancelled=cancelled) as conn:
            report(("start", task.index, count_tokens(conn, db)))
            rows = read_tokens(conn, db, bad_timestamps=bad, batch=opts.batch_size,
                               bad_values=bad_values)
            for chunk in _batched(rows, opts.batch_size):
                _check(stop, parent)
                if time.monotonic() > deadline:
                    raise _timed_out(db, opts.db_timeout)
                contents = _fetch(backend, pool, [r.token_id for r in chunk], opts.max_size)
                out = records(chunk, contents, task, datetime.now(timezone.utc),
                              spool.text_dates)
                spool.write(out)
                ok = 0
                for c in contents:
                    if c.fetched:
                        ok += 1
                    elif c.error is not None:
                        errors[c.error] = errors.get(c.error, 0) + 1
                result.record_count += len(out)
                result.ipfs_success_count += ok
                result.ipfs_fail_count += len(out) - ok
                report(("fetched", task.index, len(out), ok))
    except NodeDatabaseError as exc:
        if exc.kind != "interrupted":
            raise
        _check(stop, parent)
        raise _timed_out(db, opts.db_timeout) from exc
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    result.bad_timestamp_count = bad[0]
    result.bad_value_count = bad_values[0]
    if bad_values[0]:
        log.warning("%s: %d values the store cannot hold were stored as NULL (or with NUL "
                    "replaced by U+FFFD)", db, bad_values[0])


def _timed_out(db: Path, limit: float) -> NodeDatabaseError:
    return NodeDatabaseError(
        f"{db}: not synced within the time limit of {limit:g} s (RUBIX_SYNC_DB_TIMEOUT)",
        db_path=str(db), kind="timeout")


def _fetch(backend: IPFSBackend | None, pool: ThreadPoolExecutor | None,
           ids: list[str | None], max_size: int) -> list[Content]:
    if pool is not None:
        return list(pool.map(lambda i: fetch_content(backend, i, max_size=max_size), ids))
    return [fetch_content(backend, i, max_size=max_size) for i in ids]


def _check(stop: StopFlag, parent: int | None) -> None:
    if stop.is_set():
        raise Stopped
    if parent is not None and os.getppid() != parent:
        raise Stopped  # the coordinating process died: leave the database as it was


def _batched(rows: Iterable[TokenRow], size: int) -> Iterator[list[TokenRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- worker processes ----------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def init_worker(open_ipfs: IPFSOpener, progress: Any, stop: Any, parent: int) -> None:
    """Set up a worker process: it builds only the IPFS backends its databases use."""
    # Ctrl-C goes to the whole process group; the coordinator decides, workers just stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the opener with what the coordinator built (sockets, open
    # files): its pickled form is the same opener with nothing built yet
    open_ipfs = pickle.loads(pickle.dumps(open_ipfs))
    _WORKER.update(open_ipfs=open_ipfs, progress=progress, stop=stop, parent=parent)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="rubix-sync-watchdog").start()


def _exit_with_parent(parent: int) -> None:
    """End this worker when the coordinator is gone (killed with -9, say). A worker waiting for
    its next database would otherwise wait forever: it holds a copy of the queue's write end, so
    the queue never reports the coordinator's end. Nothing is half-written: workers only read."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def run_in_worker(task: Task, opts: Options) -> Prepared | None:
    """Prepare ``task`` in a worker process; ``None`` when the run was stopped first."""
    progress = _WORKER["progress"]
    try:
        return prepare(_WORKER["open_ipfs"], task, opts, _WORKER["stop"], progress.put,
                       _WORKER["parent"])
    except Stopped:
        return None
