"""Periodic tasks from cron expressions, each period run exactly once across all workers.

A :class:`Schedule` names a cron expression (five fields, or six with seconds last, as
``croniter`` reads them) and the task to submit each period. Every worker that knows the
schedule (registered with :meth:`WorkflowCoordinator.add_schedule
<rubix_integration.workflow.WorkflowCoordinator.add_schedule>`, or ``tasks worker --schedule``)
submits the task of the latest period that has begun, under the id
``schedule:<name>:<period start in seconds since the epoch>``. Submitting is idempotent per id,
so however many workers race for a period, one task exists for it, and it is claimed and
completed once like any task. A period that passed while no worker ran is not made up, except
the latest: a worker starting mid-period submits that period's task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rubix_integration.errors import InvalidDataError

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """One periodic task: submitted as ``task_type`` with ``data`` (and ``priority``,
    ``tags``, ``max_attempts``) once per period of ``cron``."""

    name: str
    cron: str
    task_type: str
    data: Any = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    max_attempts: int | None = None
    _last: list[float] = field(default_factory=lambda: [-math.inf], compare=False, repr=False)

    def __post_init__(self) -> None:
        from croniter import croniter

        if not isinstance(self.name, str) or not self.name or ":" in self.name \
                or len(self.name) > 100:
            raise InvalidDataError(
                f"a schedule name is 1 to 100 characters without ':', not {self.name!r}",
                path="name")
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise InvalidDataError(f"not a cron expression: {self.cron!r}", path="cron")

    def latest(self, now: float) -> float:
        """The start (seconds since the epoch) of the latest period begun at ``now``."""
        from croniter import croniter

        start = float(croniter(self.cron, now).get_prev(float))
        nxt = float(croniter(self.cron, start).get_next(float))
        return nxt if nxt <= now else start

    def next_after(self, now: float) -> float:
        """When the next period begins after ``now``."""
        from croniter import croniter

        return float(croniter(self.cron, now).get_next(float))

    def task_id(self, period: float) -> str:
        """The id of the task of the period beginning at ``period``."""
        return f"schedule:{self.name}:{int(period)}"

    def due(self, now: float) -> float | None:
        """The period whose task is still to be submitted by this process, if any."""
        period = self.latest(now)
        return period if period > self._last[0] else None

    def submitted(self, period: float) -> None:
        """Remember that this process submitted (or found) the task of ``period``."""
        self._last[0] = max(self._last[0], period)
