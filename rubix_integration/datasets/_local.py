"""Local first on a Manager: its embedded content store, its push queue, the node to push to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration.ipfs._push import PushQueue, PushReport, push_pending, queue_of

if TYPE_CHECKING:
    from rubix_integration._manager import Manager
    from rubix_integration.ipfs.base import IPFSBackend
    from rubix_integration.ipfs.local import LocalBackend

__all__ = ["daemon_backend", "local_backend", "push_queued", "queue_for"]


def local_backend(manager: Manager) -> LocalBackend:
    """The Manager's embedded content store (where content is written first)."""
    from rubix_integration.ipfs.local import LocalBackend

    backend = manager.ipfs(backend="local")
    assert isinstance(backend, LocalBackend)
    return backend


def queue_for(manager: Manager) -> PushQueue:
    """The push queue beside the Manager's embedded content store."""
    return queue_of(local_backend(manager))


def daemon_backend(manager: Manager) -> IPFSBackend | None:
    """The IPFS node content is pushed to: the chosen backend when it is a node that can be
    written (not the embedded store, not read-only), and the integration is not turned off."""
    if not manager.settings.ipfs_enabled:
        return None
    choice = manager.choose_ipfs()
    if choice.name == "local":
        return None
    backend = manager.ipfs()
    return None if backend.read_only else backend


def push_queued(manager: Manager, target: IPFSBackend | None = None, *,
                timeout: float | None = None) -> PushReport:
    """Push what waits in the Manager's queue to ``target`` (default :func:`daemon_backend`)."""
    node = target if target is not None else daemon_backend(manager)
    return push_pending(local_backend(manager), node, timeout=timeout)
