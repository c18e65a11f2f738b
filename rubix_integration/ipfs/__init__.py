"""IPFS access: the backend contract and the built-in backends (``repo``, ``http``, ``cli``,
``local``), each registered as a plugin through the ``register_ipfs_backends`` hook."""

from __future__ import annotations

from rubix_integration.ipfs._chain import FallbackBackend
from rubix_integration.ipfs.base import (
    AddedEntry,
    AddResult,
    DirEntry,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

__all__ = [
    "AddResult",
    "AddedEntry",
    "DirEntry",
    "FallbackBackend",
    "Health",
    "IPFSBackend",
    "IPFSContext",
    "IPFSDetection",
]
