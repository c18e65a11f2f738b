"""``AsyncManager``: the datasets API's operations as coroutines, for asyncio applications.

Reads from an IPFS daemon go through :class:`httpx.AsyncClient` (``cat``, ``get_file`` of a
file, ``list_directory``), with the IPFS timeout as the client's timeout; content found in the
embedded store is read from there first. Everything else (adding content, the provenance log,
the task queue, token sync) runs on a worker thread, so the event loop never blocks.

Cancellation leaves nothing half-written:

- a write run on a thread (``add_file``, ``log_event``, ``submit_task``, ...) cannot be stopped
  midway, so a cancelled call waits for it to finish (or fail) whole, then raises
  :class:`asyncio.CancelledError`: once the cancellation is seen, nothing is in flight;
- ``get_file`` writes to a temporary name beside the destination and renames it at the end; a
  cancelled call removes the temporary file or tree and leaves the destination as it was;
- a native read (``cat``, ``list_directory``) stops at once and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from rubix_integration.codecs import parse_cid
from rubix_integration.datasets._local import daemon_backend, local_backend
from rubix_integration.datasets.filesystem import FilesystemHandler
from rubix_integration.datasets.manager import DatasetsManager
from rubix_integration.datasets.workflow import TaskView, WorkflowCoordinator
from rubix_integration.errors import (
    ContentNotFoundError,
    ContentTooLargeError,
    IPFSError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
)

if TYPE_CHECKING:
    import httpx

    from rubix_integration._manager import Manager
    from rubix_integration.datasets.results import ContentCID, DirectoryCID, LoggedCID
    from rubix_integration.ipfs.base import DirEntry, IPFSBackend
    from rubix_integration.ipfs.http import HTTPBackend
    from rubix_integration.provenance import ProvenanceRecord
    from rubix_integration.tokens.results import SyncSummary

__all__ = ["AsyncManager"]

T = TypeVar("T")


async def _in_thread(call: Callable[[], T]) -> T:
    """Run ``call`` on a worker thread; when cancelled, let it finish first (see the module)."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future  # the write completes or fails whole before the cancellation goes on
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _http_member(backend: IPFSBackend | None) -> HTTPBackend | None:
    from rubix_integration.ipfs.http import HTTPBackend

    if backend is None:
        return None
    members: Sequence[IPFSBackend] = getattr(backend, "members", (backend,))
    return next((m for m in members if isinstance(m, HTTPBackend)), None)


