"""Building IPFS backends by name, apart from the Manager that chose them.

A :class:`BackendFactory` holds the resolved settings and the registered backend classes; it
pickles (the classes by reference), so a worker process rebuilds only the backends it uses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rubix_integration.errors import ConfigError
from rubix_integration.ipfs.base import IPFSBackend, IPFSContext

if TYPE_CHECKING:
    from rubix_integration._settings import Settings

__all__ = ["BackendFactory"]


@dataclass
class BackendFactory:
    """Builds the backend ``name`` (``"repo+http"`` chains backends) for a repo path, once each;
    :meth:`close` closes what it built."""

    settings: Settings
    classes: Mapping[str, type[IPFSBackend]]
    _built: dict[tuple[str, Path | None], IPFSBackend] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def context(self, ipfs_path: Path | None) -> IPFSContext:
        """What a backend serving ``ipfs_path`` is built from."""
        return IPFSContext(settings=self.settings, ipfs_path=ipfs_path,
                           timeout=self.settings.ipfs_timeout)

    def build(self, name: str, ipfs_path: Path | None) -> IPFSBackend:
        """A new backend ``name`` for ``ipfs_path`` (not cached)."""
        if "+" in name:
            from rubix_integration.ipfs._chain import FallbackBackend

            return FallbackBackend([self(part, ipfs_path) for part in name.split("+")])
        if name not in self.classes:
            raise ConfigError(
                f"no IPFS backend named {name!r}; known: {', '.join(self.classes)}",
                name="backend", value=name, allowed=tuple(self.classes))
        return self.classes[name](self.context(ipfs_path))

    def __call__(self, name: str, ipfs_path: Path | str | None) -> IPFSBackend:
        """The backend ``name`` for ``ipfs_path``, built on first use."""
        key = (name, Path(ipfs_path) if ipfs_path is not None else None)
        with self._lock:
            existing = self._built.get(key)
        if existing is not None:
            return existing
        built = self.build(*key)
        with self._lock:
            existing = self._built.setdefault(key, built)
        if existing is not built:
            built.close()
        return existing

    def close(self) -> None:
        """Close every backend built so far."""
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for backend in built:
            backend.close()

    def __getstate__(self) -> dict[str, Any]:
        # what was built stays in this process: a copy builds its own
        return {"settings": self.settings, "classes": dict(self.classes)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["classes"])  # type: ignore[misc]
