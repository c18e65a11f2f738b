"""Every error the package raises on purpose.

All of them derive from :class:`RubixError` and carry the context that explains them (the
environment variable, the plugin, the backend, the CID, the path). Errors of third-party libraries
are translated at the backend boundary and chained with ``raise ... from exc``.

::

    RubixError
    ├── ConfigError                  a bad setting: names the variable/key and the allowed values
    ├── PluginError                  a plugin failed to import, register or run: names the plugin
    │   └── DuplicateBackendError    two plugins registered one backend name
    ├── StoreError                   names the store URL (password masked)
    │   ├── UnknownStoreError        no store plugin handles the URL scheme
    │   ├── StoreUnavailableError    the store cannot be reached or created
    │   └── StoreMissingDependency   the driver for the store is not installed
    ├── IPFSError                    names the backend and the CID
    │   ├── InvalidCIDError          malformed CID text, or a codec/hash this package cannot read
    │   ├── ContentNotFoundError     no backend has the block
    │   ├── IPFSTimeoutError         the call did not finish within its timeout
    │   ├── IPFSUnavailableError     the backend cannot serve at all (daemon down, repo unreadable)
    │   ├── CorruptBlockError        block bytes do not match their hash, or do not decode
    │   ├── NotAFileError            a directory (or other non-file) where file content was asked
    │   ├── ContentTooLargeError     content exceeds the caller's size limit
    │   ├── DAGTooDeepError          a DAG nests deeper than the walkers' depth bound
    │   ├── UnsafePathError          get refused an entry: a repeated name, a link or other
    │   │                            entry in its way, or a name the filesystem refuses
    │   └── UnsupportedOperationError the backend cannot do this (e.g. pin on a read-only repo)
    ├── NodeDatabaseError            a node's rubix.db cannot be synced: names the path and a kind
    ├── InvalidDataError             data has no DAG-JSON form (``path`` says where)
    │   └── PayloadTooLargeError     the encoded data exceeds the documented limit
    ├── InvalidFilterError           a provenance query filter or bound cannot be compared
    ├── RecordNotFoundError          no provenance record has this CID
    ├── ImportFailedError            an import cannot run: names the source (and table)
    │   ├── ImportSourceError        the source cannot be read (not SQLite, bad JSON, a service)
    │   └── ImportSchemaError        a source column cannot be mapped onto the target table
    ├── ClockDriftError              a received clock stamp runs too far ahead (also ValueError)
    ├── ReplicationError             replication between nodes: names the peer and a ``kind``
    │   ├── PeerUnavailableError     a peer did not answer (after retries) or answered an error
    │   ├── ReplicationAuthError     a request not authenticated, or not allowed for its role
    │   ├── ChangeRejectedError      an incoming change refused (unknown table or column, bad
    │   │                            value, payload too large)
    │   └── ResyncRequiredError      the peer collected tombstones past our checkpoint
    ├── TaskError                    a workflow task: names the task
    │   ├── TaskNotFoundError        no task has this id
    │   ├── TaskConflictError        a submit reuses an id with different content
    │   ├── TaskStateError           the task's state does not allow the operation
    │   └── LeaseLostError           the caller does not (or no longer) hold the task's lease
    └── PinStateError                a pin state backend: names the backend and the CID
        ├── PinNotFoundError         the CID is not part of the pinset
        ├── InvalidPinError          a pin (or an export line) that cannot be stored: names the
        │                            field, and the line number when read from a file
        └── PinStateUnavailableError the backend cannot be reached (names hosts and timeout)

Each IPFS error has a short ``kind`` (``"not_found"``, ``"timeout"``, ...) used when an error is
stored as data (for example a token's ``ipfs_error`` column).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "ChangeRejectedError",
    "ClockDriftError",
    "ConfigError",
    "ContentNotFoundError",
    "ContentTooLargeError",
    "CorruptBlockError",
    "DAGTooDeepError",
    "DuplicateBackendError",
    "IPFSError",
    "IPFSTimeoutError",
    "IPFSUnavailableError",
    "ImportFailedError",
    "ImportSchemaError",
    "ImportSourceError",
    "InvalidCIDError",
    "InvalidDataError",
    "InvalidFilterError",
    "InvalidPinError",
    "LeaseLostError",
    "NodeDatabaseError",
    "NotAFileError",
    "PayloadTooLargeError",
    "PinNotFoundError",
    "PinStateError",
    "PinStateUnavailableError",
    "PluginError",
    "RecordNotFoundError",
    "ReplicationAuthError",
    "ReplicationError",
    "ResyncRequiredError",
    "RubixError",
    "StoreError",
    "StoreMissingDependency",
    "StoreUnavailableError",
    "TaskConflictError",
    "TaskError",
    "TaskNotFoundError",
    "TaskStateError",
    "UnknownStoreError",
    "UnsafePathError",
    "UnsupportedOperationError",
]


class RubixError(Exception):
    """Base of every error raised on purpose by rubix_integration."""


class ConfigError(RubixError, ValueError):
    """A setting has a value that cannot be used.

    ``source`` says where it came from: ``"environment"``, ``"keyword"``, ``"config file"``.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        value: object = None,
        allowed: Iterable[str] | None = None,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.value = value
        self.allowed = tuple(allowed) if allowed is not None else None
        self.source = source
        super().__init__(message)


