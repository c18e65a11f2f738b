"""Write a UnixFS tree to the local filesystem without ever leaving the destination.

Content names every entry, so a hostile DAG can try to escape: a symlink ``evil -> /etc`` followed
by a directory also named ``evil``, a link then a file of one name, names a filesystem refuses,
nesting without end. The writer holds:

- names are checked (no ``/``, ``.``, ``..``, NUL) and a name twice in one directory (plain or
  across HAMT buckets) is refused before any entry of that directory is written;
- every entry is opened or created relative to its parent directory's descriptor with
  ``O_NOFOLLOW``, so no link is ever followed below the destination, whoever made it;
- an existing entry is replaced only by one of its own kind (a file by a file, a link by a link,
  a directory is written into); anything else in the way is refused;
- directories nest at most :data:`MAX_DAG_DEPTH` levels. Only one directory descriptor is open at a
  time: the walk climbs back through ``..`` and checks it reached the very directory it left.

The destination itself is the caller's choice and is used as given.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from rubix_integration.errors import (
    CorruptBlockError,
    DAGTooDeepError,
    IPFSError,
    UnsafePathError,
)

__all__ = ["MAX_DAG_DEPTH", "DirOut", "FileOut", "LinkOut", "safe_name", "write_tree"]

# A directory deeper than this cannot be named by a path on Linux (PATH_MAX is 4096 bytes and each
# level takes at least two), kubo's file DAGs are under ten levels and its HAMTs at most eight, so
# nothing real comes near it; every walk over a DAG stops here.
MAX_DAG_DEPTH = 2048

T = TypeVar("T")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_BUFFER = 1 << 20
# what the filesystem says when an entry's name or place is taken or impossible
_REFUSED = frozenset({errno.EEXIST, errno.ELOOP, errno.ENOTDIR, errno.EISDIR,
                      errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.ENOTEMPTY})


@dataclass(frozen=True)
class FileOut:
    """A file: its content, read lazily as it is written."""

    chunks: Iterable[bytes]


@dataclass(frozen=True)
class LinkOut:
    """A symbolic link to ``target`` (written as is, never followed)."""

    target: str


@dataclass(frozen=True)
class DirOut(Generic[T]):
    """A directory: its entries in stored order, each a name and what to resolve it with."""

    entries: list[tuple[str, T]]


Resolve = Callable[[T], "FileOut | LinkOut | DirOut[T]"]


def safe_name(name: str) -> bool:
    """Whether ``name`` is one path component that stays where it is put."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


@dataclass
class _Frame(Generic[T]):
    entries: Iterator[tuple[str, T]]
    ident: tuple[int, int]
    rel: str


