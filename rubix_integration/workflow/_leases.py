"""The leases one coordinator instance holds, remembered in memory for its bare calls."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from rubix_integration.workflow.task import Task

__all__ = ["MAX_REMEMBERED", "Leases"]

# past this many the oldest are forgotten (their holder then passes the lease token)
MAX_REMEMBERED = 100_000


class Leases:
    """Task id -> lease token of the claims an instance made and still holds; safe across
    threads. What lets the claimer's calls through the fencing without a token."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, tasks: Iterable[Task]) -> None:
        """Remember the lease of each claimed task in ``tasks``."""
        with self._lock:
            for task in tasks:
                if task.lease_token is None:
                    continue
                self._tokens.pop(task.task_id, None)  # a new claim goes to the end
                self._tokens[task.task_id] = task.lease_token
            while len(self._tokens) > MAX_REMEMBERED:
                del self._tokens[next(iter(self._tokens))]

    def forget(self, task_id: str, token: str | None) -> None:
        """Forget the lease of ``task_id`` if it is ``token`` (a newer claim is kept)."""
        if token is None:
            return
        with self._lock:
            if self._tokens.get(task_id) == token:
                del self._tokens[task_id]

    def drop(self, task_id: str) -> None:
        """Forget the lease of ``task_id``, whichever it is."""
        with self._lock:
            self._tokens.pop(task_id, None)

    def token_for(self, task_id: str, lease_token: str | None, force: bool) -> str | None:
        """The lease token a call on ``task_id`` is fenced with: none with ``force``, else the
        one given, else the one remembered from this instance's claim (if any)."""
        if force:
            return None
        if lease_token is not None:
            return lease_token
        with self._lock:
            return self._tokens.get(task_id)

    def __len__(self) -> int:
        return len(self._tokens)