class PluginError(RubixError):
    """A plugin failed to import, register or run. ``plugin`` is its name."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(message)


class DuplicateBackendError(PluginError):
    """Two plugins registered a backend under the same name for the same role."""

    def __init__(self, message: str, *, plugin: str | None = None, name: str, role: str) -> None:
        self.name = name
        self.role = role
        super().__init__(message, plugin=plugin)


class StoreError(RubixError):
    """A store could not be opened or used. ``url`` has its password masked."""

    def __init__(self, message: str, *, url: str | None = None, backend: str | None = None) -> None:
        self.url = url
        self.backend = backend
        super().__init__(message)


class UnknownStoreError(StoreError):
    """No registered store handles the URL's scheme."""


class StoreUnavailableError(StoreError):
    """The store exists in principle but cannot be reached, created or written."""


class StoreMissingDependency(StoreError, ImportError):
    """The driver a store needs is not installed; the message says what to install."""


class IPFSError(RubixError):
    """Base of the IPFS access errors. Every backend raises the same classes."""

    kind: ClassVar[str] = "ipfs_error"

    def __init__(
        self,
        message: str,
        *,
        cid: str | None = None,
        backend: str | None = None,
        path: str | None = None,
    ) -> None:
        self.cid = cid
        self.backend = backend
        self.path = path
        super().__init__(message)


class InvalidCIDError(IPFSError, ValueError):
    """The text is not a CID, or names a codec or hash function this package cannot read."""

    kind = "invalid_cid"


class ContentNotFoundError(IPFSError, LookupError):
    """The backend does not have the block (or one of the blocks) of the content."""

    kind = "not_found"


class IPFSTimeoutError(IPFSError, TimeoutError):
    """The call did not finish in time."""

    kind = "timeout"


class IPFSUnavailableError(IPFSError):
    """The backend cannot serve at all: daemon down, binary missing, repo unreadable."""

    kind = "unavailable"


class CorruptBlockError(IPFSError):
    """A block's bytes do not match its hash, or do not decode as their codec says."""

    kind = "corrupt"


class NotAFileError(IPFSError):
    """The CID names a directory (or other non-file node) where file content was asked."""

    kind = "not_a_file"


class ContentTooLargeError(IPFSError):
    """The content is larger than the limit the caller set."""

    kind = "too_large"


class DAGTooDeepError(IPFSError):
    """A directory, file or HAMT shard nests deeper than the readers walk (``limit`` levels)."""

    kind = "too_deep"

    def __init__(self, message: str, *, limit: int, cid: str | None = None,
                 backend: str | None = None, path: str | None = None) -> None:
        self.limit = limit
        super().__init__(message, cid=cid, backend=backend, path=path)


class UnsafePathError(IPFSError):
    """``get`` refused to write an entry: its name repeats in its directory, a link or an entry
    of another kind is in its way, or the filesystem refuses the name. ``path`` names the entry.

    Nothing is ever written through a link; what was written before the refusal stays.
    """

    kind = "unsafe_path"


class UnsupportedOperationError(IPFSError):
    """The backend cannot perform this operation (for example, writing to a read-only repo)."""

    kind = "unsupported"


class NodeDatabaseError(RubixError):
    """A node's ``rubix.db`` cannot be read.

    ``kind`` is one of ``"not_sqlite"``, ``"corrupt"``, ``"no_tokens_table"``, ``"cannot_open"``,
    ``"busy"`` (still changing after every retry), ``"not_a_file"`` (not a regular file),
    ``"unsafe_file"`` (a ``-wal``/``-journal`` file that is a link or not a regular file),
    ``"interrupted"`` (stopped on request) or ``"timeout"`` (the sync's time limit for one
    database passed); ``db_path`` names the file.
    """

    def __init__(self, message: str, *, db_path: str, kind: str) -> None:
        self.db_path = db_path
        self.kind = kind
        super().__init__(message)