class _Writer(Generic[T]):
    def __init__(self, dest: Path, resolve: Resolve[T], describe: Callable[[T], str],
                 backend: str) -> None:
        self.dest = dest
        self.resolve = resolve
        self.describe = describe
        self.backend = backend
        # the entry being written, for errors raised by the filesystem
        self._rel = ""
        self._item: T | None = None

    # --- errors ----------------------------------------------------------------------------------

    def _name(self, item: T | None) -> str:
        return self.describe(item) if item is not None else "?"

    def _refuse(self, rel: str, why: str, item: T | None) -> UnsafePathError:
        return UnsafePathError(f"get {self._name(item)}: refusing to write {rel!r} under "
                               f"{self.dest}: {why}", cid=self._name(item),
                               backend=self.backend, path=str(self.dest / rel))

    def _os_error(self, rel: str, exc: OSError, item: T | None) -> IPFSError:
        if exc.errno in _REFUSED:
            return self._refuse(rel, exc.strerror or str(exc), item)
        return IPFSError(f"get {self._name(item)}: cannot write {self.dest / rel}: "
                         f"{exc.strerror or exc}", cid=self._name(item), backend=self.backend,
                         path=str(self.dest / rel))

    def _checked(self, entries: list[tuple[str, T]], rel: str, item: T) -> list[tuple[str, T]]:
        seen: set[str] = set()
        for name, _ in entries:
            if not safe_name(name):
                raise CorruptBlockError(
                    f"directory {self.describe(item)} has an unsafe entry name {name!r}",
                    cid=self.describe(item), backend=self.backend)
            if name in seen:
                raise self._refuse(_join(rel, name), f"directory {self.describe(item)} has two "
                                   f"entries named {name!r}", item)
            seen.add(name)
        return entries

    # --- the walk --------------------------------------------------------------------------------

    def write(self, root: T) -> None:
        self._item = root
        out = self.resolve(root)
        try:
            if isinstance(out, FileOut):
                fd = os.open(self.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o666)
                _write_all(fd, out.chunks)
            elif isinstance(out, LinkOut):
                if self.dest.is_symlink() or self.dest.is_file():
                    self.dest.unlink()
                os.symlink(out.target, self.dest)
            else:
                self.dest.mkdir(parents=True, exist_ok=True)
                self._walk(root, out)
        except IPFSError:
            raise
        except OSError as exc:
            # IPFSTimeoutError is an OSError too: classified errors pass through untouched
            raise self._os_error(self._rel, exc, self._item) from exc

    def _walk(self, root: T, top: DirOut[T]) -> None:
        self._item = root
        fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            stack = [_Frame(iter(self._checked(top.entries, "", root)), (st.st_dev, st.st_ino),
                            "")]
            while stack:
                frame = stack[-1]
                entry = next(frame.entries, None)
                if entry is None:
                    stack.pop()
                    if stack:
                        fd = self._climb(fd, stack[-1], root)
                    continue
                name, item = entry
                rel = self._rel = _join(frame.rel, name)
                self._item = item
                out = self.resolve(item)
                if isinstance(out, FileOut):
                    self._file(fd, name, rel, out, item)
                elif isinstance(out, LinkOut):
                    self._link(fd, name, rel, out, item)
                else:
                    if len(stack) >= MAX_DAG_DEPTH:
                        raise DAGTooDeepError(
                            f"get {self.describe(root)}: directories nest more than "
                            f"{MAX_DAG_DEPTH} levels", limit=MAX_DAG_DEPTH,
                            cid=self.describe(root), backend=self.backend,
                            path=str(self.dest))
                    entries = self._checked(out.entries, rel, item)
                    child = self._enter(fd, name, rel, item)
                    os.close(fd)
                    fd = child
                    st = os.fstat(fd)
                    stack.append(_Frame(iter(entries), (st.st_dev, st.st_ino), rel))
        finally:
            os.close(fd)

    def _climb(self, fd: int, parent: _Frame[T], root: T) -> int:
        up = os.open("..", _DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        st = os.fstat(up)
        if (st.st_dev, st.st_ino) != parent.ident:
            os.close(up)
            raise self._refuse(parent.rel, "a directory was moved while it was written", root)
        return up

    def _existing(self, fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _file(self, fd: int, name: str, rel: str, out: FileOut, item: T) -> None:
        st = self._existing(fd, name)
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise self._refuse(rel, f"a {_kind(st)} is in the way of a file", item)
            os.unlink(name, dir_fd=fd)
        _write_all(os.open(name, _NEW_FILE, 0o666, dir_fd=fd), out.chunks)

    def _link(self, fd: int, name: str, rel: str, out: LinkOut, item: T) -> None:
        st = self._existing(fd, name)
        if st is not None:
            if not stat.S_ISLNK(st.st_mode):
                raise self._refuse(rel, f"a {_kind(st)} is in the way of a link", item)
            os.unlink(name, dir_fd=fd)
        os.symlink(out.target, name, dir_fd=fd)

    def _enter(self, fd: int, name: str, rel: str, item: T) -> int:
        try:
            os.mkdir(name, 0o777, dir_fd=fd)
        except FileExistsError:
            st = self._existing(fd, name)
            if st is None or not stat.S_ISDIR(st.st_mode):
                kind = _kind(st) if st is not None else "vanished entry"
                raise self._refuse(rel, f"a {kind} is in the way of a directory", item) from None
        return os.open(name, _DIR_FLAGS, dir_fd=fd)


def write_tree(root: T, dest: Path, resolve: Resolve[T], *, describe: Callable[[T], str],
               backend: str) -> None:
    """Write the file, link or directory tree ``root`` to ``dest`` (see the module docstring).

    ``resolve`` says what an item is (reading its block); ``describe`` names an item (its CID)
    in errors. Raises :class:`UnsafePathError` for a repeated name or an entry in the way,
    :class:`DAGTooDeepError` past :data:`MAX_DAG_DEPTH`, :class:`CorruptBlockError` for a name
    no directory may hold, and :class:`IPFSError` (with ``path``) when the filesystem fails.
    """
    _Writer(Path(dest), resolve, describe, backend).write(root)


def _write_all(fd: int, chunks: Iterable[bytes]) -> None:
    with open(fd, "wb", buffering=_WRITE_BUFFER) as fh:
        for chunk in chunks:
            fh.write(chunk)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "special file"
