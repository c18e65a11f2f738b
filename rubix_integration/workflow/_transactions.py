"""The workflow's transactions: on a connection kept per thread, or on one from the pool.

On a store that gains by it (PostgreSQL) every thread keeps one connection of its own for the
workflow's state changes, opened on first use and closed when the thread ends (or on
:meth:`Transactions.close`): no pool checkout, hence no liveness ping, per call. A connection
found lost before ``COMMIT`` was sent is replaced and the call run again once (the server rolled
the transaction back).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from rubix_integration.errors import StoreUnavailableError
from rubix_integration.stores.base import Store

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.provenance import ProvenanceLogger, Recording

__all__ = ["Transactions"]

log = logging.getLogger("rubix_integration.workflow")
_R = TypeVar("_R")


class _Kept:
    """A connection a thread keeps; closed (given back to the pool) when dropped."""

    def __init__(self, conn: Connection, engine: object) -> None:
        self.conn = conn
        self.engine = engine

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.conn.close()

    def __del__(self) -> None:
        self.close()


class Transactions:
    """Run the workflow's bodies in transactions of ``store()`` with records of
    ``provenance()``."""

    def __init__(self, store: Callable[[], Store],
                 provenance: Callable[[], ProvenanceLogger], *,
                 setup: tuple[str, ...] = ()) -> None:
        self._store = store
        self._provenance = provenance
        self._setup = setup  # session settings of the threads' own connections
        self.local = threading.local()  # the connection keep_connection() holds, per thread
        self._kept: weakref.WeakSet[_Kept] = weakref.WeakSet()
        self._kept_lock = threading.Lock()

    def kept(self) -> Connection | None:
        """This thread's connection: the one ``keep_connection`` holds, else (on a store that
        reuses connections) the thread's own, opened now if needed; ``None`` on other stores."""
        conn: Connection | None = getattr(self.local, "conn", None)
        if conn is not None:
            return conn
        store = self._store()
        if not store.reuses_connections:
            return None
        own: _Kept | None = getattr(self.local, "own", None)
        if own is not None and own.engine is store.engine and not own.conn.closed:
            return own.conn
        if own is not None:
            own.close()
        try:
            fresh = store.engine.connect()
            # out of the pool: its session settings never reach other code, and it does not
            # count against the pool's size
            fresh.detach()
            for statement in self._setup:
                fresh.exec_driver_sql(statement)
            fresh.commit()
        except sa.exc.DBAPIError as exc:
            raise StoreUnavailableError(
                f"{store.name} store {store.masked_url} is unavailable while connecting: "
                f"{store._unavailable_reason(exc)}", url=store.masked_url,
                backend=store.name) from exc
        own = _Kept(fresh, store.engine)
        self.local.own = own
        with self._kept_lock:
            self._kept.add(own)
        return own.conn

    def drop_kept(self) -> None:
        """Forget this thread's own connection (after it was found lost)."""
        own: _Kept | None = getattr(self.local, "own", None)
        if own is not None:
            self.local.own = None
            own.close()

    def close(self) -> None:
        """Give back every connection the threads keep (they open new ones on next use)."""
        with self._kept_lock:
            kept = list(self._kept)
            self._kept = weakref.WeakSet()
        for own in kept:
            own.close()

    @contextmanager
    def keep_connection(self) -> Iterator[None]:
        """Kept for callers of earlier versions: every thread keeps its connection anyway."""
        yield

    def run(self, body: Callable[[Connection, Recording], _R]) -> _R:
        """Run ``body(conn, rec)`` in one transaction with the records it adds; return its value."""
        def once(committing: list[bool]) -> _R:
            with self._provenance().recording() as rec, self._transaction(committing) as conn:
                out = body(conn, rec)
                rec.flush(conn)
            return out

        return self._retry(once)

    def run_raw(self, body: Callable[[Connection, list[bool]], _R]) -> _R:
        """Run ``body(conn, committing)`` on this thread's kept connection, outside any
        SQLAlchemy transaction (the body runs its own); retried as :meth:`run` is."""
        def once(committing: list[bool]) -> _R:
            conn = self.kept()
            assert conn is not None
            if conn.in_transaction():  # left over by an interrupted call
                conn.rollback()
            return body(conn, committing)

        return self._retry(once, always=True)

    def run_unrecorded(self, body: Callable[[Connection], _R]) -> _R:
        """Run ``body(conn)`` in one transaction (no state change: nothing to record)."""
        def once(committing: list[bool]) -> _R:
            with self._transaction(committing) as conn:
                return body(conn)

        return self._retry(once)

    @contextmanager
    def _transaction(self, committing: list[bool]) -> Iterator[Connection]:
        """A transaction on the kept connection, or on one from the pool; ``committing`` gets an
        item once the block is done, before ``COMMIT`` is sent."""
        kept = self.kept()
        if kept is None:
            with self._store().transaction() as conn:
                yield conn
                committing.append(True)
            return
        with self._store().transaction_on(kept):
            yield kept
            committing.append(True)

    def _retry(self, once: Callable[[list[bool]], _R], always: bool = False) -> _R:
        """``once(committing)``; on a kept connection, a disconnect before ``COMMIT`` was sent
        runs it once more, on a new connection (the server rolled the transaction back)."""
        if not always and not self._store().reuses_connections:
            return once([])
        try:
            committing: list[bool] = []
            return once(committing)
        except sa.exc.DBAPIError as exc:
            if committing or not exc.connection_invalidated:
                raise
            log.info("workflow: store connection lost (%s); running the call again",
                     " ".join(str(exc.orig).split()))
            self.drop_kept()
        try:
            return once([])
        except sa.exc.DBAPIError as exc:
            if not isinstance(exc, sa.exc.OperationalError) and not exc.connection_invalidated:
                raise
            reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
            raise self._unavailable(reason) from exc
        except StoreUnavailableError as exc:  # the store could not begin on it either
            raise self._unavailable(str(exc)) from exc

    def _unavailable(self, reason: str) -> StoreUnavailableError:
        store = self._store()
        return StoreUnavailableError(
            f"{store.name} store {store.masked_url} is unavailable: the connection was lost "
            f"and could not be replaced: {reason}", url=store.masked_url, backend=store.name)
