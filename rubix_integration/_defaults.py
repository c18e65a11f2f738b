"""The built-in choice rules, registered as a plugin that runs after every other one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rubix_integration.hookspecs import hookimpl

if TYPE_CHECKING:  # registered by every plugin manager: it imports nothing heavy
    from rubix_integration._settings import Settings
    from rubix_integration.ipfs.base import IPFSDetection
    from rubix_integration.stores.base import Store


@hookimpl(trylast=True)
def choose_ipfs_backend(
    settings: Settings,
    ipfs_path: Path | None,
    candidates: Mapping[str, IPFSDetection],
) -> str | None:
    """Take the most preferred backend whose detection says it can serve."""
    for name, detection in candidates.items():
        if detection.available:
            return name
    return None


@hookimpl(trylast=True)
def choose_store(url: str, candidates: Sequence[type[Store]]) -> type[Store] | None:
    """Take the first store class registered for the URL's scheme."""
    return candidates[0] if candidates else None
