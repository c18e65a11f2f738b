"""Finding Rubix node databases under root folders, and fingerprinting them without opening them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["DEFAULT_PATTERN", "DiscoveryProblem", "NodeDatabase", "discover", "fingerprint"]

#: Where a node keeps its database, relative to the node folder.
DEFAULT_PATTERN = "Rubix/rubix.db"


@dataclass(frozen=True)
class NodeDatabase:
    """One node's database: its path, the node's name and its IPFS repo (if any)."""

    db_path: Path
    node_name: str
    ipfs_path: Path | None


@dataclass(frozen=True)
class DiscoveryProblem:
    """A folder that could not be searched, and why."""

    path: Path
    reason: str


def _ipfs_path_for(node_dir: Path) -> Path | None:
    for candidate in (node_dir / ".ipfs", node_dir.parent / ".ipfs"):
        if candidate.is_dir():
            return candidate
    return None


def discover(
    roots: Iterable[Path | str],
    *,
    pattern: str = DEFAULT_PATTERN,
    problems: list[DiscoveryProblem] | None = None,
) -> list[NodeDatabase]:
    """Find every ``<node>/<pattern>`` file below ``roots``, sorted by path.

    Symbolic links to folders are followed once (a loop is never walked twice); a node is named and
    keyed by its real path. Folders that cannot be read, and paths whose names are not valid
    UTF-8 (no store could record them), are appended to ``problems`` and skipped. A root that is
    itself a node folder counts. A ``<pattern>`` that exists but is no regular file (a link to a
    device, a FIFO, a folder, or nowhere) is listed under its own path, for the reader to refuse.
    """
    parts = Path(pattern).parts
    if not parts or Path(pattern).is_absolute() or ".." in parts:
        raise ValueError(f"pattern must be a relative path inside a node folder: {pattern!r}")
    found: dict[Path, NodeDatabase] = {}
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for node_dir in _walk(Path(root), seen, problems):
            db = node_dir.joinpath(*parts)
            try:
                is_file = db.is_file()
            except OSError:
                is_file = False
            if is_file:
                # named and keyed by real paths: the same node reached through a symbolic link
                # is the same node, under the same key, on every run
                real = Path(os.path.realpath(db))
            elif os.path.lexists(db):
                real = Path(os.path.realpath(db.parent)) / db.name
            else:
                continue
            if real in found:
                continue
            real_node = Path(os.path.realpath(node_dir))
            if not _utf8(real) or not _utf8(real_node):
                if problems is not None:
                    shown = str(real).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    problems.append(DiscoveryProblem(
                        Path(shown), "the path is not valid UTF-8; rename the folder to sync it"))
                continue
            found[real] = NodeDatabase(db_path=real, node_name=real_node.name,
                                       ipfs_path=_ipfs_path_for(real_node))
    return sorted(found.values(), key=lambda n: str(n.db_path))


def _utf8(path: Path) -> bool:
    """Whether the path's name decodes as UTF-8 (else it holds lone surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(
    root: Path, seen: set[tuple[int, int]], problems: list[DiscoveryProblem] | None
) -> Iterator[Path]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
        except OSError as exc:
            if problems is not None:
                problems.append(DiscoveryProblem(folder, exc.strerror or str(exc)))
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            continue
        seen.add(key)
        yield folder
        try:
            with os.scandir(folder) as entries:
                children = []
                for entry in entries:
                    # .ipfs repos hold hundreds of thousands of block files: never descend into them
                    if entry.name in (".ipfs", "blocks", "datastore", "keystore"):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=True):
                            children.append(Path(entry.path))
                    except OSError:
                        continue
        except OSError as exc:
            if problems is not None:
                problems.append(DiscoveryProblem(folder, exc.strerror or str(exc)))
            continue
        stack.extend(sorted(children, reverse=True))


def fingerprint(db_path: Path) -> tuple[str, datetime | None]:
    """A text that changes whenever the database or its write-ahead log changes, and the newest
    modification time of the two (UTC).

    A change that so far sits only in ``rubix.db-wal`` changes the fingerprint too.
    """
    parts: list[str] = []
    newest: float | None = None
    for suffix in ("", "-wal"):
        try:
            st = os.stat(f"{db_path}{suffix}")
        except FileNotFoundError:
            parts.append("-")
            continue
        if not stat.S_ISREG(st.st_mode):
            parts.append("?")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
    when = datetime.fromtimestamp(newest, tz=timezone.utc) if newest is not None else None
    return "|".join(parts), when
