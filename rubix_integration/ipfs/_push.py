"""Local first, pushed later: content added to the embedded store, then sent to an IPFS node.

Content is always written to the embedded content store (``<data dir>/ipfs``) first, so an add
succeeds without any daemon. Each root not yet on a node is remembered in a queue beside that store
(``push-pending/``, one file per root CID, whose text says whether to pin it); :func:`push_pending`
sends the whole DAG of every queued root to a node (``block put`` of each block, then a pin) and
drops it from the queue once the node holds it. A root that cannot be pushed stays queued, so the
push happens on the next use or with ``rubix-integration ipfs push``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rubix_integration.codecs import parse_cid
from rubix_integration.errors import IPFSError, UnsupportedOperationError

if TYPE_CHECKING:
    from rubix_integration.ipfs.base import IPFSBackend
    from rubix_integration.ipfs.local import LocalBackend

__all__ = ["PushQueue", "PushReport", "push_pending", "queue_of"]

QUEUE_DIR = "push-pending"


class PushQueue:
    """The roots waiting to be pushed, as files in ``root`` (safe across processes: each entry
    is created whole by a rename and removed only after its push)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, cid: str, *, pin: bool = True) -> None:
        """Remember ``cid`` (a root CID) for a later push."""
        text = str(parse_cid(cid))
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{text}.{os.getpid()}.tmp"
        tmp.write_text("pin\n" if pin else "\n")
        os.replace(tmp, self.root / text)

    def remove(self, cid: str) -> None:
        """Forget ``cid`` (it reached a node)."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / cid).unlink()

    def pending(self) -> dict[str, bool]:
        """Every queued root and whether to pin it, oldest first."""
        if not self.root.is_dir():
            return {}
        entries = [p for p in self.root.iterdir() if not p.name.startswith(".")]
        out: dict[str, bool] = {}
        for path in sorted(entries, key=lambda p: (p.stat().st_mtime_ns, p.name)):
            with contextlib.suppress(FileNotFoundError):
                out[path.name] = path.read_text().strip() == "pin"
        return out

    def __len__(self) -> int:
        return len(self.pending())


@dataclass(frozen=True)
class PushReport:
    """What :func:`push_pending` did: roots pushed, blocks sent, roots still queued and why."""

    pushed: tuple[str, ...]
    blocks: int
    remaining: tuple[str, ...]
    error: str | None = None


def queue_of(local: LocalBackend) -> PushQueue:
    """The push queue beside the embedded content store of ``local``."""
    from rubix_integration.ipfs.local import store_root

    return PushQueue(store_root(local.context) / QUEUE_DIR)


def push_pending(local: LocalBackend, target: IPFSBackend | None, *,
                 timeout: float | None = None) -> PushReport:
    """Push every root queued beside ``local`` to ``target`` (the IPFS node).

    Stops at the first root the node cannot take (the node is down, or too slow): that root and
    the ones after it stay queued and ``error`` says why. Without a node, nothing is pushed.
    """
    queue = queue_of(local)
    pending = queue.pending()
    if not pending:
        return PushReport((), 0, ())
    if target is None:
        return PushReport((), 0, tuple(pending), "no IPFS node to push to")
    pushed: list[str] = []
    blocks = 0
    for cid, pin in pending.items():
        try:
            blocks += local.push(target, [cid], timeout=timeout)
            if pin:
                with contextlib.suppress(UnsupportedOperationError):
                    target.pin(cid, timeout=timeout)
        except IPFSError as exc:
            remaining = tuple(c for c in pending if c not in pushed)
            return PushReport(tuple(pushed), blocks, remaining, str(exc))
        queue.remove(cid)
        pushed.append(cid)
    return PushReport(tuple(pushed), blocks, ())
