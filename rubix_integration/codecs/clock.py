"""The wall clock the provenance log and the workflow stamp their records and tasks with.

Times are whole microseconds since the Unix epoch (UTC), written as
``2025-01-02T03:04:05.123456Z`` in records and reports.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["EPOCH", "format_time", "now_us"]

#: The Unix epoch, UTC.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def now_us() -> int:
    """Microseconds since the epoch, from the system clock."""
    return time.time_ns() // 1000


# the last second formatted: records made in one second share their prefix
_second_cache: list[Any] = [None, ""]


def format_time(us: int) -> str:
    """``2025-01-02T03:04:05.123456Z`` for microseconds since the epoch."""
    seconds, micros = divmod(us, 1_000_000)
    cache = _second_cache
    if cache[0] != seconds:
        cache[1] = (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
        cache[0] = seconds
    return f"{cache[1]}.{micros:06d}Z"
