"""A hybrid logical clock (HLC) packed into one signed 64-bit integer.

A stamp holds the wall-clock milliseconds since the Unix epoch in its high 48 bits and a logical
counter in its low 16: ``stamp = ms << 16 | counter``. Stamps therefore sort as numbers, fit a
``BIGINT`` column, and stay close to the wall clock while never going backwards when that clock
does. When the counter would overflow, the clock borrows the next millisecond.

:class:`HybridClock` issues stamps (:meth:`~HybridClock.now`) and folds in the stamps of other
nodes (:meth:`~HybridClock.update`), refusing one that runs further ahead of its own wall clock
than ``max_drift_ms`` with :class:`ClockDriftError`. :func:`merge_key` orders two versions of one
row: highest stamp wins, ties go to the higher node priority, then to the greater node id.

Pure: the wall clock is a callable handed in, so skew is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# ClockDriftError lives in errors.py; importable from here as before
from rubix_integration.errors import ClockDriftError

__all__ = [
    "LOGICAL_BITS",
    "MAX_DRIFT_MS",
    "MAX_STAMP",
    "ClockDriftError",
    "HybridClock",
    "merge_key",
    "pack",
    "physical_ms",
    "unpack",
    "wall_ms",
]

#: Bits of the logical counter (the low bits of a stamp).
LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
#: The largest stamp a signed 64-bit column holds.
MAX_STAMP = (1 << 63) - 1
_MAX_MS = MAX_STAMP >> LOGICAL_BITS
#: How far ahead of the local wall clock a received stamp may be (five minutes).
MAX_DRIFT_MS = 300_000


def wall_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def pack(ms: int, counter: int = 0) -> int:
    """The stamp of wall-clock ``ms`` and logical ``counter``."""
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"milliseconds out of range for a stamp: {ms}")
    if not 0 <= counter <= _LOGICAL_MASK:
        raise ValueError(f"logical counter out of range for a stamp: {counter}")
    return ms << LOGICAL_BITS | counter


def unpack(stamp: int) -> tuple[int, int]:
    """``(ms, counter)`` of ``stamp``."""
    _check(stamp)
    return stamp >> LOGICAL_BITS, stamp & _LOGICAL_MASK


def physical_ms(stamp: int) -> int:
    """The wall-clock milliseconds of ``stamp``."""
    return unpack(stamp)[0]


def merge_key(stamp: int, priority: int, node_id: str) -> tuple[int, int, str]:
    """The key that orders versions of one row: the greatest key is the version kept."""
    return (stamp, priority, node_id)


def _check(stamp: int) -> None:
    if not 0 <= stamp <= MAX_STAMP:
        raise ValueError(f"not a hybrid logical clock stamp: {stamp}")


class HybridClock:
    """Issues stamps that only grow, close to ``wall`` (milliseconds since the epoch).

    ``last`` seeds the clock with the greatest stamp issued before (say, before a restart).
    Not thread-safe: give each thread its own, or guard it.
    """

    def __init__(self, wall: Callable[[], int] = wall_ms, *, last: int = 0,
                 max_drift_ms: int = MAX_DRIFT_MS) -> None:
        _check(last)
        if max_drift_ms < 0:
            raise ValueError(f"max_drift_ms must not be negative: {max_drift_ms}")
        self._wall = wall
        self._last = last
        self.max_drift_ms = max_drift_ms

    @property
    def last(self) -> int:
        """The greatest stamp issued or received so far."""
        return self._last

    def now(self) -> int:
        """A stamp greater than every stamp issued or received before."""
        return self._advance(pack(max(self._wall(), 0)))

    def update(self, received: int) -> int:
        """Fold in a stamp from another node; return a local stamp greater than both.

        Raises :class:`ClockDriftError` (the clock unchanged) when ``received`` runs more than
        ``max_drift_ms`` ahead of the local wall clock.
        """
        _check(received)
        local = max(self._wall(), 0)
        ahead = physical_ms(received) - local
        if ahead > self.max_drift_ms:
            raise ClockDriftError(
                f"stamp {received} is {ahead} ms ahead of the local clock "
                f"(at most {self.max_drift_ms} ms allowed)",
                received=received, local_ms=local, max_drift_ms=self.max_drift_ms)
        self._last = max(self._last, received)
        return self._advance(pack(local))

    def observe(self, stamp: int) -> None:
        """Never issue a stamp at or below ``stamp`` (one read back from storage, trusted)."""
        _check(stamp)
        self._last = max(self._last, stamp)

    def _advance(self, wall_stamp: int) -> int:
        # the wall clock wins when it is ahead; otherwise count on from the last stamp, which
        # carries into the next millisecond when the counter is full
        stamp = max(wall_stamp, self._last + 1)
        _check(stamp)
        self._last = stamp
        return stamp