class AsyncManager:
    """Awaitable ``cat``, ``add_file``, ``get_file``, ``add_directory``, ``list_directory``,
    ``log_event``, ``track_provenance``, ``query_logs``, ``submit_task``, ``get_next_task``,
    ``complete_task``, ``get_task_status`` and ``sync_tokens``, on one
    :class:`~rubix_integration.DatasetsManager`.

    ``config`` and ``manager`` as for :class:`~rubix_integration.DatasetsManager`. Use
    ``async with`` (or ``await aclose()``) to release the HTTP client and what was opened.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 manager: Manager | DatasetsManager | None = None) -> None:
        if isinstance(manager, DatasetsManager):
            if config is not None:
                raise ValueError("give config, or a DatasetsManager, not both")
            self.datasets = manager
        else:
            self.datasets = DatasetsManager(config, manager=manager)
        self.manager = self.datasets.manager
        self.filesystem = FilesystemHandler(manager=self.manager)
        self.workflow = WorkflowCoordinator(self.datasets)
        self._client: httpx.AsyncClient | None = None

    # --- plumbing ------------------------------------------------------------------------------

    def _http(self) -> HTTPBackend | None:
        try:
            return _http_member(daemon_backend(self.manager))
        except IPFSError:
            return None

    def _async_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            from rubix_integration.ipfs._rpc import CLIENT_GRACE

            timeout = self.manager.settings.ipfs_timeout + CLIENT_GRACE
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout))
        return self._client

    async def _rpc(self, node: HTTPBackend, endpoint: str, cid: str) -> httpx.Response:
        """Open a streamed RPC call ``endpoint?arg=cid``; errors mapped as the sync backend's."""
        import httpx

        address = node.address
        if address is None:
            raise IPFSUnavailableError("http: no daemon address", cid=cid, backend="http")
        limit = self.manager.settings.ipfs_timeout
        client = self._async_client()
        # the daemon gives up first (it knows why), the client a little later, as the sync backend
        request = client.build_request(
            "POST", f"{address.url}/api/v0/{endpoint}",
            params={"arg": cid, "timeout": f"{max(1, int(limit * 1000))}ms"})
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise IPFSTimeoutError(f"http: {endpoint} {cid}: no answer from {address.url} in "
                                   "time", cid=cid, backend="http") from exc
        except httpx.HTTPError as exc:
            raise IPFSUnavailableError(
                f"http: {endpoint} {cid}: the daemon at {address.url} cannot be reached "
                f"({type(exc).__name__}: {exc})", cid=cid, backend="http") from exc
        if response.status_code != 200:
            body = await response.aread()
            await response.aclose()
            raise node._rpc.error_response(response.status_code, body, endpoint, cid, None)
        return response

    async def _stream(self, response: httpx.Response, cid: str, max_size: int | None,
                      sink: Callable[[bytes], object]) -> int:
        import httpx

        total = 0
        try:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if max_size is not None and total > max_size:
                    raise ContentTooLargeError(
                        f"http: {cid} holds more than the limit of {max_size} bytes", cid=cid,
                        backend="http")
                sink(chunk)
        except httpx.TimeoutException as exc:
            raise IPFSTimeoutError(f"http: cat {cid}: the daemon stopped answering in time",
                                   cid=cid, backend="http") from exc
        except httpx.HTTPError as exc:
            raise IPFSUnavailableError(f"http: cat {cid}: the connection failed: {exc}",
                                       cid=cid, backend="http") from exc
        finally:
            await response.aclose()
        return total

    async def _local_first(self, call: Callable[[IPFSBackend], T]) -> T | None:
        """``call`` on the embedded store; ``None`` when it does not hold the content."""
        local = local_backend(self.manager)
        try:
            return await _in_thread(lambda: call(local))
        except ContentNotFoundError:
            return None

    # --- content -------------------------------------------------------------------------------

    async def cat(self, cid: str, *, max_size: int | None = None) -> bytes:
        """A file's content: from the embedded store, else from the node (natively over HTTP)."""
        text = str(parse_cid(str(cid)))
        found = await self._local_first(lambda b: b.cat(text, max_size=max_size))
        if found is not None:
            return found
        node = self._http()
        if node is None:
            return await _in_thread(lambda: self.filesystem.cat(text, max_size=max_size))
        parts: list[bytes] = []
        await self._stream(await self._rpc(node, "cat", text), text, max_size, parts.append)
        return b"".join(parts)

    async def get_file(self, cid: str, output_path: Path | str) -> Path:
        """Write file (or tree) ``cid`` to ``output_path``; return it. Written under a temporary
        name and renamed at the end: a failed or cancelled call leaves ``output_path`` alone."""
        text = str(parse_cid(str(cid)))
        dest = Path(output_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            node = self._http()
            local_has = await _in_thread(lambda: local_backend(self.manager).has(text))
            done = False
            if node is not None and not local_has:
                try:
                    with tmp.open("wb") as fh:
                        await self._stream(await self._rpc(node, "cat", text), text, None,
                                           fh.write)
                    done = True
                except NotAFileError:
                    _remove(tmp)  # a directory: written by the backend below
            if not done:
                await _in_thread(lambda: self.filesystem.get_file(text, tmp))
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)  # os.replace cannot put anything over a directory
            os.replace(tmp, dest)
        finally:
            _remove(tmp)
        return dest

    async def list_directory(self, cid: str) -> list[DirEntry]:
        """The entries of directory ``cid`` (embedded store first, else natively over HTTP)."""
        from rubix_integration.ipfs.base import DirEntry

        text = str(parse_cid(str(cid)))
        found = await self._local_first(lambda b: b.ls(text))
        if found is not None:
            return found
        node = self._http()
        if node is None:
            return await _in_thread(lambda: self.filesystem.list_directory(text))
        response = await self._rpc(node, "ls", text)
        body = bytearray()
        await self._stream(response, text, 64 * 1024 * 1024, body.extend)
        import json

        entries: list[DirEntry] = []
        for line in bytes(body).splitlines():
            if not line.strip():
                continue
            for obj in json.loads(line).get("Objects") or ():
                for link in obj.get("Links") or ():
                    kind = {1: "directory", 2: "file"}.get(int(link.get("Type", 0)), "other")
                    entries.append(DirEntry(str(link.get("Name", "")), str(link["Hash"]),
                                            int(link.get("Size", 0)), kind))  # type: ignore[arg-type]
        return entries

    async def add_file(self, path: Path | str, pin: bool = True) -> ContentCID:
        """Add a file, local first (see :class:`~rubix_integration.FilesystemHandler`)."""
        return await _in_thread(lambda: self.filesystem.add_file(path, pin=pin))

    async def add_directory(self, path: Path | str, recursive: bool = True,
                            pin: bool = True) -> DirectoryCID:
        """Add a directory, local first."""
        return await _in_thread(functools.partial(self.filesystem.add_directory, path,
                                                  recursive=recursive, pin=pin))

    # --- provenance ----------------------------------------------------------------------------

    async def log_event(self, event_type: str, data: Any = None) -> LoggedCID | None:
        """:meth:`DatasetsManager.log_event <rubix_integration.DatasetsManager.log_event>`."""
        return await _in_thread(lambda: self.datasets.log_event(event_type, data))

    async def track_provenance(self, operation: str,
                               data: Mapping[str, Any]) -> LoggedCID | None:
        """:meth:`DatasetsManager.track_provenance
        <rubix_integration.DatasetsManager.track_provenance>`."""
        return await _in_thread(lambda: self.datasets.track_provenance(operation, data))

    async def query_logs(self, filters: Mapping[str, Any] | None = None, *,
                         limit: int | None = 100, **kwargs: Any) -> list[ProvenanceRecord]:
        """Provenance records matching ``filters`` (as ``ProvenanceLogger.query_logs``)."""
        return await _in_thread(lambda: self.manager.provenance.query_logs(
            filters, limit=limit, **kwargs))

    # --- workflow ------------------------------------------------------------------------------

    async def submit_task(self, task_id: str, task_type: str, data: Any = None,
                          **kwargs: Any) -> TaskView:
        """Queue a task (see :class:`~rubix_integration.WorkflowCoordinator`)."""
        return await _in_thread(lambda: self.workflow.submit_task(task_id, task_type, data,
                                                                  **kwargs))

    async def get_next_task(self, worker_id: str,
                            capabilities: Iterable[str] | str | None = (),
                            **kwargs: Any) -> TaskView | None:
        """Claim the next task this worker can run, or ``None``."""
        task = await _in_thread(lambda: self.workflow.get_next_task(worker_id, capabilities,
                                                                    **kwargs))
        return None if task is None else TaskView.of(task)

    async def complete_task(self, task_id: str, result: Any = None,
                            **kwargs: Any) -> TaskView:
        """Accept a task's result."""
        return await _in_thread(lambda: self.workflow.complete_task(task_id, result, **kwargs))

    async def get_task_status(self, task_id: str) -> TaskView:
        """The task's current fields."""
        return await _in_thread(lambda: self.workflow.get_task_status(task_id))

    # --- token sync ----------------------------------------------------------------------------

    async def sync_tokens(self, roots: Sequence[Path | str], **kwargs: Any) -> SyncSummary:
        """:meth:`Manager.sync_tokens <rubix_integration.Manager.sync_tokens>` off the loop
        (each database is written in its own transactions; a cancelled sync finishes first)."""
        return await _in_thread(lambda: self.manager.sync_tokens(roots, **kwargs))

    # --- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client and what this object opened."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        await _in_thread(self.datasets.close)

    async def __aenter__(self) -> AsyncManager:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
