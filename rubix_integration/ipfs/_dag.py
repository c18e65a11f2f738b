"""Read UnixFS content out of any block source: cat (with ranges), ls, get, and DAG walks.

The reader only needs a function that returns a block's verified bytes for a CID and raises
:class:`ContentNotFoundError` when it is missing, so the repo and the embedded backends share it.
A missing block fails at once: nothing here waits for the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from rubix_integration.codecs import (
    CID,
    DAG_PB,
    RAW,
    PBLink,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    parse_cid,
)
from rubix_integration.codecs._unixfs import (
    DIRECTORY,
    FILE,
    HAMT_SHARD,
    SYMLINK,
)
from rubix_integration.codecs._unixfs import RAW as UNIXFS_RAW
from rubix_integration.errors import (
    ContentTooLargeError,
    CorruptBlockError,
    DAGTooDeepError,
    IPFSTimeoutError,
    NotAFileError,
)
from rubix_integration.ipfs._writeout import (
    MAX_DAG_DEPTH,
    DirOut,
    FileOut,
    LinkOut,
    write_tree,
)
from rubix_integration.ipfs.base import DirEntry, IPFSBackend

__all__ = ["DagBackend", "DagReader", "GetBlock", "Node", "deadline_for"]

GetBlock = Callable[[CID], bytes]

_RAW_TYPE = UnixFSData(UNIXFS_RAW)


class Node(NamedTuple):
    """A decoded block. ``fs`` is ``None`` for codecs that are not UnixFS (dag-cbor, ...);
    ``size`` is the content size of file-like nodes."""

    cid: CID
    links: tuple[PBLink, ...]
    fs: UnixFSData | None
    data: bytes
    size: int


def deadline_for(timeout: float | None) -> float | None:
    """The monotonic time by which a call with ``timeout`` seconds must end."""
    return None if timeout is None else time.monotonic() + timeout


class DagReader:
    """UnixFS reads over ``get_block``; errors carry ``backend`` as their backend name."""

    def __init__(self, get_block: GetBlock, backend: str) -> None:
        self._get_block = get_block
        self.backend = backend

    # --- one block -------------------------------------------------------------------------------

    def node(self, cid: CID, deadline: float | None = None) -> Node:
        """Fetch and decode one block."""
        if deadline is not None and time.monotonic() > deadline:
            raise IPFSTimeoutError(f"timed out before reading block {cid}", cid=str(cid),
                                   backend=self.backend)
        block = self._get_block(cid)
        codec = cid.codec
        if codec == RAW:
            return Node(cid, (), _RAW_TYPE, block, len(block))
        if codec != DAG_PB:
            return Node(cid, (), None, block, 0)
        try:
            pb = decode_pbnode(block)
            if pb.data is None:
                raise CorruptBlockError("dag-pb node without UnixFS Data")
            fs = decode_unixfs(pb.data)
        except CorruptBlockError as exc:
            raise CorruptBlockError(f"block {cid}: {exc}", cid=str(cid),
                                    backend=self.backend) from None
        data = fs.data or b""
        size = 0
        if fs.type == FILE or fs.type == UNIXFS_RAW:
            size = len(data) + sum(fs.blocksizes)
            if (fs.filesize is not None and fs.filesize != size) or (
                fs.blocksizes and len(fs.blocksizes) != len(pb.links)
            ):
                raise CorruptBlockError(
                    f"block {cid}: UnixFS sizes disagree (filesize {fs.filesize}, data "
                    f"{len(data)}, blocksizes {len(fs.blocksizes)} for {len(pb.links)} links)",
                    cid=str(cid), backend=self.backend)
            if pb.links and not fs.blocksizes:
                raise CorruptBlockError(f"block {cid}: file node with links but no blocksizes",
                                        cid=str(cid), backend=self.backend)
        return Node(cid, pb.links, fs, data, size)

    def _file_node(self, cid: CID, deadline: float | None) -> Node:
        node = self.node(cid, deadline)
        fs = node.fs
        if fs is None or not (fs.type == FILE or fs.type == UNIXFS_RAW):
            kind = "a " + fs.type_name if fs is not None else f"a {cid.codec_name} block"
            raise NotAFileError(f"{cid} is {kind}, not a file", cid=str(cid),
                                backend=self.backend)
        return node

    # --- file content ----------------------------------------------------------------------------

    def cat(self, cid: str | CID, *, offset: int = 0, length: int | None = None,
            max_size: int | None = None, timeout: float | None = None) -> bytes:
        """A file's content, or a slice of it."""
        root = parse_cid(cid)
        if root.codec == DAG_PB and offset == 0 and length is None:
            # the common case, a small file in one block: decode it inline, no generator
            block = self._get_block(root)
            small = _small_file_data(block)
            if small is not None and (max_size is None or len(small) <= max_size):
                return small
            try:
                pb = decode_pbnode(block)
                fs = decode_unixfs(pb.data) if pb.data is not None and not pb.links else None
            except CorruptBlockError as exc:
                raise CorruptBlockError(f"block {root}: {exc}", cid=str(root),
                                        backend=self.backend) from None
            if fs is not None and fs.type == FILE and not fs.blocksizes:
                data = fs.data or b""
                if fs.filesize is not None and fs.filesize != len(data):
                    raise CorruptBlockError(
                        f"block {root}: filesize {fs.filesize} but {len(data)} data bytes",
                        cid=str(root), backend=self.backend)
                if max_size is not None and len(data) > max_size:
                    raise ContentTooLargeError(
                        f"{root} holds {len(data)} bytes, more than the limit of {max_size}",
                        cid=str(root), backend=self.backend)
                return data
        deadline = deadline_for(timeout)
        node = self._file_node(root, deadline)
        if max_size is not None and node.size > max_size:
            raise ContentTooLargeError(
                f"{root} holds {node.size} bytes, more than the limit of {max_size}",
                cid=str(root), backend=self.backend)
        start, stop = _range(node.size, offset, length)
        if not node.links:
            return node.data[start:stop]
        return b"".join(self._read(node, start, stop, deadline))

    def iter_cat(self, cid: str | CID, *, offset: int = 0, length: int | None = None,
                 max_size: int | None = None, timeout: float | None = None) -> Iterator[bytes]:
        """Stream a file's content (or a slice) block by block.

        The root is read and checked (not a file, too large) before the first chunk is yielded;
        deeper blocks are fetched as the stream is consumed.
        """
        root = parse_cid(cid)
        deadline = deadline_for(timeout)
        node = self._file_node(root, deadline)
        if max_size is not None and node.size > max_size:
            raise ContentTooLargeError(
                f"{root} holds {node.size} bytes, more than the limit of {max_size}",
                cid=str(root), backend=self.backend)
        start, stop = _range(node.size, offset, length)
        return self._read(node, start, stop, deadline)

    def _read(self, node: Node, start: int, stop: int,
              deadline: float | None) -> Iterator[bytes]:
        """Yield the bytes ``[start, stop)`` of ``node``'s content; subtrees outside the range
        are skipped by their blocksizes without being read.

        The walk keeps its own stack (one entry per level, at most :data:`MAX_DAG_DEPTH`), so a
        DAG built as a long chain ends in :class:`DAGTooDeepError`, not in Python's recursion.
        """
        if start >= stop:
            return
        top = node.cid
        # per level: the node, the range wanted of it, its remaining links and where they begin
        stack: list[tuple[Node, int, int, Iterator[tuple[PBLink, int]], list[int]]] = []
        current: Node | None = node
        while True:
            if current is not None:
                data = current.data
                if data and start < len(data):
                    yield data[start:min(stop, len(data))]
                if current.links:
                    if len(stack) >= MAX_DAG_DEPTH:
                        raise DAGTooDeepError(
                            f"file {top} nests more than {MAX_DAG_DEPTH} levels",
                            limit=MAX_DAG_DEPTH, cid=str(top), backend=self.backend)
                    blocksizes = current.fs.blocksizes if current.fs is not None else ()
                    stack.append((current, start, stop,
                                  iter(zip(current.links, blocksizes, strict=True)),
                                  [len(data)]))
                current = None
            if not stack:
                return
            parent, p_start, p_stop, links, at = stack[-1]
            for link, size in links:
                child_start = at[0]
                at[0] += size
                if at[0] <= p_start:
                    continue
                if child_start >= p_stop:
                    break
                child = self.node(link.cid, deadline)
                fs = child.fs
                if fs is None or not (fs.type == FILE or fs.type == UNIXFS_RAW) \
                        or child.size != size:
                    raise CorruptBlockError(
                        f"block {link.cid} under {parent.cid} is not the {size}-byte file part "
                        "its parent declares", cid=str(link.cid), backend=self.backend)
                current = child
                start = max(0, p_start - child_start)
                stop = min(size, p_stop - child_start)
                break
            if current is None:
                stack.pop()

    # --- directories -----------------------------------------------------------------------------

    def ls(self, cid: str | CID, *, timeout: float | None = None) -> list[DirEntry]:
        """The entries of a directory (HAMT-sharded ones too), in stored order.

        A file lists its chunk links with empty names, as ``ipfs ls`` does. Each entry's type is
        read from the child's root block; ``size`` is a file's content size and 0 otherwise.
        """
        root = parse_cid(cid)
        deadline = deadline_for(timeout)
        node = self.node(root, deadline)
        entries: list[DirEntry] = []
        for name, link in self._links(node, deadline):
            child = self.node(link.cid, deadline)
            fs = child.fs
            if fs is None:
                entries.append(DirEntry(name, str(link.cid), len(child.data), "other"))
            elif fs.type == FILE or fs.type == UNIXFS_RAW:
                entries.append(DirEntry(name, str(link.cid), child.size, "file"))
            elif fs.type in (DIRECTORY, HAMT_SHARD):
                entries.append(DirEntry(name, str(link.cid), 0, "directory"))
            else:
                entries.append(DirEntry(name, str(link.cid), len(child.data), "other"))
        return entries

    def _links(self, node: Node, deadline: float | None) -> Iterator[tuple[str, PBLink]]:
        fs = node.fs
        if fs is not None and fs.type == HAMT_SHARD:
            yield from self._hamt_links(node, deadline)
            return
        for link in node.links:
            yield link.name or "", link

    def _hamt_links(self, node: Node, deadline: float | None) -> Iterator[tuple[str, PBLink]]:
        # one stack entry per shard level, bounded like every other walk
        stack: list[tuple[Node, int, Iterator[PBLink]]] = [(node, _hamt_width(node),
                                                            iter(node.links))]
        while stack:
            shard, width, links = stack[-1]
            link = next(links, None)
            if link is None:
                stack.pop()
                continue
            name = link.name or ""
            if len(name) < width:
                raise CorruptBlockError(f"HAMT shard {shard.cid}: link name {name!r} too short",
                                        cid=str(shard.cid), backend=self.backend)
            if len(name) > width:
                yield name[width:], link
                continue
            child = self.node(link.cid, deadline)
            if child.fs is None or child.fs.type != HAMT_SHARD:
                raise CorruptBlockError(f"HAMT shard {shard.cid}: {link.cid} is not a shard",
                                        cid=str(link.cid), backend=self.backend)
            if len(stack) >= MAX_DAG_DEPTH:
                raise DAGTooDeepError(
                    f"HAMT directory {node.cid} nests more than {MAX_DAG_DEPTH} levels",
                    limit=MAX_DAG_DEPTH, cid=str(node.cid), backend=self.backend)
            stack.append((child, _hamt_width(child), iter(child.links)))

    # --- writing out -----------------------------------------------------------------------------

    def get(self, cid: str | CID, dest: Path, *, timeout: float | None = None) -> Path:
        """Write a file, symlink or directory tree to ``dest``; return ``dest``.

        Entries are written as :func:`~rubix_integration.ipfs._writeout.write_tree` allows:
        never through a link, never twice under one name, never deeper than the depth bound.
        """
        root = parse_cid(cid)
        deadline = deadline_for(timeout)

        def resolve(item: CID) -> FileOut | LinkOut | DirOut[CID]:
            node = self.node(item, deadline)
            fs = node.fs
            if fs is None:
                raise NotAFileError(f"{item} is a {item.codec_name} block, not UnixFS",
                                    cid=str(item), backend=self.backend)
            if fs.type == FILE or fs.type == UNIXFS_RAW:
                return FileOut(self._read(node, 0, node.size, deadline))
            if fs.type in (DIRECTORY, HAMT_SHARD):
                return DirOut([(name, link.cid) for name, link in self._links(node, deadline)])
            if fs.type == SYMLINK:
                return LinkOut(node.data.decode("utf-8", errors="surrogateescape"))
            raise NotAFileError(f"{item} is a UnixFS {fs.type_name} node", cid=str(item),
                                backend=self.backend)

        write_tree(root, Path(dest), resolve, describe=str, backend=self.backend)
        return Path(dest)

    # --- whole DAGs ------------------------------------------------------------------------------

    def iter_blocks(self, cid: str | CID, *, timeout: float | None = None,
                    seen: set[bytes] | None = None) -> Iterator[tuple[CID, bytes]]:
        """Every block of the DAG under ``cid`` (dag-pb links followed), each once."""
        root = parse_cid(cid)
        deadline = deadline_for(timeout)
        seen = set() if seen is None else seen
        stack = [root]
        while stack:
            current = stack.pop()
            if current.multihash in seen or current.multihash[0] == 0:
                continue
            seen.add(current.multihash)
            if deadline is not None and time.monotonic() > deadline:
                raise IPFSTimeoutError(f"timed out walking {root}", cid=str(root),
                                       backend=self.backend)
            block = self._get_block(current)
            yield current, block
            if current.codec == DAG_PB:
                try:
                    links = decode_pbnode(block).links
                except CorruptBlockError as exc:
                    raise CorruptBlockError(f"block {current}: {exc}", cid=str(current),
                                            backend=self.backend) from None
                stack.extend(link.cid for link in reversed(links))


