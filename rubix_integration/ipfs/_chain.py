"""Several backends serving one repo path as one: the fastest first, the others for what it lacks.

Auto-detection builds one when more than one backend can serve a node: typically ``repo`` (blocks
read straight from disk) backed by ``http`` (the node's daemon, for blocks that are not on disk)
and then ``cli``. Reads go to each member in turn while the content is not found there (or its
block there is corrupt); every other error is final, because another member would answer the same
(an invalid CID, a directory where a file was asked, content over the size limit). Writes go to the
first member that can write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from rubix_integration.errors import (
    ContentNotFoundError,
    CorruptBlockError,
    IPFSError,
    IPFSUnavailableError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs.base import (
    AddResult,
    DirEntry,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

__all__ = ["FallbackBackend"]

T = TypeVar("T")

# errors after which the next member may still have good content
_TRY_NEXT = (ContentNotFoundError, CorruptBlockError, IPFSUnavailableError,
             UnsupportedOperationError)


class FallbackBackend(IPFSBackend):
    """Reads from the first member that has the content; writes to the first writable member."""

    priority = 0

    def __init__(self, members: Sequence[IPFSBackend]) -> None:
        if not members:
            raise ValueError("a fallback chain needs at least one backend")
        super().__init__(members[0].context)
        self.members = tuple(members)
        self.name = "+".join(m.name for m in members)  # type: ignore[misc]
        self.read_only = all(m.read_only for m in members)  # type: ignore[misc]

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        return IPFSDetection(False, "built by auto-detection, not detected")

    def _read(self, call: Callable[[IPFSBackend], T]) -> T:
        first: IPFSError | None = None
        for member in self.members:
            try:
                return call(member)
            except _TRY_NEXT as exc:
                # keep the most telling failure: a corrupt copy says more than "not found"
                if first is None or (isinstance(exc, CorruptBlockError)
                                     and not isinstance(first, CorruptBlockError)):
                    first = exc
        assert first is not None
        raise first

    def _writer(self) -> IPFSBackend:
        for member in self.members:
            if not member.read_only:
                return member
        raise UnsupportedOperationError(f"{self.name}: no member can write", backend=self.name)

    # --- reading ---------------------------------------------------------------------------------

    def cat(self, cid: str, *, offset: int = 0, length: int | None = None,
            max_size: int | None = None, timeout: float | None = None) -> bytes:
        return self._read(lambda m: m.cat(cid, offset=offset, length=length, max_size=max_size,
                                          timeout=timeout))

    def iter_cat(self, cid: str, *, offset: int = 0, length: int | None = None,
                 max_size: int | None = None, timeout: float | None = None) -> Iterator[bytes]:
        def start(member: IPFSBackend) -> tuple[bytes | None, Iterator[bytes]]:
            stream = member.iter_cat(cid, offset=offset, length=length, max_size=max_size,
                                     timeout=timeout)
            return next(stream, None), stream  # fall back only before the first byte

        head, rest = self._read(start)
        if head is not None:
            yield head
            yield from rest

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        return self._read(lambda m: m.ls(cid, timeout=timeout))

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        return self._read(lambda m: m.get(cid, dest, timeout=timeout))

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        for member in self.members:
            try:
                if member.has(cid, timeout=timeout):
                    return True
            except UnsupportedOperationError:
                continue
        return False

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        return self._read(lambda m: m.get_block(cid, timeout=timeout))

    # --- writing ---------------------------------------------------------------------------------

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        return self._writer().add_bytes(data, pin=pin, timeout=timeout)

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        return self._writer().add_file(path, pin=pin, timeout=timeout)

    def add_directory(self, path: Path, *, recursive: bool = True, pin: bool = True,
                      timeout: float | None = None) -> AddResult:
        return self._writer().add_directory(path, recursive=recursive, pin=pin,
                                            timeout=timeout)

    def put_block(self, data: bytes, *, cid: str, timeout: float | None = None) -> None:
        self._writer().put_block(data, cid=cid, timeout=timeout)

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        self._writer().pin(cid, timeout=timeout)

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        self._writer().unpin(cid, timeout=timeout)

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        results = [(m.name, m.health()) for m in self.members]
        detail = "; ".join(f"{name}: {h.detail}" for name, h in results)
        return Health(ok=any(h.ok for _, h in results), detail=detail)

    def close(self) -> None:
        for member in self.members:
            member.close()
