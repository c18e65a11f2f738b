"""The flatfs block store that kubo and js-ipfs keep under ``blocks/``.

One file per block, named by the RFC 4648 base32 (upper case, no padding) of the block's
multihash plus ``.data``, inside a shard folder chosen by the function recorded in
``blocks/SHARDING`` (kubo) or ``blocks/SHARDING.data`` (js-ipfs), normally
``/repo/flatfs/shard/v1/next-to-last/2``. CIDv0 and CIDv1 of one multihash share the file.
Identity-hash CIDs carry their block inline and are never stored.

Reading opens block files read-only and takes no lock. Every block read is hash-verified, and a
block file larger than :data:`MAX_BLOCK_SIZE` is refused from its size alone, before any read.
Writing (the embedded store only) goes through a temporary file in the shard folder and an atomic
rename, so concurrent writers and readers never see a partial block.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rubix_integration.codecs import CID, IDENTITY, b32_upper_encode, decode_multihash
from rubix_integration.codecs._bases import b32_lower_decode
from rubix_integration.codecs._cid import verify_block
from rubix_integration.errors import (
    ContentNotFoundError,
    CorruptBlockError,
    IPFSUnavailableError,
)

__all__ = ["DEFAULT_SHARD_FUNC", "MAX_BLOCK_SIZE", "SHARDING_FILES", "FlatFS", "read_shard_func",
           "shard_function"]

DEFAULT_SHARD_FUNC = "/repo/flatfs/shard/v1/next-to-last/2"
SHARDING_FILES = ("SHARDING", "SHARDING.data")
_SHARD_PREFIX = "/repo/flatfs/shard/v1/"

_README = """This is a repository of IPLD objects. Each object is in a single file named
<base32 of its multihash>.data, inside a folder chosen by the shard function in SHARDING.
"""


def shard_function(spec: str) -> Callable[[str], str]:
    """The folder-name function for a flatfs shard spec (``prefix``, ``suffix``,
    ``next-to-last``); ``ValueError`` for anything else."""
    spec = spec.strip()
    if not spec.startswith(_SHARD_PREFIX):
        raise ValueError(f"unknown flatfs shard function {spec!r}")
    kind, _, count = spec[len(_SHARD_PREFIX) :].partition("/")
    try:
        n = int(count)
    except ValueError:
        raise ValueError(f"bad flatfs shard length in {spec!r}") from None
    if not 0 < n <= 32:
        raise ValueError(f"bad flatfs shard length in {spec!r}")
    pad = "_" * n
    if kind == "prefix":
        return lambda key: (key + pad)[:n]
    if kind == "suffix":
        return lambda key: (pad + key)[-n:]
    if kind == "next-to-last":
        if n == 2:
            # the only function in common use; a slice is all it takes
            return lambda key: key[-3:-1] if len(key) >= 3 else ("__" + key)[-3:-1]
        return lambda key: (pad + key)[-n - 1 : -1]
    raise ValueError(f"unknown flatfs shard function {spec!r}")


def read_shard_func(blocks: Path) -> str | None:
    """The shard spec recorded in ``blocks``, or ``None`` when there is no SHARDING file."""
    for name in SHARDING_FILES:
        try:
            return (blocks / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise IPFSUnavailableError(f"cannot read {blocks / name}: {exc}",
                                       path=str(blocks)) from exc
    return None


class FlatFS:
    """Blocks in a flatfs folder. Read-only unless built with :meth:`create`."""

    def __init__(self, root: Path, shard_func: str, *, backend: str = "",
                 writable: bool = False) -> None:
        self.root = root
        self.shard_func = shard_func
        self.backend = backend
        self.writable = writable
        try:
            self._shard = shard_function(shard_func)
        except ValueError as exc:
            raise IPFSUnavailableError(f"{root}: {exc}", backend=backend,
                                       path=str(root)) from exc
        self._prefix = str(root) + os.sep

    @classmethod
    def open(cls, root: Path, *, backend: str = "") -> FlatFS:
        """Open an existing flatfs folder read-only (``IPFSUnavailableError`` if not one)."""
        if not root.is_dir():
            raise IPFSUnavailableError(f"{root} is not a directory", backend=backend,
                                       path=str(root))
        spec = read_shard_func(root)
        if spec is None:
            raise IPFSUnavailableError(f"{root} has no SHARDING file", backend=backend,
                                       path=str(root))
        return cls(root, spec, backend=backend)

    @classmethod
    def create(cls, root: Path, *, backend: str = "",
               shard_func: str = DEFAULT_SHARD_FUNC) -> FlatFS:
        """Open ``root`` for writing, creating the folder and its SHARDING file if needed."""
        try:
            root.mkdir(parents=True, exist_ok=True)
            existing = read_shard_func(root)
            if existing is None:
                _atomic_write(root, "SHARDING", (shard_func + "\n").encode())
                _atomic_write(root, "_README", _README.encode())
                existing = shard_func
        except OSError as exc:
            raise IPFSUnavailableError(f"cannot create the block store at {root}: {exc}",
                                       backend=backend, path=str(root)) from exc
        return cls(root, existing, backend=backend, writable=True)

    # --- paths -----------------------------------------------------------------------------------

    def key(self, cid: CID) -> str:
        """The block's flatfs key: base32 of its multihash."""
        return b32_upper_encode(cid.multihash)

    def path(self, cid: CID) -> str:
        """The block file's path (as text: the hot path avoids ``pathlib``)."""
        key = b32_upper_encode(cid.multihash)
        return f"{self._prefix}{self._shard(key)}{os.sep}{key}.data"

    # --- reading ---------------------------------------------------------------------------------

    def get(self, cid: CID) -> bytes:
        """The verified block bytes; ``ContentNotFoundError`` when absent, ``CorruptBlockError``
        when the file does not hash to ``cid``."""
        mh = cid.multihash
        if mh[0] == IDENTITY:
            return _identity_data(cid, self.backend)
        path = self.path(cid)
        try:
            data = _read_file(path)
        except _TooLarge as exc:
            raise CorruptBlockError(
                f"block file {path} holds {exc.size} bytes, over the {MAX_BLOCK_SIZE}-byte limit "
                f"of a block: it cannot be {cid}", cid=str(cid), backend=self.backend,
                path=path) from None
        except FileNotFoundError:
            raise ContentNotFoundError(f"block {cid} is not in {self.root}", cid=str(cid),
                                       backend=self.backend, path=path) from None
        except OSError as exc:
            raise IPFSUnavailableError(f"cannot read block {cid} at {path}: {exc}",
                                       cid=str(cid), backend=self.backend, path=path) from exc
        try:
            verify_block(cid, data)
        except CorruptBlockError:
            raise CorruptBlockError(
                f"block file {path} does not hash to {cid} ({len(data)} bytes: truncated or "
                "altered)", cid=str(cid), backend=self.backend, path=path) from None
        return data

    def has(self, cid: CID) -> bool:
        """Whether the block file exists (not verified)."""
        if cid.multihash[0] == IDENTITY:
            return True
        return os.path.isfile(self.path(cid))

    def iter_cids(self) -> Iterator[CID]:
        """Every stored block as a CIDv1 ``raw`` of its multihash (flatfs keeps no codec).

        Blocks whose file name does not decode are skipped.
        """
        try:
            shards = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError as exc:
            raise IPFSUnavailableError(f"cannot list {self.root}: {exc}", backend=self.backend,
                                       path=str(self.root)) from exc
        for shard in shards:
            if not shard.is_dir():
                continue
            for entry in sorted(os.scandir(shard.path), key=lambda e: e.name):
                name = entry.name
                if not name.endswith(".data") or name.startswith("."):
                    continue
                try:
                    mh = b32_lower_decode(name[:-5])
                    decode_multihash(mh)
                except ValueError:
                    continue
                yield CID(1, 0x55, mh)

    # --- writing ---------------------------------------------------------------------------------

    def put(self, cid: CID, data: bytes) -> bool:
        """Store a block after checking its hash; return ``False`` when it was already there."""
        verify_block(cid, data)
        return self.put_trusted(cid, data)

    def put_trusted(self, cid: CID, data: bytes) -> bool:
        """Store a block the caller has just hashed itself (the importer): no second hash."""
        if not self.writable:
            raise IPFSUnavailableError(f"{self.root} is opened read-only", cid=str(cid),
                                       backend=self.backend, path=str(self.root))
        if cid.multihash[0] == IDENTITY:
            return False
        path = self.path(cid)
        if os.path.exists(path):
            return False
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
            _atomic_write(Path(folder), os.path.basename(path), data)
        except OSError as exc:
            raise IPFSUnavailableError(f"cannot write block {cid} to {path}: {exc}",
                                       cid=str(cid), backend=self.backend, path=path) from exc
        return True


