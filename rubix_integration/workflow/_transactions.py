"""The workflow's transactions: on a connection kept per thread, or on one from the pool.

A connection found lost before ``COMMIT`` was sent is replaced and the call run again once (the
server rolled the transaction back).
"""

from __future__ import annotations

import logging
import threading
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


class Transactions:
    """Run the workflow's bodies in transactions of ``store()`` with records of
    ``provenance()``."""

    def __init__(self, store: Callable[[], Store],
                 provenance: Callable[[], ProvenanceLogger]) -> None:
        self._store = store
        self._provenance = provenance
        self.local = threading.local()  # the connection keep_connection() holds, per thread

    @contextmanager
    def keep_connection(self) -> Iterator[None]:
        """Within the block, this thread's transactions reuse one store connection (where the
        store gains by it); nested use keeps the outer connection."""
        store = self._store()
        if not store.reuses_connections or getattr(self.local, "conn", None) is not None:
            yield
            return
        with store.connect() as conn:
            self.local.conn = conn
            try:
                yield
            finally:
                self.local.conn = None

    def run(self, body: Callable[[Connection, Recording], _R]) -> _R:
        """Run ``body(conn, rec)`` in one transaction with the records it adds; return its value."""
        def once(committing: list[bool]) -> _R:
            with self._provenance().recording() as rec, self._transaction(committing) as conn:
                out = body(conn, rec)
                rec.flush(conn)
            return out

        return self._retry(once)

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
        kept: Connection | None = getattr(self.local, "conn", None)
        if kept is None:
            with self._store().transaction() as conn:
                yield conn
                committing.append(True)
            return
        with self._store().transaction_on(kept):
            yield kept
            committing.append(True)

    def _retry(self, once: Callable[[list[bool]], _R]) -> _R:
        """``once(committing)``; on a kept connection, a disconnect before ``COMMIT`` was sent
        runs it once more, on a new connection (the server rolled the transaction back)."""
        if getattr(self.local, "conn", None) is None:
            return once([])
        try:
            committing: list[bool] = []
            return once(committing)
        except sa.exc.DBAPIError as exc:
            if committing or not exc.connection_invalidated:
                raise
            log.info("workflow: store connection lost (%s); running the call again",
                     " ".join(str(exc.orig).split()))
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
