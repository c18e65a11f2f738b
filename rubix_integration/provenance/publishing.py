"""Publishing: the blocks of records and checkpoints pushed to IPFS, and where they would go."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from rubix_integration.errors import StoreError
from rubix_integration.ipfs.base import IPFSBackend
from rubix_integration.stores.base import Store

__all__ = ["ipfs_mode", "push_blocks"]


def push_blocks(store: Store, target: IPFSBackend, t: sa.Table, batch: int,
                timeout: float | None) -> int:
    """Put the unpublished blocks of ``t`` (records or checkpoints) to ``target``."""
    pushed = 0
    last_id = 0
    while True:
        with store.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.cid, t.c.block)
                .where(t.c.published.is_(False), t.c.id > last_id)
                .order_by(t.c.id).limit(batch)).all()
        if not rows:
            return pushed
        done: list[int] = []
        for row in rows:
            target.put_block(str(row.block).encode("utf-8"), cid=row.cid, timeout=timeout)
            done.append(int(row.id))
        with store.transaction() as conn:
            conn.execute(sa.update(t).where(t.c.id.in_(done)).values(published=True))
        pushed += len(done)
        last_id = done[-1]


def ipfs_mode(probe: Callable[[], tuple[str, bool]] | None) -> dict[str, Any]:
    """Which IPFS backend publishing would use, whether its node is reachable, and what that
    means for the records (never raises: detection problems are reported)."""
    out: dict[str, Any] = {}
    try:
        if probe is None:
            raise StoreError("no IPFS detection was handed to this logger")
        name, available = probe()
        out["ipfs_backend"] = name
        out["ipfs_node_available"] = available
        out["mode"] = (f"local-first; publish() pushes blocks to IPFS through {name!r}"
                       if available else
                       "local only: no IPFS node reachable; records stay in the store")
    except Exception as exc:  # status must never fail on detection problems
        out["ipfs_backend"] = None
        out["ipfs_node_available"] = False
        out["mode"] = f"local only: IPFS detection failed: {exc}"
    return out
