"""Count the round trips a client makes to a server, through a TCP relay on 127.0.0.1.

Each time the server speaks after the client did, one round trip has ended: a pipeline of several
statements sent together is one round trip, as it costs one wait on the network. The workflow
tests and ``bench/bench_workflow.py`` put one in front of PostgreSQL::

    with RoundTripCounter(pg_url) as relay:
        with Manager(store_url=relay.url) as manager:
            before = relay.measure()
            manager.submit_task("t1", "demo")
            relay.settle()
            print(relay.measure() - before)
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["RoundTripCounter"]


class RoundTripCounter:
    """A relay to ``url``'s host and port (a SQLAlchemy URL); :attr:`url` is the same URL through
    the relay. :meth:`measure` is the count so far; :meth:`close` stops relaying."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        self._target = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url: str = parsed.set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self._target, timeout=5)
            for sock in (client, upstream):  # pass small messages on at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(self._relay, client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        client_spoke = False
        with client, upstream:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        upstream.sendall(data)
                        client_spoke = True
                    else:
                        client.sendall(data)
                        if client_spoke:
                            with self._lock:
                                self._count += 1
                            client_spoke = False

    def measure(self) -> int:
        """Round trips ended so far, over every connection through the relay."""
        with self._lock:
            return self._count

    @staticmethod
    def settle(seconds: float = 0.05) -> None:
        """Wait until the relay has passed on the last answer (nothing is left in flight)."""
        time.sleep(seconds)

    def close(self) -> None:
        """Stop relaying and close every connection through the relay."""
        self._stop.set()
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> RoundTripCounter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