def _range(size: int, offset: int, length: int | None) -> tuple[int, int]:
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    if length is not None and length < 0:
        raise ValueError(f"length must not be negative, got {length}")
    start = min(offset, size)
    stop = size if length is None else min(size, start + length)
    return start, stop


def _hamt_width(node: Node) -> int:
    """How many hex digits of a shard's link names are the bucket index (fanout - 1 in hex)."""
    fs = node.fs
    fanout = fs.fanout if fs is not None and fs.fanout else 256
    return len(f"{fanout - 1:X}")


class DagBackend(IPFSBackend):
    """A backend that reads UnixFS content block by block through a :class:`DagReader`.

    Subclasses set ``self._dag`` in ``__init__``; reads honour the context's default timeout.
    """

    _dag: DagReader

    def _timeout(self, timeout: float | None) -> float:
        return self.context.timeout if timeout is None else timeout

    def cat(self, cid: str, *, offset: int = 0, length: int | None = None,
            max_size: int | None = None, timeout: float | None = None) -> bytes:
        return self._dag.cat(cid, offset=offset, length=length, max_size=max_size,
                             timeout=self._timeout(timeout))

    def iter_cat(self, cid: str, *, offset: int = 0, length: int | None = None,
                 max_size: int | None = None, timeout: float | None = None) -> Iterator[bytes]:
        return self._dag.iter_cat(cid, offset=offset, length=length, max_size=max_size,
                                  timeout=self._timeout(timeout))

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        return self._dag.ls(cid, timeout=self._timeout(timeout))

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        return self._dag.get(cid, dest, timeout=self._timeout(timeout))


def _small_file_data(block: bytes) -> bytes | None:
    """The content of a block that is exactly the canonical dag-pb encoding of a one-block UnixFS
    file under 128 bytes (``0a L 08 02 12 N <N bytes> 18 N``), else ``None``.

    Such bytes decode to nothing else, so the general decoders are skipped for the shape nearly
    every token's content has; any other block takes the general path.
    """
    size = len(block)
    if size < 8 or block[0] != 0x0A or block[1] != size - 2 or block[2:5] != b"\x08\x02\x12":
        return None
    n = block[5]
    if n >= 0x80 or size != n + 8 or block[6 + n] != 0x18 or block[7 + n] != n:
        return None
    return block[6:6 + n]