# kubo refuses blocks over 2 MiB (its bitswap and `block put` limit) and writes at most 1 MiB;
# twice the larger leaves room for any other writer while a hostile file (say a 16 GiB sparse
# one named as a token's block) is refused without being read
MAX_BLOCK_SIZE = 4 * 2**20

_FIRST_READ = 1 << 16
_O_RDONLY = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(size)


def _read_file(path: str) -> bytes:
    # os.open/os.read skip the io module's object layers: a third faster on small blocks, which
    # is what a token sync reads by the thousand
    fd = os.open(path, _O_RDONLY)
    try:
        data = os.read(fd, _FIRST_READ)
        # a short read of a regular file means its end; were it not, the hash check would say so
        if len(data) < _FIRST_READ:
            return data
        size = os.fstat(fd).st_size
        if size > MAX_BLOCK_SIZE:
            raise _TooLarge(size)
        parts = [data]
        total = len(data)
        while more := os.read(fd, 1 << 20):
            total += len(more)
            if total > MAX_BLOCK_SIZE:  # the file grew after fstat
                raise _TooLarge(total)
            parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)


def _identity_data(cid: CID, backend: str) -> bytes:
    try:
        _code, digest = decode_multihash(cid.multihash)
    except ValueError as exc:
        raise CorruptBlockError(f"{cid}: malformed identity multihash: {exc}", cid=str(cid),
                                backend=backend) from None
    return digest


def _atomic_write(folder: Path, name: str, data: bytes) -> None:
    # the temporary name has no ".data" suffix, so a reader or a listing never picks it up
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".put-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes the file private; blocks are as readable as kubo's
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
