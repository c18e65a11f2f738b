"""The ``http`` backend: a running IPFS daemon's RPC API (kubo's ``/api/v0``, js-ipfs's too).

The address comes from the ``ipfs_api`` setting (a multiaddr such as ``/ip4/127.0.0.1/tcp/5001``
or a URL such as ``http://127.0.0.1:5001``), else from the repo's ``api`` file, which a daemon
writes when it starts. Every request goes through one transport with one error map,
:class:`~rubix_integration.ipfs._rpc.RPC`.

Every request carries the daemon-side ``timeout`` argument and a slightly longer client-side
timeout, so that a CID held by no one ends with the daemon's own "timed out" answer rather than a
hang; streamed reads also stop at an overall deadline.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rubix_integration.codecs import CID, import_directory, parse_cid, verify_block
from rubix_integration.errors import (
    ConfigError,
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    IPFSError,
    IPFSTimeoutError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs._rpc import (
    CLIENT_GRACE,
    RPC,
    ApiAddress,
    parse_api_address,
    probe_version,
    resolve_address,
)
from rubix_integration.ipfs._writeout import DirOut, FileOut, LinkOut, write_tree
from rubix_integration.ipfs.base import (
    AddedEntry,
    AddResult,
    DirEntry,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

__all__ = ["CLIENT_GRACE", "ApiAddress", "HTTPBackend", "parse_api_address"]

PROBE_TIMEOUT = 1.0
"""Seconds :meth:`HTTPBackend.detect` and :meth:`HTTPBackend.health` wait for ``/version``."""

HAS_PROBE_TIMEOUT = 0.5
"""Longest wait of :meth:`HTTPBackend.has` for a block the daemon does not hold."""

_ADD_OPTS = {
    # kubo's defaults, spelled out: the CIDs must match what `ipfs add` gives everywhere
    "cid-version": "0",
    "chunker": "size-262144",
    "raw-leaves": "false",
    "progress": "false",
    "wrap-with-directory": "false",
}

_READ_CHUNK = 64 * 1024


# --- the backend ---------------------------------------------------------------------------------


class HTTPBackend(IPFSBackend):
    """Serve content through a daemon's RPC API (kubo or js-ipfs)."""

    name = "http"
    priority = 20
    read_only = False

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        self._rpc = RPC(context, self.name)

    # --- detection -------------------------------------------------------------------------------

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        try:
            resolved = resolve_address(context)
        except ConfigError as exc:
            return IPFSDetection(False, str(exc))
        if isinstance(resolved, str):
            return IPFSDetection(False, resolved)
        timeout = min(PROBE_TIMEOUT, context.timeout)
        try:
            version = probe_version(resolved, timeout)
        except OSError as exc:
            return IPFSDetection(
                False, f"no IPFS daemon answers at {resolved.url} (from {resolved.source}): "
                f"{exc or type(exc).__name__}")
        return IPFSDetection(True, f"daemon {version.get('Version', '?')} answers at "
                             f"{resolved.url} (from {resolved.source})")

    @property
    def address(self) -> ApiAddress | None:
        """The daemon address in use (``None`` when none could be found)."""
        return self._rpc.address

    def client(self) -> Any:
        """An :class:`ipfshttpclient.Client` on the same daemon, for RPC calls outside this
        backend's contract (``name.publish``, ``pubsub``, ``swarm``, ...).

        Built directly on the resolved address (``ipfshttpclient.connect()`` refuses every daemon
        newer than kubo 0.7), with a keep-alive session; the caller closes it. The backend's own
        calls do not use it: they go through one transport with one error map.
        """
        address = self._rpc.addr()
        try:
            import ipfshttpclient
        except ImportError as exc:
            raise UnsupportedOperationError(
                "http: the ipfshttpclient package is not installed "
                "(pip install 'ipfshttpclient>=0.7,<0.8')", backend=self.name) from exc
        return ipfshttpclient.Client(address.multiaddr, session=True,
                                     timeout=self.context.timeout)

    # --- plumbing --------------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        value = self.context.timeout if timeout is None else timeout
        if value <= 0:
            raise ValueError(f"timeout must be positive, got {value}")
        return value

    # --- reading ---------------------------------------------------------------------------------

    def cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        _check_range(offset, length)
        if length == 0 and max_size is None:
            # the daemon rejects length=0; an empty slice needs no request
            parse_cid(cid)
            return b""
        if max_size is None or (offset == 0 and length is None):
            # one request; with a limit, read at most one byte past it instead of asking the size
            text = str(parse_cid(cid))
            conn, response = self._rpc.request("cat", (text,), _range_opts(offset, length),
                                           limit=self._timeout(timeout), what="cat", cid=text)
            data = self._rpc.read(conn, response, "cat", text, max_size=max_size)
            if max_size is not None and len(data) > max_size:
                raise ContentTooLargeError(
                    f"http: {text} holds more than the limit of {max_size} bytes",
                    cid=text, backend=self.name)
            return data
        return b"".join(self.iter_cat(cid, offset=offset, length=length, max_size=max_size,
                                      timeout=timeout))

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        _check_range(offset, length)
        if max_size is not None:
            kind, size = self._stat(cid, timeout)
            if kind != "file":
                raise NotAFileError(f"http: {cid} is a {kind}, not a file", cid=str(cid),
                                    backend=self.name)
            if size > max_size:
                raise ContentTooLargeError(
                    f"http: {cid} holds {size} bytes, more than the limit of {max_size}",
                    cid=str(cid), backend=self.name)
        if length == 0:
            parse_cid(cid)
            return iter(())
        return self._stream_cat(cid, offset, length, timeout)

    def _stream_cat(self, cid: str, offset: int, length: int | None,
                    timeout: float | None) -> Iterator[bytes]:
        """Open the stream now (errors surface at the call) and yield its chunks lazily."""
        text = str(parse_cid(cid))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit + CLIENT_GRACE
        conn, response = self._rpc.request("cat", (text,), _range_opts(offset, length), limit=limit,
                                       what="cat", cid=text, stream=True)
        return self._rpc.stream(conn, response, "cat", text, deadline, length)

    def _stat(self, cid: str, timeout: float | None) -> tuple[str, int]:
        """``("file"|"directory"|..., content size)`` of ``cid`` from ``files/stat``."""
        text = str(parse_cid(cid))
        answer = self._rpc.call("files/stat", (f"/ipfs/{text}",), limit=self._timeout(timeout),
                            what="stat", cid=text)
        stat = answer[0] if answer else {}
        return str(stat.get("Type", "other")), int(stat.get("Size", 0) or 0)

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        text = str(parse_cid(cid))
        answer = self._rpc.call("ls", (text,), limit=self._timeout(timeout), what="ls", cid=text)
        entries: list[DirEntry] = []
        for part in answer:
            for obj in part.get("Objects") or []:
                for link in obj.get("Links") or []:
                    kind = _LINK_TYPES.get(int(link.get("Type", -1)), "other")
                    size = int(link.get("Size", 0) or 0) if kind == "file" else 0
                    entries.append(DirEntry(str(link.get("Name", "")), str(link["Hash"]), size,
                                            kind))
        return entries

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        """Write the file or tree to ``dest`` (``dest`` becomes the file or directory itself).

        Walks the tree with ``ls`` and ``cat`` rather than ``/get``'s tar stream: names are checked
        before anything is written and one deadline covers the whole tree.
        """
        root = str(parse_cid(cid))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        dest = Path(dest)
        kind, _ = self._stat(root, limit)
        self._write(root, kind, dest, deadline)
        return dest

    def _remaining(self, deadline: float, cid: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise IPFSTimeoutError(f"http: get {cid}: did not finish in time", cid=cid,
                                   backend=self.name)
        return left

    def _write(self, cid: str, kind: str, dest: Path, deadline: float) -> None:
        # the same writer as the block-reading backends: names checked, no link followed, a
        # repeated name refused, nesting bounded
        def resolve(item: tuple[str, str]) -> FileOut | LinkOut | DirOut[tuple[str, str]]:
            at, what = item
            if what == "file":
                return FileOut(self._stream_cat(at, 0, None, self._remaining(deadline, at)))
            if what == "directory":
                entries = self.ls(at, timeout=self._remaining(deadline, at))
                return DirOut([(e.name, (e.cid, e.type)) for e in entries])
            raise NotAFileError(f"http: {at} is neither a file nor a directory", cid=at,
                                backend=self.name, path=str(dest))

        write_tree((cid, kind), dest, resolve, describe=lambda item: item[0],
                   backend=self.name)

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Ask ``block/stat`` with ``offline=true`` and a short limit.

        kubo answers at once for a block it lacks; js-ipfs ignores ``offline`` and waits, so a
        missing block costs up to :data:`HAS_PROBE_TIMEOUT` there (and, the daemon being offline,
        nothing is fetched).
        """
        text = str(parse_cid(cid))
        limit = min(self._timeout(timeout), HAS_PROBE_TIMEOUT)
        try:
            self._rpc.call("block/stat", (text,), {"offline": "true"}, limit=limit, what="has",
                       cid=text)
        except (ContentNotFoundError, IPFSTimeoutError):
            return False
        return True

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        parsed = parse_cid(cid)
        text = str(parsed)
        conn, response = self._rpc.request("block/get", (text,), limit=self._timeout(timeout),
                                       what="block get", cid=text)
        data = self._rpc.read(conn, response, "block get", text)
        verify_block(parsed, data)
        return data

    # --- writing ---------------------------------------------------------------------------------

    def put_block(self, data: bytes, *, cid: str, timeout: float | None = None) -> None:
        expected = parse_cid(cid)
        verify_block(expected, data)
        from rubix_integration.codecs._cid import HASH_NAMES

        opts = {"format": expected.codec_name, "mhtype": HASH_NAMES.get(expected.hash_code, ""),
                "version": str(expected.version)}
        boundary = uuid.uuid4().hex
        answer = self._rpc.call(
            "block/put", (), opts, limit=self._timeout(timeout), what="block put",
            cid=str(expected), body=b"".join(_multipart([("block", data)], boundary)),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        got = parse_cid(str(answer[0].get("Key", "") if answer else ""))
        if got.multihash != expected.multihash or got.codec != expected.codec:
            raise CorruptBlockError(
                f"http: the daemon stored the block as {got}, expected {expected}",
                cid=str(expected), backend=self.name)

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        rows = self._add([("bytes", data)], pin=pin, timeout=timeout, path=None)
        return str(rows[-1]["Hash"])

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        path = Path(path)
        if not path.is_file():
            raise NotAFileError(f"http: {path} is not a regular file", path=str(path),
                                backend=self.name)
        rows = self._add([(path.name or "file", path)], pin=pin, timeout=timeout, path=str(path))
        return str(rows[-1]["Hash"])

    def add_directory(
        self,
        path: Path,
        *,
        recursive: bool = True,
        pin: bool = True,
        timeout: float | None = None,
    ) -> AddResult:
        """Add a tree the way ``ipfs add -r`` does: hidden names skipped, empty folders kept.

        Symbolic links raise :class:`UnsupportedOperationError`.
        """
        path = Path(path)
        if not path.is_dir():
            raise NotAFileError(f"http: {path} is not a directory", path=str(path),
                                backend=self.name)
        files, dirs = _scan(path, recursive, self.name)
        root = "root"
        if not files:
            # the daemon cannot take a body made only of folders; their blocks are computed here
            return self._add_empty_tree(dirs, pin=pin, timeout=timeout)
        parts: list[tuple[str, bytes | Path | None]] = [
            (f"{root}/{rel}", path / rel) for rel in files
        ]
        # Only folders with nothing under them get a part of their own: js-ipfs rejects a body
        # that starts with a folder part and empties a folder whose part follows its files.
        parents = {p.rpartition("/")[0] for p in (*files, *dirs) if p}
        parts.extend((f"{root}/{rel}", None) for rel in dirs if rel and rel not in parents)
        rows = self._add(parts, pin=pin, timeout=timeout, path=str(path))
        entries: dict[str, AddedEntry] = {}
        for row in rows:
            name = str(row.get("Name", ""))
            rel = "" if name == root else name[len(root) + 1:] if name.startswith(root + "/") \
                else name
            is_dir = rel == "" or rel in dirs
            entries[rel] = AddedEntry(rel, str(row["Hash"]), int(row.get("Size", 0) or 0), is_dir)
        if "" not in entries:
            raise IPFSError(f"http: add of {path} returned no root", path=str(path),
                            backend=self.name)
        # js-ipfs does not report folders that end up empty; their CID is fixed
        empty = import_directory([], lambda _c, _b: None)
        for rel in dirs:
            if rel not in entries:
                entries[rel] = AddedEntry(rel, str(empty.cid), empty.tsize, True)
        ordered = sorted(entries.values(), key=lambda e: (e.path != "", e.path))
        return AddResult(entries[""].cid, tuple(ordered))

    def _add_empty_tree(self, dirs: list[str], *, pin: bool,
                        timeout: float | None) -> AddResult:
        blocks: list[tuple[CID, bytes]] = []
        children: dict[str, list[str]] = {rel: [] for rel in dirs}
        for rel in dirs:
            if rel:
                children[rel.rpartition("/")[0]].append(rel)
        built: dict[str, Any] = {}
        for rel in sorted(dirs, key=lambda r: -r.count("/") if r else 1):
            items = [(c.rpartition("/")[2], built[c]) for c in children[rel]]
            built[rel] = import_directory(items, lambda c, b: blocks.append((c, b)))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        for block_cid, block in blocks:
            self.put_block(block, cid=str(block_cid), timeout=self._remaining(deadline, "add"))
        root_cid = str(built[""].cid)
        if pin:
            self.pin(root_cid, timeout=self._remaining(deadline, root_cid))
        entries = tuple(AddedEntry(rel, str(built[rel].cid), built[rel].tsize, True)
                        for rel in sorted(dirs))
        return AddResult(root_cid, entries)

    def _add(self, parts: list[tuple[str, bytes | Path | None]], *, pin: bool,
             timeout: float | None, path: str | None) -> list[dict[str, Any]]:
        boundary = uuid.uuid4().hex
        chunks = _multipart(parts, boundary)
        body: bytes | Iterator[bytes] = chunks
        if not any(isinstance(content, Path) for _, content in parts):
            body = b"".join(chunks)  # no file to stream: sent at once, on the kept-alive one
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        opts = dict(_ADD_OPTS, pin="true" if pin else "false")
        rows = self._rpc.call("add", (), opts, limit=self._timeout(timeout), what="add", path=path,
                          body=body, headers=headers)
        result = [r for r in rows if "Hash" in r]
        if not result:
            raise IPFSError(f"http: add returned nothing ({rows!r:.200})", path=path,
                            backend=self.name)
        return result

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        text = str(parse_cid(cid))
        self._rpc.call("pin/add", (text,), {"recursive": "true"}, limit=self._timeout(timeout),
                   what="pin", cid=text)

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        """Remove the recursive pin; a CID that is not pinned is left as it is."""
        text = str(parse_cid(cid))
        try:
            self._rpc.call("pin/rm", (text,), {"recursive": "true"}, limit=self._timeout(timeout),
                       what="unpin", cid=text)
        except ContentNotFoundError as exc:
            if "not pinned" not in str(exc).lower():
                raise

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        try:
            address = self._rpc.addr()
        except IPFSError as exc:
            return Health(False, str(exc))
        try:
            version = probe_version(address, min(PROBE_TIMEOUT, self.context.timeout))
        except OSError as exc:
            return Health(False, f"no IPFS daemon answers at {address.url}: "
                          f"{exc or type(exc).__name__}")
        return Health(True, f"daemon {version.get('Version', '?')} at {address.url}")

    def close(self) -> None:
        self._rpc.close()


_LINK_TYPES: dict[int, Any] = {1: "directory", 5: "directory", 2: "file", 0: "file"}


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    if length is not None and length < 0:
        raise ValueError(f"length must not be negative, got {length}")


def _range_opts(offset: int, length: int | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if offset:
        opts["offset"] = str(offset)
    if length is not None:
        opts["length"] = str(length)
    return opts


def _scan(root: Path, recursive: bool, backend: str) -> tuple[list[str], list[str]]:
    """Relative paths of the files and folders (root ``""`` included) ``ipfs add -r`` would take."""
    files: list[str] = []
    dirs: list[str] = [""]
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        with os.scandir(folder) as it:
            names = sorted(it, key=lambda e: e.name)
        for entry in names:
            if entry.name.startswith("."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                raise UnsupportedOperationError(
                    f"{backend}: cannot add the symbolic link {root / child}",
                    backend=backend, path=str(root / child))
            if entry.is_dir():
                if recursive:
                    dirs.append(child)
                    stack.append(child)
            elif entry.is_file():
                files.append(child)
    return files, dirs


def _multipart(parts: Iterable[tuple[str, bytes | Path | None]],
               boundary: str) -> Iterator[bytes]:
    """Stream a multipart/form-data body: bytes and files as content, ``None`` as a folder."""
    for name, content in parts:
        kind = "application/x-directory" if content is None else "application/octet-stream"
        yield (f"--{boundary}\r\n"
               f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
               f"Content-Type: {kind}\r\n\r\n").encode()
        if isinstance(content, bytes):
            yield content
        elif isinstance(content, Path):
            with content.open("rb") as fh:
                while chunk := fh.read(_READ_CHUNK * 4):
                    yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
