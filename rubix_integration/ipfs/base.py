"""The contract every IPFS access backend fulfils.

A backend reads and writes UnixFS content by CID. Every backend returns the same bytes for the same
CID and raises the same classified errors from :mod:`rubix_integration.errors`
(``InvalidCIDError``, ``ContentNotFoundError``, ``IPFSTimeoutError``, ``IPFSUnavailableError``,
``CorruptBlockError``, ``NotAFileError``, ``ContentTooLargeError``,
``UnsupportedOperationError``). Errors of the underlying library or process are translated inside
the backend and chained with ``from exc``; nothing else escapes.

Backends are registered through the ``register_ipfs_backends`` hook. The Manager asks each
registered class to :meth:`IPFSBackend.detect` whether it can serve a given IPFS repo path, builds
the chosen one with an :class:`IPFSContext`, and closes it when done.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rubix_integration.errors import IPFSError, UnsupportedOperationError

if TYPE_CHECKING:
    from rubix_integration._settings import Settings

__all__ = [
    "AddResult",
    "AddedEntry",
    "DirEntry",
    "FieldsAsMapping",
    "Health",
    "IPFSBackend",
    "IPFSContext",
    "IPFSDetection",
]


@dataclass(frozen=True)
class IPFSContext:
    """What a backend is built from.

    ``ipfs_path`` is the IPFS repo of the node being served (a Rubix node's ``.ipfs``), or the
    machine's default repo; ``None`` when there is none. ``timeout`` is the default per-call
    limit in seconds. ``options`` carries backend-specific settings given by keyword to the Manager.
    """

    settings: Settings
    ipfs_path: Path | None = None
    timeout: float = 10.0
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class IPFSDetection:
    """Whether a backend can serve a context, and why (or why not), in one line."""

    available: bool
    reason: str


@dataclass(frozen=True)
class Health:
    """Result of :meth:`IPFSBackend.health`."""

    ok: bool
    detail: str


class FieldsAsMapping:
    """Read a frozen record's fields by key too: ``entry["name"]`` is ``entry.name``.

    For callers that treat results as dicts; ``keys()``, ``items()``, ``get()``, ``in`` and
    ``dict(record)`` work as on a mapping of the fields. Subclasses name the keys in ``_keys``.
    """

    _keys: ClassVar[tuple[str, ...]] = ()

    def keys(self) -> tuple[str, ...]:
        """The field names, in order."""
        return self._keys

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when there is no such field."""
        return getattr(self, key) if key in self._keys else default

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` for every field."""
        return [(k, getattr(self, k)) for k in self._keys]

    def __contains__(self, key: object) -> bool:
        return key in self._keys


@dataclass(frozen=True)
class DirEntry(FieldsAsMapping):
    """One link of a UnixFS directory (also readable as ``entry["name"]``, ``entry["cid"]``)."""

    _keys: ClassVar[tuple[str, ...]] = ("name", "cid", "size", "type")

    name: str
    cid: str
    size: int
    type: Literal["file", "directory", "other"]


@dataclass(frozen=True)
class AddedEntry(FieldsAsMapping):
    """One file or directory added by :meth:`IPFSBackend.add_directory`.

    ``path`` is relative to the added directory, with ``/`` separators; the root is ``""``.
    """

    _keys: ClassVar[tuple[str, ...]] = ("path", "cid", "size", "is_dir")

    path: str
    cid: str
    size: int
    is_dir: bool


class AddResult(str):
    """The root CID of an added tree, as text, with every entry in it (root included).

    It *is* the root CID (a :class:`str`), so it goes wherever a CID is expected
    (``list_directory(result)``); ``cid`` gives it as a plain string and ``entries`` lists what was
    added. Immutable, like the text it is.
    """

    entries: tuple[AddedEntry, ...]

    def __new__(cls, cid: str, entries: Iterable[AddedEntry] = ()) -> AddResult:
        self = super().__new__(cls, cid)
        object.__setattr__(self, "entries", tuple(entries))
        return self

    @property
    def cid(self) -> str:
        """The root CID as a plain string."""
        return str.__str__(self)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AddResult is immutable; cannot set {name!r}")

    def __getnewargs__(self) -> tuple[str, tuple[AddedEntry, ...]]:  # type: ignore[override]
        return (self.cid, self.entries)

    def __repr__(self) -> str:
        return f"AddResult(cid={self.cid!r}, entries=<{len(self.entries)}>)"


class IPFSBackend:
    """Base class of IPFS access backends.

    Subclasses set ``name`` (unique among registered backends), ``priority`` (lower is preferred by
    auto-detection) and ``read_only``, implement :meth:`detect` and the operations they support.
    Operations a backend cannot perform raise :class:`UnsupportedOperationError`.

    Every method that may block takes ``timeout`` (seconds, ``None`` = the context's default); a
    call never waits longer than that, even for a CID that exists nowhere. Instances are safe to use
    from several threads at once.
    """

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 100
    read_only: ClassVar[bool] = False

    def __init__(self, context: IPFSContext) -> None:
        self.context = context

    # --- detection -------------------------------------------------------------------------------

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        """Say whether this backend can serve ``context``, cheaply and without side effects."""
        raise NotImplementedError

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
        """Return a file's content (or the ``offset``/``length`` slice of it).

        Raises ``NotAFileError`` for a directory and ``ContentTooLargeError`` when the file is
        larger than ``max_size`` bytes.
        """
        return b"".join(
            self.iter_cat(cid, offset=offset, length=length, max_size=max_size, timeout=timeout)
        )

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Stream a file's content in chunks; same errors as :meth:`cat`."""
        raise UnsupportedOperationError(f"{self.name}: streaming read is not supported",
                                        cid=cid, backend=self.name)

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        """List a directory's links in their stored order."""
        raise UnsupportedOperationError(f"{self.name}: ls is not supported", cid=cid,
                                        backend=self.name)

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        """Write a file, or a directory tree, to ``dest`` and return ``dest``."""
        raise UnsupportedOperationError(f"{self.name}: get is not supported", cid=cid,
                                        backend=self.name)

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Whether the root block of ``cid`` is held locally (never fetched from the network)."""
        raise UnsupportedOperationError(f"{self.name}: has is not supported", cid=cid,
                                        backend=self.name)

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        """Return one raw block, hash-verified."""
        raise UnsupportedOperationError(f"{self.name}: block read is not supported", cid=cid,
                                        backend=self.name)

    # --- writing ---------------------------------------------------------------------------------

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        """Add ``data`` as one UnixFS file with kubo's default settings; return its CID."""
        raise UnsupportedOperationError(f"{self.name}: add is not supported", backend=self.name)

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        """Add the file at ``path``; return its CID (the same as ``ipfs add`` gives).

        By default the file is read whole and handed to :meth:`add_bytes`, so a backend that
        implements only that can add files too; backends that can stream override this. A file
        that cannot be read raises :class:`IPFSError` naming ``path``.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IPFSError(f"{self.name}: cannot add {path}: {exc.strerror or exc}",
                            backend=self.name, path=str(path)) from exc
        return self.add_bytes(data, pin=pin, timeout=timeout)

    def add_directory(
        self,
        path: Path,
        *,
        recursive: bool = True,
        pin: bool = True,
        timeout: float | None = None,
    ) -> AddResult:
        """Add a directory (its subdirectories too when ``recursive``); return root and entries."""
        raise UnsupportedOperationError(f"{self.name}: add is not supported", backend=self.name,
                                        path=str(path))

    def put_block(self, data: bytes, *, cid: str, timeout: float | None = None) -> None:
        """Store one raw block under ``cid`` (used to push locally added content to a node)."""
        raise UnsupportedOperationError(f"{self.name}: block write is not supported", cid=cid,
                                        backend=self.name)

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        """Pin ``cid`` recursively."""
        raise UnsupportedOperationError(f"{self.name}: pin is not supported", cid=cid,
                                        backend=self.name)

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        """Remove the recursive pin of ``cid``."""
        raise UnsupportedOperationError(f"{self.name}: unpin is not supported", cid=cid,
                                        backend=self.name)

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        """Check that the backend can serve now; never raises."""
        return Health(ok=True, detail="no check")

    def close(self) -> None:
        """Release connections, processes and files. Idempotent."""

    def __enter__(self) -> IPFSBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ipfs_path={self.context.ipfs_path}>"
