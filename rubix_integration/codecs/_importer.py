"""Build UnixFS blocks exactly as kubo's ``ipfs add`` does with its default settings.

Defaults: CIDv0 (dag-pb, sha2-256), fixed 256 KiB chunks, a balanced DAG of at most 174 links per
node, leaves are dag-pb UnixFS File nodes. A file of one chunk is a single node. Directories are
UnixFS Directory nodes whose links are sorted by name; a link's Tsize is the cumulative size of all
blocks under it. A directory whose links kubo estimates at 256 KiB or more (name bytes plus CID
bytes, summed) becomes a HAMT-sharded directory instead, built as kubo builds it (see ``_hamt``).

The file importer streams: it holds one chunk and the pending links of each tree level, so its
memory does not grow with the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import NamedTuple, Protocol

from rubix_integration.codecs._cid import CID, DAG_PB
from rubix_integration.codecs._dagpb import PBLink, encode_pbnode
from rubix_integration.codecs._hamt import SHARDING_THRESHOLD, build_hamt, needs_sharding
from rubix_integration.codecs._unixfs import DIRECTORY, FILE, SYMLINK, encode_unixfs

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "BlockSink",
    "ImportedNode",
    "import_bytes",
    "import_directory",
    "import_file",
    "import_symlink",
    "iter_file_blocks",
]

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

BlockSink = Callable[[CID, bytes], None]


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ImportedNode(NamedTuple):
    """The root of an imported DAG.

    ``tsize`` is the cumulative size of every block in it (what a parent link's Tsize holds);
    ``filesize`` is the number of content bytes (0 for directories and symlinks).
    """

    cid: CID
    tsize: int
    filesize: int


def _block(data: bytes) -> CID:
    return CID(0, DAG_PB, b"\x12\x20" + hashlib.sha256(data).digest())


def _read_full(stream: _Readable, size: int) -> bytes:
    # a pipe or socket may return short reads; kubo's splitter fills every chunk
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    missing = size - len(data)
    while missing:
        more = stream.read(missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def _parent(children: list[ImportedNode]) -> tuple[ImportedNode, bytes]:
    links = [PBLink(c.cid, "", c.tsize) for c in children]
    filesize = sum(c.filesize for c in children)
    block = encode_pbnode(
        links, encode_unixfs(FILE, filesize=filesize, blocksizes=[c.filesize for c in children])
    )
    node = ImportedNode(_block(block), len(block) + sum(c.tsize for c in children), filesize)
    return node, block


def _file_dag(
    stream: _Readable, chunk_size: int, max_links: int
) -> Generator[tuple[CID, bytes], None, ImportedNode]:
    # levels[0] holds leaves not yet grouped, levels[k] holds finished nodes of height k
    levels: list[list[ImportedNode]] = [[]]
    chunk = _read_full(stream, chunk_size)
    if not chunk:
        block = encode_pbnode((), encode_unixfs(FILE, filesize=0))
        cid = _block(block)
        yield cid, block
        return ImportedNode(cid, len(block), 0)
    while chunk:
        block = encode_pbnode((), encode_unixfs(FILE, data=chunk, filesize=len(chunk)))
        cid = _block(block)
        yield cid, block
        levels[0].append(ImportedNode(cid, len(block), len(chunk)))
        # a level that reaches the link limit becomes one node of the level above, so the first
        # subtrees are always full, as in kubo's balanced layout
        height = 0
        while len(levels[height]) == max_links:
            node, block = _parent(levels[height])
            yield node.cid, block
            levels[height] = []
            if height + 1 == len(levels):
                levels.append([])
            levels[height + 1].append(node)
            height += 1
        chunk = _read_full(stream, chunk_size)
    # close the partial levels bottom-up; a lone node at the top is the root itself
    height = 0
    while True:
        pending = levels[height]
        above = any(levels[height + 1 :])
        if len(pending) == 1 and not above:
            return pending[0]
        if pending:
            node, block = _parent(pending)
            yield node.cid, block
            if height + 1 == len(levels):
                levels.append([])
            levels[height + 1].append(node)
        height += 1


def iter_file_blocks(
    stream: _Readable, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS
) -> Iterator[tuple[CID, bytes]]:
    """Yield ``(cid, block)`` for every block of the file read from ``stream``; the last is the
    root. Blocks with equal content are yielded each time they occur."""
    yield from _file_dag(stream, chunk_size, max_links)


def import_file(
    stream: _Readable,
    sink: BlockSink,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> ImportedNode:
    """Import the file read from ``stream``, pass each block to ``sink``, return the root."""
    gen = _file_dag(stream, chunk_size, max_links)
    while True:
        try:
            cid, block = next(gen)
        except StopIteration as stop:
            root: ImportedNode = stop.value
            return root
        sink(cid, block)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        start = self._pos
        stop = len(self._view) if size < 0 else min(len(self._view), start + size)
        self._pos = stop
        return bytes(self._view[start:stop])


def import_bytes(data: bytes, sink: BlockSink) -> ImportedNode:
    """Import ``data`` as one file (see :func:`import_file`)."""
    return import_file(_BytesReader(data), sink)


def file_cid(data: bytes) -> CID:
    """The CID ``ipfs add`` gives ``data`` with default settings, storing nothing."""
    return import_bytes(data, _discard).cid


def _discard(cid: CID, block: bytes) -> None:
    """A sink that keeps nothing."""


def import_symlink(target: str, sink: BlockSink) -> ImportedNode:
    """Import a symbolic link pointing at ``target``."""
    block = encode_pbnode((), encode_unixfs(SYMLINK, data=target.encode("utf-8")))
    cid = _block(block)
    sink(cid, block)
    return ImportedNode(cid, len(block), 0)


def import_directory(
    entries: Iterable[tuple[str, ImportedNode]],
    sink: BlockSink,
    *,
    sharding_threshold: int = SHARDING_THRESHOLD,
) -> ImportedNode:
    """Build a directory over already imported children, as kubo's ``ipfs add`` does.

    Below ``sharding_threshold`` (kubo's estimate: name bytes plus CID bytes over all entries)
    the directory is one node whose links are sorted by name; at or above it, a HAMT-sharded
    directory whose shard blocks all go to ``sink``. A threshold of 0 never shards.
    """
    items = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("duplicate names in a directory")
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid directory entry name {name!r}")
    links = [PBLink(node.cid, name, node.tsize) for name, node in items]
    if needs_sharding(links, sharding_threshold):
        cid, tsize = build_hamt(links, sink)
        return ImportedNode(cid, tsize, 0)
    block = encode_pbnode(links, encode_unixfs(DIRECTORY))
    cid = _block(block)
    sink(cid, block)
    return ImportedNode(cid, len(block) + sum(node.tsize for _, node in items), 0)