class InvalidDataError(RubixError, ValueError):
    """Data cannot be recorded: it is not representable as DAG-JSON. Nothing was written."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class PayloadTooLargeError(InvalidDataError):
    """The encoded data is larger than the limit (``size`` and ``limit`` in bytes)."""

    def __init__(self, message: str, *, size: int, limit: int, path: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, path=path)


class InvalidFilterError(RubixError, ValueError):
    """A query filter, time bound, limit or offset cannot be used; nothing was queried.

    ``filter`` names it (``"data.model.name"``, ``"since"``, ``"limit"``, ...).
    """

    def __init__(self, message: str, *, filter: str | None = None) -> None:
        self.filter = filter
        super().__init__(message)


class RecordNotFoundError(RubixError, LookupError):
    """No provenance record has the CID asked for."""

    def __init__(self, message: str, *, cid: str | None = None) -> None:
        self.cid = cid
        super().__init__(message)

class TaskError(RubixError):
    """Something about one task went wrong; ``task_id`` names it."""

    def __init__(self, message: str, *, task_id: str | None = None,
                 state: str | None = None) -> None:
        self.task_id = task_id
        self.state = state
        super().__init__(message)


class TaskNotFoundError(TaskError, LookupError):
    """No task has this id."""


class TaskConflictError(TaskError):
    """A task with this id exists with a different type, data, priority or tags."""


class TaskStateError(TaskError):
    """The task is in a state that does not allow the operation (``state`` says which)."""


class LeaseLostError(TaskError):
    """The caller acted on a running task whose lease it does not (or no longer) hold: no
    token, another claim's token, or another worker's; nothing was changed."""


class PinStateError(RubixError):
    """A pin state operation failed; ``backend`` names the pin state backend, ``cid`` the pin."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, backend: str | None = None,
                 cid: str | None = None) -> None:
        self.backend = backend
        self.cid = cid
        super().__init__(message)


class PinNotFoundError(PinStateError, LookupError):
    """The CID is not part of the pinset (ipfs-cluster's ``state.ErrNotFound``)."""

    kind: ClassVar[str] = "not_found"


class InvalidPinError(PinStateError, ValueError):
    """A pin that cannot be stored: a malformed CID, an unknown type, rmin > rmax, a bad field.
    ``line`` is the line number when the pin was read from an export file."""

    kind: ClassVar[str] = "invalid"

    def __init__(self, message: str, *, backend: str | None = None, cid: str | None = None,
                 line: int | None = None) -> None:
        self.line = line
        super().__init__(message, backend=backend, cid=cid)


class PinStateUnavailableError(PinStateError):
    """The pin state backend cannot be reached; the message names its hosts and timeout."""

    kind: ClassVar[str] = "unavailable"


class ClockDriftError(RubixError, ValueError):
    """A received stamp runs further ahead of the local clock than the allowed drift."""

    def __init__(self, message: str, *, received: int, local_ms: int, max_drift_ms: int) -> None:
        super().__init__(message)
        self.received = received
        self.local_ms = local_ms
        self.max_drift_ms = max_drift_ms


class ReplicationError(RubixError):
    """Replication between nodes failed; ``peer`` names the peer (its id or URL), ``kind`` says
    how (``"unavailable"``, ``"auth"``, ``"rejected"``, ``"resync"``)."""

    kind: ClassVar[str] = "replication"

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        self.peer = peer
        super().__init__(message)


class PeerUnavailableError(ReplicationError):
    """A peer did not answer within the timeout after every retry, or answered an error."""

    kind = "unavailable"


class ReplicationAuthError(ReplicationError):
    """A request carried no valid credentials, or its peer's role does not allow it."""

    kind = "auth"


class ChangeRejectedError(ReplicationError, ValueError):
    """An incoming change was refused: unknown table or column, a value of the wrong type, or a
    payload over the size limit. ``table`` names the table when known."""

    kind = "rejected"

    def __init__(self, message: str, *, peer: str | None = None,
                 table: str | None = None) -> None:
        self.table = table
        super().__init__(message, peer=peer)


class ResyncRequiredError(ReplicationError):
    """The peer collected tombstones newer than our checkpoint: pull everything again."""

    kind = "resync"


class ImportFailedError(RubixError):
    """An import cannot run; ``source`` names the file or service, ``table`` the table."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, source: str | None = None, table: str | None = None,
                 kind: str | None = None) -> None:
        self.source = source
        self.table = table
        if kind is not None:
            self.kind = kind  # type: ignore[misc]
        super().__init__(message)


class ImportSourceError(ImportFailedError):
    """The source cannot be read: not a SQLite file, malformed JSON, a service that fails."""

    kind = "source"


class ImportSchemaError(ImportFailedError, ValueError):
    """A source column cannot be mapped onto the existing target table."""

    kind = "schema"
