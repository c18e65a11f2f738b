"""Copy a pinset from one state to another in batches, resumably, and compare the two.

Each batch is one atomic write to the destination; after it lands, the last CID copied is
written to a checkpoint file (replaced atomically), so a run killed at any moment resumes after
the last batch it committed, and a run from the start converges too (adds are upserts). At the
end both states are counted and checksummed (:meth:`PinStateBackend.summary`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rubix_integration.errors import PinStateError
from rubix_integration.pins._state import PinStateBackend, StateSummary

__all__ = ["MigrateResult", "migrate_state"]


@dataclass(frozen=True)
class MigrateResult:
    """What a migration did: pins ``copied`` in this run, ``batches`` committed, the CID it
    resumed after (``None`` from the start), and both states' summaries (equal on success)."""

    copied: int
    batches: int
    resumed_after: str | None
    source: StateSummary
    destination: StateSummary

    @property
    def matches(self) -> bool:
        return self.source == self.destination


def migrate_state(source: PinStateBackend, destination: PinStateBackend, *,
                  batch_size: int = 1000, checkpoint: Path | None = None,
                  progress: Callable[[int], None] | None = None,
                  verify: bool = True) -> MigrateResult:
    """Copy every pin of ``source`` into ``destination``; resume from ``checkpoint`` when it
    names these two states; raise :class:`PinStateError` when the final count or checksum
    differ (``verify``). ``progress`` is called with the number of pins of each batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    key = {"source": source.describe(), "destination": destination.describe()}
    after = _resume_point(checkpoint, key)
    copied = batches = 0
    batch = destination.batch(max_batch_size=batch_size + 1, max_batch_age=float("inf"))
    last: str | None = None
    for pin in source.list(after=after, page_size=max(batch_size, 500)):
        batch.add(pin)
        last = pin.cid
        if batch.pending >= batch_size:
            copied += _commit(batch, checkpoint, key, last, progress)
            batches += 1
    if batch.pending:
        copied += _commit(batch, checkpoint, key, last, progress)
        batches += 1
    src = source.summary() if verify else StateSummary(0, "")
    dst = destination.summary() if verify else StateSummary(0, "")
    result = MigrateResult(copied, batches, after, src, dst)
    if verify and not result.matches:
        raise PinStateError(
            f"migration finished but the states differ: source {src.count} pins (checksum "
            f"{src.checksum}), destination {dst.count} pins (checksum {dst.checksum}); the "
            "destination held pins the source does not, or changed meanwhile",
            backend=destination.name)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return result


def _commit(batch: object, checkpoint: Path | None, key: dict[str, str], last: str | None,
            progress: Callable[[int], None] | None) -> int:
    from rubix_integration.pins._state import BatchingState

    assert isinstance(batch, BatchingState)
    count = batch.commit()
    if checkpoint is not None and last is not None:
        temp = checkpoint.with_name(checkpoint.name + ".tmp")
        temp.write_text(json.dumps({**key, "after": last}))
        os.replace(temp, checkpoint)
    if progress is not None:
        progress(count)
    return count


def _resume_point(checkpoint: Path | None, key: dict[str, str]) -> str | None:
    if checkpoint is None or not checkpoint.exists():
        return None
    try:
        data = json.loads(checkpoint.read_text())
    except (OSError, ValueError):
        return None  # unreadable: start over, which converges as well
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in key.items()):
        return None
    after = data.get("after")
    return after if isinstance(after, str) else None
