"""The ``local`` backend: an embedded content store under the user data dir.

It is the fallback when no IPFS node is reachable, and a staging area: content added here gets the
very CIDs kubo's ``ipfs add`` gives by default, and :meth:`LocalBackend.push` later sends the blocks
to a real node.

Layout of ``<data_dir>/ipfs`` (created on the first write):

- ``blocks/``: a flatfs folder exactly like kubo's (``SHARDING``, ``next-to-last/2`` shards,
  ``<base32 multihash>.data`` files), so the ``repo`` backend can read it too;
- ``datastore_spec``: names that flatfs mount, as in a kubo repo;
- ``pins.sqlite``: the pin list. SQLite rather than a text file because several processes may
  pin at once, and SQLite's locking makes each change atomic without a lock file of our own.

Blocks are written to a temporary file and renamed into place, so concurrent writers (threads or
processes) never expose a partial block.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rubix_integration.codecs import (
    CID,
    DAG_PB,
    RAW,
    ImportedNode,
    decode_pbnode,
    decode_unixfs,
    import_bytes,
    import_directory,
    import_file,
    import_symlink,
    parse_cid,
)
from rubix_integration.errors import (
    ContentNotFoundError,
    CorruptBlockError,
    IPFSError,
    IPFSUnavailableError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs._dag import DagBackend, DagReader
from rubix_integration.ipfs._flatfs import DEFAULT_SHARD_FUNC, FlatFS
from rubix_integration.ipfs.base import (
    AddedEntry,
    AddResult,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

__all__ = ["LocalBackend"]

_DATASTORE_SPEC = {
    "mounts": [
        {"mountpoint": "/blocks", "path": "blocks", "shardFunc": DEFAULT_SHARD_FUNC,
         "type": "flatfs"},
    ],
    "type": "mount",
}


def store_root(context: IPFSContext) -> Path:
    """Where the embedded store of ``context`` lives."""
    explicit = context.options.get("local_path")
    if explicit:
        return Path(str(explicit))
    return Path(context.settings.data_dir) / "ipfs"


class LocalBackend(DagBackend):
    """The embedded content store (see the module docstring for its layout).

    Options (``IPFSContext.options``): ``local_path`` puts the store elsewhere; ``add_hidden``
    includes dot-files in :meth:`add_directory` (``ipfs add -r`` leaves them out by default).
    """

    name = "local"
    priority = 90
    read_only = False

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        self.root = store_root(context)
        self._blocks_dir = self.root / "blocks"
        self._store: FlatFS | None = None
        self._lock = threading.Lock()
        self._dag = DagReader(self._get_block, self.name)
        self._add_hidden = bool(context.options.get("add_hidden", False))
        self._pin_lock = threading.Lock()
        self._pin_conn: sqlite3.Connection | None = None

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        return IPFSDetection(True, f"embedded content store at {store_root(context)}")

    # --- the block store -------------------------------------------------------------------------

    def _open(self, create: bool) -> FlatFS | None:
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is None:
                if create:
                    self._store = FlatFS.create(self._blocks_dir, backend=self.name)
                    self._write_spec()
                elif self._blocks_dir.is_dir():
                    self._store = FlatFS.create(self._blocks_dir, backend=self.name)
            return self._store

    def _write_spec(self) -> None:
        spec = self.root / "datastore_spec"
        if spec.exists():
            return
        tmp = self.root / f".datastore_spec.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_text(json.dumps(_DATASTORE_SPEC), encoding="utf-8")
            os.replace(tmp, spec)
        except OSError as exc:
            raise IPFSUnavailableError(f"cannot write {spec}: {exc}", backend=self.name,
                                       path=str(spec)) from exc

    def _get_block(self, cid: CID) -> bytes:
        store = self._open(create=False)
        if store is None:
            raise ContentNotFoundError(f"block {cid} is not in the embedded store (empty)",
                                       cid=str(cid), backend=self.name, path=str(self.root))
        return store.get(cid)

    def _writable(self) -> FlatFS:
        store = self._open(create=True)
        assert store is not None
        return store

    def _put_new(self, store: FlatFS, cid: CID, block: bytes) -> None:
        # the importer just hashed the block; hashing it again would halve the add rate
        store.put_trusted(cid, block)

    # --- reading ---------------------------------------------------------------------------------

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        parsed = parse_cid(cid)
        store = self._open(create=False)
        if store is None:
            return parsed.multihash[0] == 0
        return store.has(parsed)

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        return self._get_block(parse_cid(cid))

    # --- writing ---------------------------------------------------------------------------------

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        store = self._writable()
        root = import_bytes(bytes(data), lambda c, b: self._put_new(store, c, b))
        cid = str(root.cid)
        if pin:
            self._pin_add(cid)
        return cid

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        store = self._writable()
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                root = import_file(fh, lambda c, b: self._put_new(store, c, b))
        except OSError as exc:
            raise IPFSError(f"cannot add {path}: {exc}", backend=self.name,
                            path=str(path)) from exc
        cid = str(root.cid)
        if pin:
            self._pin_add(cid)
        return cid

    def add_directory(self, path: Path, *, recursive: bool = True, pin: bool = True,
                      timeout: float | None = None) -> AddResult:
        store = self._writable()
        path = Path(path)
        if not path.is_dir():
            raise IPFSError(f"cannot add {path}: not a directory", backend=self.name,
                            path=str(path))
        entries: list[AddedEntry] = []

        def sink(c: CID, b: bytes) -> None:
            self._put_new(store, c, b)

        def walk(folder: Path, rel: str) -> ImportedNode:
            children: list[tuple[str, ImportedNode]] = []
            try:
                items = sorted(os.scandir(folder), key=lambda e: e.name.encode("utf-8",
                                                                              "surrogateescape"))
            except OSError as exc:
                raise IPFSError(f"cannot list {folder}: {exc}", backend=self.name,
                                path=str(folder)) from exc
            for item in items:
                if item.name.startswith(".") and not self._add_hidden:
                    continue
                child_rel = f"{rel}/{item.name}" if rel else item.name
                try:
                    if item.is_symlink():
                        node = import_symlink(os.readlink(item.path), sink)
                        entries.append(AddedEntry(child_rel, str(node.cid), node.tsize, False))
                    elif item.is_dir():
                        if not recursive:
                            continue
                        node = walk(Path(item.path), child_rel)
                    elif item.is_file():
                        with open(item.path, "rb") as fh:
                            node = import_file(fh, sink)
                        entries.append(AddedEntry(child_rel, str(node.cid), node.tsize, False))
                    else:
                        continue  # sockets, fifos and devices have no UnixFS form
                except OSError as exc:
                    raise IPFSError(f"cannot add {item.path}: {exc}", backend=self.name,
                                    path=item.path) from exc
                children.append((item.name, node))
            node = import_directory(children, sink)
            entries.append(AddedEntry(rel, str(node.cid), node.tsize, True))
            return node

        root = walk(path, "")
        cid = str(root.cid)
        if pin:
            self._pin_add(cid)
        return AddResult(cid=cid, entries=tuple(entries))

    def put_block(self, data: bytes, *, cid: str, timeout: float | None = None) -> None:
        parsed = parse_cid(cid)
        self._writable().put(parsed, bytes(data))

    # --- pins ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The pin list, one connection per backend, used under a lock (commits on success)."""
        with self._pin_lock:
            if self._pin_conn is None:
                self._open(create=True)
                self._pin_conn = _open_pin_db(self.root / "pins.sqlite")
            with self._pin_conn:
                yield self._pin_conn

    def _pin_add(self, cid: str) -> None:
        try:
            with self._db() as conn:
                conn.execute("INSERT OR IGNORE INTO pins (cid, pinned_at) VALUES (?, ?)",
                              (cid, time.time()))
        except sqlite3.Error as exc:
            raise IPFSUnavailableError(f"cannot write the pin list: {exc}", cid=cid,
                                       backend=self.name, path=str(self.root)) from exc

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        """Pin ``cid`` after checking that every block of its DAG is here."""
        parsed = parse_cid(cid)
        for _ in self._dag.iter_blocks(parsed, timeout=timeout):
            pass
        self._pin_add(str(parsed))

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        """Remove the pin of ``cid``; unpinning what is not pinned does nothing."""
        parsed = parse_cid(cid)
        if not (self.root / "pins.sqlite").exists():
            return
        try:
            with self._db() as conn:
                conn.execute("DELETE FROM pins WHERE cid IN (?, ?)",
                              (str(parsed), str(parsed.to_v1())))
        except sqlite3.Error as exc:
            raise IPFSUnavailableError(f"cannot write the pin list: {exc}", cid=cid,
                                       backend=self.name, path=str(self.root)) from exc

    def pins(self) -> list[str]:
        """The pinned CIDs, oldest first."""
        if not (self.root / "pins.sqlite").exists():
            return []
        try:
            with self._db() as conn:
                rows = conn.execute("SELECT cid FROM pins ORDER BY pinned_at, cid").fetchall()
        except sqlite3.Error as exc:
            raise IPFSUnavailableError(f"cannot read the pin list: {exc}", backend=self.name,
                                       path=str(self.root)) from exc
        return [str(r[0]) for r in rows]

    # --- pushing to a node -----------------------------------------------------------------------

    def push(self, target: IPFSBackend, cids: list[str] | None = None, *,
             timeout: float | None = None) -> int:
        """Send blocks to ``target`` with its ``put_block``; return how many were sent.

        With ``cids``, the whole DAG of each root is sent (``ContentNotFoundError`` when a block is
        missing here); without, every block of the store. A read-only target raises
        :class:`UnsupportedOperationError` before anything is sent.
        """
        if target.read_only:
            raise UnsupportedOperationError(
                f"cannot push to the read-only {target.name!r} backend", backend=target.name)
        count = 0
        if cids is None:
            store = self._open(create=False)
            if store is None:
                return 0
            for stored in store.iter_cids():
                block = store.get(stored)
                target.put_block(block, cid=str(_likely_cid(stored, block)), timeout=timeout)
                count += 1
            return count
        seen: set[bytes] = set()
        for root in cids:
            for cid, block in self._dag.iter_blocks(root, timeout=timeout, seen=seen):
                target.put_block(block, cid=str(cid), timeout=timeout)
                count += 1
        return count

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._pin_lock:
            if self._pin_conn is not None:
                self._pin_conn.close()
                self._pin_conn = None

    def health(self) -> Health:
        if self._blocks_dir.is_dir():
            return Health(os.access(self._blocks_dir, os.R_OK | os.W_OK),
                          f"embedded content store at {self.root}")
        return Health(True, f"embedded content store at {self.root} (empty, created on first add)")


