"""The datasets API's ``FilesystemHandler``: add and read UnixFS content, local first.

Every add writes to the embedded content store first (so it succeeds with no daemon), then pushes
the DAG to the IPFS node when there is one (see :mod:`rubix_integration.ipfs._push`); what could
not be pushed waits in the push queue and goes on the next use, or with
``rubix-integration ipfs push``. Reads look in the embedded store first, then on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rubix_integration.datasets._config import manager_from_config
from rubix_integration.datasets._local import (
    daemon_backend,
    local_backend,
    push_queued,
    queue_for,
)
from rubix_integration.datasets.results import ContentCID, DirectoryCID
from rubix_integration.errors import IPFSError
from rubix_integration.ipfs._push import PushReport

if TYPE_CHECKING:
    from rubix_integration._manager import Manager
    from rubix_integration.datasets.manager import DatasetsManager
    from rubix_integration.ipfs.base import DirEntry, IPFSBackend

__all__ = ["FilesystemHandler"]


def host_manager(manager: Manager | DatasetsManager) -> Manager:
    """The :class:`Manager` behind ``manager`` (a Manager or a DatasetsManager)."""
    inner = getattr(manager, "manager", None)
    return inner if inner is not None else manager  # type: ignore[return-value]


class FilesystemHandler:
    """Add files and directories, read them back, list directories; local first.

    ``ipfs_api`` is the daemon's RPC address (multiaddr or URL; default: the ``ipfs_api``
    setting, then the repo's ``api`` file). ``config`` takes the keys of
    :class:`~rubix_integration.DatasetsManager`; ``manager`` shares an existing Manager (or
    DatasetsManager) instead of building one. Close it (or use ``with``) to release what it built.
    """

    def __init__(self, ipfs_api: str | None = None, *,
                 config: Mapping[str, Any] | None = None,
                 manager: Manager | DatasetsManager | None = None) -> None:
        if manager is not None:
            if ipfs_api is not None or config is not None:
                raise ValueError("give ipfs_api/config, or manager, not both")
            self.manager = host_manager(manager)
            self._owned = False
        else:
            settings = dict(config or {})
            if ipfs_api is not None:
                settings["ipfs_api"] = ipfs_api
            self.manager = manager_from_config(settings)  # a bad key fails here
            self._owned = True

    # --- plumbing ------------------------------------------------------------------------------

    def _reader(self) -> IPFSBackend:
        node = self._node()
        if node is None:
            return local_backend(self.manager)
        return self.manager.ipfs(backend="local+" + self.manager.choose_ipfs().backend_name)

    def _node(self) -> IPFSBackend | None:
        try:
            return daemon_backend(self.manager)
        except IPFSError:
            return None

    def _stored(self, cid: str, pin: bool) -> bool:
        """Queue ``cid`` for the node and push the queue; whether ``cid`` reached the node."""
        queue_for(self.manager).add(cid, pin=pin)
        return cid in self.push().pushed

    def push(self) -> PushReport:
        """Push every queued root to the IPFS node now (nothing when there is none)."""
        try:
            return push_queued(self.manager)
        except IPFSError as exc:
            pending = tuple(queue_for(self.manager).pending())
            return PushReport((), 0, pending, str(exc))

    def pending(self) -> list[str]:
        """The roots added here that no IPFS node holds yet, oldest first."""
        return list(queue_for(self.manager).pending())

    # --- the datasets API's operations ---------------------------------------------------------

    def add_file(self, path: Path | str, pin: bool = True) -> ContentCID:
        """Add a file; return its CID (text), with ``published`` telling whether a node has it."""
        cid = local_backend(self.manager).add_file(Path(path), pin=pin)
        return ContentCID(cid, published=self._stored(cid, pin))

    def add_directory(self, path: Path | str, recursive: bool = True,
                      pin: bool = True) -> DirectoryCID:
        """Add a directory (its subdirectories too when ``recursive``); return the root CID
        (text, with ``entries`` and ``published``)."""
        result = local_backend(self.manager).add_directory(Path(path), recursive=recursive,
                                                           pin=pin)
        return DirectoryCID(result.cid, result.entries,
                            published=self._stored(result.cid, pin))

    def get_file(self, cid: str, output_path: Path | str) -> Path:
        """Write the file (or tree) ``cid`` to ``output_path``; return that path."""
        self._flush()
        return self._reader().get(str(cid), Path(output_path))

    def list_directory(self, cid: str) -> list[DirEntry]:
        """The entries of directory ``cid`` (``entry.name`` or ``entry["name"]``, ``cid``,
        ``size``, ``type``)."""
        self._flush()
        return self._reader().ls(str(cid))

    def cat(self, cid: str, *, max_size: int | None = None) -> bytes:
        """The content of file ``cid``."""
        self._flush()
        return self._reader().cat(str(cid), max_size=max_size)

    def _flush(self) -> None:
        if queue_for(self.manager).pending():
            self.push()

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the Manager this handler built (a shared one is left open)."""
        if self._owned:
            self.manager.close()

    def __enter__(self) -> FilesystemHandler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FilesystemHandler {self.manager!r}>"
