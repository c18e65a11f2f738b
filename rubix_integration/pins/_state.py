"""The pin state contract (ipfs-cluster's ``state.State``) and its batching wrapper.

A backend subclasses :class:`PinStateBackend`, sets ``name`` and ``schemes`` and implements the
underscored methods; the public methods around them validate, time, count and log every
operation, so every backend reports the same metrics and log lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, ClassVar

from rubix_integration.errors import InvalidPinError, PinNotFoundError, PinStateError
from rubix_integration.pins._pin import Pin, _is_canonical

__all__ = ["BatchingState", "PinStateBackend", "StateSummary"]

log = logging.getLogger("rubix_integration.pins")

#: The first line of :meth:`PinStateBackend.marshal`'s output.
MARSHAL_HEADER = {"format": "rubix-integration-pinstate", "version": 1}
#: The message of :class:`PinNotFoundError`, as ipfs-cluster words ``state.ErrNotFound``.
NOT_FOUND = "pin is not part of the pinset"


@dataclass(frozen=True)
class StateSummary:
    """A pinset's number of pins and an order-independent digest of their export lines (equal
    states give equal summaries on every backend)."""

    count: int
    checksum: str


class PinStateBackend:
    """A pinset: ipfs-cluster's ``State`` (``list``, ``has``, ``get``, ``add``, ``rm``,
    ``marshal``, ``unmarshal``, ``migrate``) and ``BatchingState`` (:meth:`batch`).

    The contract (``rubix_integration.testing.PinStateContract`` checks it):

    - ``list()`` yields every pin, streaming (never the whole set in memory), in a stable order
      of the backend's choosing; ``list(after=cid)`` resumes after a pin it yielded.
    - ``get`` of a missing CID raises :class:`PinNotFoundError` ("pin is not part of the
      pinset"); ``has`` answers ``False``; ``rm`` of a missing CID does nothing.
    - ``add`` validates (:meth:`Pin.validated`) and replaces any stored pin of that CID.
    - ``marshal``/``unmarshal`` dump and load the whole state in this package's stable format;
      ``unmarshal`` adds to what is stored, clearing nothing.
    - writes of one :meth:`apply` call (what :class:`BatchingState` commits) land together or not
      at all.

    Subclasses implement ``_iter``, ``_get``, ``_apply`` (adds and removals in one atomic write)
    and may override ``_has``, ``_count``, ``close`` and ``health``.
    """

    name: ClassVar[str] = ""
    #: URL schemes this backend opens with :meth:`open` (``sqlite``, ``scylla``, ...).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: What the backend calls its consistency, for log lines (``QUORUM`` for Scylla).
    consistency: str = "serializable"
    log_json: bool = False

    # --- what a backend implements ------------------------------------------------------------

    @classmethod
    def open(cls, url: str, **options: Any) -> PinStateBackend:
        """The backend for ``url`` (a classmethod a backend overrides)."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URL")

    def _iter(self, after: str | None, page_size: int) -> Iterator[Pin]:
        raise NotImplementedError

    def _get(self, cid: str) -> Pin | None:
        raise NotImplementedError

    def _has(self, cid: str) -> bool:
        return self._get(cid) is not None

    def _apply(self, adds: Sequence[Pin], removes: Sequence[str]) -> None:
        raise NotImplementedError

    def _count(self) -> int:
        return sum(1 for _ in self._iter(None, 5000))

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """Where the state lives, for messages (no password)."""
        return self.name

    # --- the contract -------------------------------------------------------------------------

    def list(self, *, after: str | None = None,
             page_size: int = 5000) -> Generator[Pin, None, None]:
        """Every pin, streamed in pages of ``page_size`` (after ``after`` when given)."""
        start = time.perf_counter()
        count = 0
        ok = False
        try:
            for pin in self._iter(after, page_size):
                count += 1
                yield pin
            ok = True
        finally:
            self._record("list", None, start, ok, count=count)

    def has(self, cid: str) -> bool:
        """Whether ``cid`` is pinned."""
        cid = _key(cid, self.name)
        with self._op("has", cid):
            return self._has(cid)

    def get(self, cid: str) -> Pin:
        """The pin of ``cid``; :class:`PinNotFoundError` when it is not part of the pinset."""
        cid = _key(cid, self.name)
        start = time.perf_counter()
        try:
            pin = self._get(cid)
            if pin is None:
                raise PinNotFoundError(f"{NOT_FOUND}: {cid}", backend=self.name, cid=cid)
        except BaseException as exc:
            self._record("get", cid, start, False, error=exc)
            raise
        self._record("get", cid, start, True)
        return pin

    def add(self, pin: Pin) -> None:
        """Store ``pin`` (validated), replacing the stored pin of its CID."""
        pin = _validated(pin, self.name)
        with self._op("add", pin.cid, batch=1):
            self._apply([pin], [])

    def rm(self, cid: str) -> None:
        """Remove the pin of ``cid``; nothing happens when there is none."""
        cid = _key(cid, self.name)
        with self._op("rm", cid, batch=1):
            self._apply([], [cid])

    def apply(self, adds: Iterable[Pin] = (), removes: Iterable[str] = ()) -> None:
        """Add ``adds`` and remove ``removes`` in one atomic write (removals of a CID also added
        are dropped: the add wins)."""
        pins = [_validated(p, self.name) for p in adds]
        added = {p.cid for p in pins}
        gone = [c for c in (_key(c, self.name) for c in removes) if c not in added]
        if not pins and not gone:
            return
        with self._op("commit", None, batch=len(pins) + len(gone)):
            self._apply(pins, gone)

    def batch(self, *, max_batch_size: int = 1000,
              max_batch_age: float = 1.0) -> BatchingState:
        """A :class:`BatchingState` writing to this state."""
        return BatchingState(self, max_batch_size=max_batch_size, max_batch_age=max_batch_age)

    def count(self) -> int:
        """How many pins there are."""
        with self._op("count", None):
            return self._count()

    def summary(self) -> StateSummary:
        """The pin count and an order-independent checksum of the export lines."""
        total = 0
        count = 0
        for pin in self.list():
            digest = hashlib.blake2b(pin.to_ndjson().encode(), digest_size=8).digest()
            total = (total + int.from_bytes(digest, "big")) % (1 << 64)
            count += 1
        return StateSummary(count, f"{total:016x}")

    def marshal(self, fp: IO[str]) -> int:
        """Write the whole state to ``fp``: a header line, then one JSON pin per line (the
        ``state export`` encoding). Return the number of pins written."""
        fp.write(json.dumps(MARSHAL_HEADER, separators=(",", ":")) + "\n")
        count = 0
        for pin in self.list():
            fp.write(pin.to_ndjson() + "\n")
            count += 1
        return count

    def unmarshal(self, fp: IO[str], *, batch_size: int = 1000) -> int:
        """Load what :meth:`marshal` wrote, adding to (never clearing) this state; a bad line
        raises :class:`InvalidPinError` with its number, after the lines before it are stored.
        Return the number of pins read."""
        header = fp.readline()
        try:
            found = json.loads(header) if header.strip() else None
        except ValueError:
            found = None
        if found != MARSHAL_HEADER:
            raise InvalidPinError(f"line 1: not a marshalled pin state (expected header "
                                  f"{json.dumps(MARSHAL_HEADER)})", backend=self.name, line=1)
        from rubix_integration.pins._ndjson import read_pins

        count = 0
        with self.batch(max_batch_size=batch_size, max_batch_age=float("inf")) as batch:
            for _, pin in read_pins(fp, first_line=2):
                batch.add(pin)
                count += 1
        return count

    def migrate(self, fp: IO[str]) -> int:
        """Load a state of an older format from ``fp``: ipfs-cluster's ``state export`` (either
        shape) or this package's :meth:`marshal` output. Return the number of pins read."""
        from rubix_integration.pins._ndjson import import_pins

        first = fp.readline()
        try:
            header = json.loads(first) if first.strip() else None
        except ValueError:
            header = None
        if header == MARSHAL_HEADER:
            from rubix_integration.pins._ndjson import read_pins

            count = 0
            with self.batch(max_batch_size=1000, max_batch_age=float("inf")) as batch:
                for _, pin in read_pins(fp, first_line=2):
                    batch.add(pin)
                    count += 1
            return count
        import itertools

        return import_pins(self, itertools.chain([first], fp)).added

    def health(self) -> float:
        """Write, read and remove a test pin; return the seconds it took (raise on failure)."""
        from rubix_integration.codecs import CID, RAW, SHA2_256, encode_multihash

        digest = hashlib.sha256(f"rubix pin state health {time.time_ns()}".encode()).digest()
        probe = str(CID(1, RAW, encode_multihash(SHA2_256, digest)))
        start = time.perf_counter()
        self.add(Pin(cid=probe, name="rubix-integration health check"))
        try:
            if self.get(probe).cid != probe:
                raise PinStateError("health check read back another pin", backend=self.name,
                                    cid=probe)
        finally:
            self.rm(probe)
        if self.has(probe):
            raise PinStateError("health check pin is still there after rm", backend=self.name,
                                cid=probe)
        return time.perf_counter() - start

    def __enter__(self) -> PinStateBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- instrumentation ----------------------------------------------------------------------

    def _op(self, operation: str, cid: str | None, *, batch: int = 0) -> _Op:
        return _Op(self, operation, cid, batch)

    def _record(self, operation: str, cid: str | None, start: float, ok: bool, *,
                error: BaseException | None = None, batch: int = 0, count: int = 0) -> None:
        from rubix_integration.pins._metrics import record

        elapsed = time.perf_counter() - start
        record(self.name, operation, elapsed, error, batch)
        if log.isEnabledFor(logging.DEBUG):
            fields: dict[str, Any] = {"operation": operation, "backend": self.name, "cid": cid,
                                      "duration": f"{elapsed * 1000:.3f}ms",
                                      "consistency": self.consistency, "success": ok}
            if batch:
                fields["batch_size"] = batch
            if count:
                fields["count"] = count
            if error is not None:
                fields["error"] = f"{type(error).__name__}: {error}"
            log.debug(json.dumps(fields) if self.log_json else
                      " ".join(f"{k}={v}" for k, v in fields.items()), extra={"pin_op": fields})


