"""Wake-ups on PostgreSQL: a connection that ``LISTEN``\\ s for new work and for cancellations.

A submit notifies :data:`~._pgfast.CHANNEL` when it commits (payload: the task type); a cancel
of a running task notifies :data:`~._pgfast.CANCEL_CHANNEL` (payload: the task id). A
:class:`Listener` thread turns them into a wake-up of the worker's idle wait and a call of its
cancellation callback. Polling stays the fallback: a missed notification (the listening
connection was lost, and is re-opened) only delays a claim to the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rubix_integration.workflow._pgfast import CANCEL_CHANNEL, CHANNEL

__all__ = ["Listener"]

log = logging.getLogger("rubix_integration.workflow")

#: Seconds between attempts to re-open a lost listening connection.
RECONNECT_AFTER = 1.0


class Listener:
    """Listen on ``conninfo`` (a libpq connection string) in a daemon thread.

    ``wake`` is set on every new-work notification whose task type is in ``task_types`` (all,
    when ``None``); ``on_cancel(task_id)`` is called for every cancellation. :meth:`stop` ends
    the thread and closes the connection.
    """

    def __init__(self, conninfo: str, wake: threading.Event,
                 on_cancel: Callable[[str], None],
                 task_types: list[str] | None = None) -> None:
        self._conninfo = conninfo
        self._wake = wake
        self._on_cancel = on_cancel
        self._types = None if task_types is None else frozenset(task_types)
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the first LISTEN is in place
        self._thread = threading.Thread(target=self._run, name="workflow-listener",
                                        daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True,
                                     connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    self.ready.set()
                    self._wake.set()  # whatever was submitted while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.2):
                            self._deliver(note.channel, note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.info("workflow: the listening connection was lost (%s); polling until it "
                         "is back", " ".join(str(exc).split()))
                self._stop.wait(RECONNECT_AFTER)

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            try:
                self._on_cancel(payload)
            except Exception:  # a callback's bug must not end the wake-ups
                log.exception("workflow: cancellation callback failed")
        elif self._types is None or payload in self._types:
            self._wake.set()