_PIN_DB_TIMEOUT = 30.0
# one opener at a time per pin database in this process: switching a fresh database to WAL needs
# it alone, and SQLite answers "database is locked" at once, without waiting for its busy
# timeout, when two connections race to do it
_PIN_DB_LOCKS: dict[str, threading.Lock] = {}
_PIN_DB_LOCKS_LOCK = threading.Lock()


def _open_pin_db(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the pin list at ``path`` in WAL mode."""
    key = os.path.abspath(path)
    with _PIN_DB_LOCKS_LOCK:
        lock = _PIN_DB_LOCKS.setdefault(key, threading.Lock())
    with lock:
        conn = sqlite3.connect(path, timeout=_PIN_DB_TIMEOUT, check_same_thread=False)
        try:
            # the busy timeout is in force before the first statement that needs a lock
            conn.execute(f"PRAGMA busy_timeout={int(_PIN_DB_TIMEOUT * 1000)}")
            deadline = time.monotonic() + _PIN_DB_TIMEOUT
            # WAL with NORMAL sync: a pin survives a process crash without an fsync per add
            while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError as exc:
                    # another process may be switching it too; its busy handler is not consulted
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS pins (cid TEXT PRIMARY KEY, pinned_at REAL)")
        except BaseException:
            conn.close()
            raise
        return conn


def _likely_cid(stored: CID, block: bytes) -> CID:
    """flatfs keeps no codec: call a block dag-pb when it decodes as UnixFS, raw otherwise."""
    if stored.multihash[:2] == b"\x12\x20":
        try:
            pb = decode_pbnode(block)
            if pb.data is not None:
                decode_unixfs(pb.data)
                return CID(0, DAG_PB, stored.multihash)
        except CorruptBlockError:
            pass
    return CID(1, RAW, stored.multihash)