class _Op:
    __slots__ = ("batch", "cid", "operation", "start", "state")

    def __init__(self, state: PinStateBackend, operation: str, cid: str | None,
                 batch: int) -> None:
        self.state, self.operation, self.cid, self.batch = state, operation, cid, batch
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.state._record(self.operation, self.cid, self.start, exc is None, error=exc,
                           batch=self.batch)


def _validated(pin: Pin, backend: str) -> Pin:
    if not isinstance(pin, Pin):
        raise InvalidPinError(f"expected a Pin, got {type(pin).__name__}", backend=backend)
    try:
        return pin.validated()
    except InvalidPinError as exc:
        exc.backend = backend
        raise


def _key(cid: str, backend: str) -> str:
    from rubix_integration.pins._pin import _canonical_cid

    try:
        found = _canonical_cid(cid, "cid", None)
    except InvalidPinError as exc:
        exc.backend = backend
        raise
    assert found is not None
    return found


class BatchingState:
    """Writes to a state buffered until :meth:`commit` (ipfs-cluster's ``BatchingState``).

    ``add`` and ``rm`` are validated at once and kept in memory (the last write of a CID wins);
    the buffer is committed in one atomic write when it holds ``max_batch_size`` writes, when its
    oldest write is ``max_batch_age`` seconds old (checked on each write), on :meth:`commit`, and
    on leaving a ``with`` block without an exception (an exception discards it). Reads go to the
    state and see committed writes only.
    """

    def __init__(self, state: PinStateBackend, *, max_batch_size: int = 1000,
                 max_batch_age: float = 1.0) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_batch_age <= 0:
            raise ValueError("max_batch_age must be positive")
        self.state = state
        self.max_batch_size = max_batch_size
        self.max_batch_age = max_batch_age
        self._pending: dict[str, Pin | None] = {}
        self._since: float | None = None
        self.commits = 0

    @property
    def pending(self) -> int:
        """How many writes wait for the next commit."""
        return len(self._pending)

    def add(self, pin: Pin) -> None:
        """Buffer ``pin`` (validated now)."""
        if not (type(pin) is Pin and _is_canonical(pin)):  # the usual pin: nothing to change
            pin = _validated(pin, self.state.name)
        self._put(pin.cid, pin)

    def rm(self, cid: str) -> None:
        """Buffer the removal of ``cid``."""
        self._put(_key(cid, self.state.name), None)

    def _put(self, cid: str, pin: Pin | None) -> None:
        if self._since is None:
            self._since = time.monotonic()
        self._pending.pop(cid, None)  # a rewrite moves to the end: the order of last writes
        self._pending[cid] = pin
        if (len(self._pending) >= self.max_batch_size
                or time.monotonic() - self._since >= self.max_batch_age):
            self.commit()

    def commit(self) -> int:
        """Write the buffered writes in one atomic write; return how many there were."""
        if not self._pending:
            return 0
        pending, self._pending, self._since = self._pending, {}, None
        adds = [p for p in pending.values() if p is not None]
        removes = [c for c, p in pending.items() if p is None]
        try:
            with self.state._op("commit", None, batch=len(pending)):
                self.state._apply(adds, removes)
        except BaseException:
            # nothing was written: keep the writes so that a retry can commit them
            pending.update(self._pending)
            self._pending = pending
            self._since = time.monotonic()
            raise
        self.commits += 1
        return len(pending)

    def discard(self) -> int:
        """Drop the buffered writes; return how many there were."""
        count = len(self._pending)
        self._pending, self._since = {}, None
        return count

    # reads see committed writes, as ipfs-cluster's do
    def list(self, **options: Any) -> Iterator[Pin]:
        """The state's pins (committed writes only)."""
        return self.state.list(**options)

    def has(self, cid: str) -> bool:
        """Whether the state holds ``cid`` (committed writes only)."""
        return self.state.has(cid)

    def get(self, cid: str) -> Pin:
        """The state's pin of ``cid`` (committed writes only)."""
        return self.state.get(cid)

    def __enter__(self) -> BatchingState:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def pins_from(data: Iterable[Mapping[str, Any]]) -> list[Pin]:
    """Validated pins from ipfs-cluster JSON objects."""
    return [Pin.from_json(d) for d in data]
