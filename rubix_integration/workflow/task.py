"""A task as the workflow hands it out: its stored fields, typed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rubix_integration.codecs import dagjson
from rubix_integration.codecs.clock import format_time

__all__ = ["COLUMNS", "Task"]

#: The task columns in :class:`Task`'s order, for statements that return rows through the driver.
COLUMNS = ("task_id", "task_type", "state", "priority", "data", "tags", "attempts",
           "max_attempts", "created_at_us", "updated_at_us", "due_at_us", "worker_id",
           "lease_token", "lease_expires_at_us", "result", "error", "finished_at_us")


@dataclass(frozen=True)
class Task:
    """A task's fields as stored (times in microseconds since the epoch)."""

    task_id: str
    task_type: str
    state: str
    priority: int
    data: Any
    tags: tuple[str, ...]
    attempts: int
    max_attempts: int
    created_at_us: int
    updated_at_us: int
    due_at_us: int | None
    worker_id: str | None
    lease_token: str | None
    lease_expires_at_us: int | None
    result: Any
    error: str | None
    finished_at_us: int | None

    @classmethod
    def from_row(cls, row: Any) -> Task:
        """A task from a typed row of ``workflow_tasks`` (JSON columns already decoded)."""
        m = row._mapping
        return cls._from_values([m[c] for c in COLUMNS])

    @classmethod
    def _from_values(cls, v: Sequence[Any]) -> Task:
        """A task from values in :data:`COLUMNS` order (JSON columns decoded)."""
        return cls(
            task_id=v[0], task_type=v[1], state=v[2], priority=int(v[3]),
            data=dagjson.from_json_form(v[4]), tags=tuple(v[5] or ()),
            attempts=int(v[6]), max_attempts=int(v[7]), created_at_us=int(v[8]),
            updated_at_us=int(v[9]), due_at_us=v[10], worker_id=v[11], lease_token=v[12],
            lease_expires_at_us=v[13], result=dagjson.from_json_form(v[14]),
            error=v[15], finished_at_us=v[16])

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values; times as ISO text."""
        def t(us: int | None) -> str | None:
            return None if us is None else format_time(us)

        return {
            "task_id": self.task_id, "task_type": self.task_type, "state": self.state,
            "priority": self.priority, "data": dagjson.to_json_form(self.data),
            "tags": list(self.tags), "attempts": self.attempts,
            "max_attempts": self.max_attempts, "created_at": t(self.created_at_us),
            "updated_at": t(self.updated_at_us), "due_at": t(self.due_at_us),
            "worker_id": self.worker_id, "lease_token": self.lease_token,
            "lease_expires_at": t(self.lease_expires_at_us),
            "result": dagjson.to_json_form(self.result), "error": self.error,
            "finished_at": t(self.finished_at_us),
        }
