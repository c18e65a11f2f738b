"""ipfs-cluster's ``state export`` format, both ways: one JSON pin per line (NDJSON).

Reading accepts the current shape and the older one (``"cid": {"/": "Qm…"}``, ``"type": 1``).
A line that is not a valid pin raises :class:`~rubix_integration.errors.InvalidPinError` with its
line number, or is skipped and reported when asked. Writes go in batches, each in one atomic
write; a batch holding a bad line is never written, and when the input can be read twice (a
file) every line is checked before anything is written.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from rubix_integration.errors import InvalidPinError
from rubix_integration.pins._pin import Pin

__all__ = ["ImportResult", "export_pins", "import_pins", "read_pins"]


@dataclass
class ImportResult:
    """What an import did: pins ``added``, ``removed`` (with replace), lines ``skipped``
    (``(line number, why)``) and ``batches`` written."""

    added: int = 0
    removed: int = 0
    batches: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def read_pins(fp: Iterable[str], *, first_line: int = 1,
              skipped: list[tuple[int, str]] | None = None) -> Iterator[tuple[int, Pin]]:
    """``(line number, pin)`` for each non-blank line of ``fp``. A bad line raises
    :class:`InvalidPinError` (``line`` set), or is appended to ``skipped`` when that is given."""
    for number, text in enumerate(fp, start=first_line):
        if not text.strip():
            continue
        try:
            if not text.endswith("\n") and text.strip()[-1:] != "}":
                raise InvalidPinError("truncated line")
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InvalidPinError(f"not JSON ({exc})") from exc
            pin = Pin.from_json(data)
        except InvalidPinError as exc:
            message = f"line {number}: {exc}"
            if skipped is None:
                raise InvalidPinError(message, cid=exc.cid, line=number) from exc
            skipped.append((number, str(exc)))
            continue
        yield number, pin


def export_pins(state: object, fp: IO[str]) -> int:
    """Write every pin of ``state`` as ``state export`` does; return how many."""
    from rubix_integration.pins._state import PinStateBackend

    assert isinstance(state, PinStateBackend)
    count = 0
    write = fp.write
    for pin in state.list():
        write(pin.to_ndjson())
        write("\n")
        count += 1
    return count


def import_pins(state: object, fp: Iterable[str], *, replace_all: bool = False,
                rmin: int | None = None, rmax: int | None = None,
                allocations: Sequence[str] | None = None, batch_size: int = 1000,
                skip_bad: bool = False) -> ImportResult:
    """Read ``state export`` lines from ``fp`` into ``state`` (like ``ipfs-cluster-service state
    import``): ``rmin``/``rmax``/``allocations`` override those of every pin; ``replace_all``
    removes the stored pins the input does not hold; ``skip_bad`` reports bad lines in
    ``skipped`` and goes on instead of stopping."""
    from rubix_integration.pins._state import PinStateBackend

    assert isinstance(state, PinStateBackend)
    result = ImportResult()
    skipped = result.skipped if skip_bad else None
    if not skip_bad and _rewindable(fp):
        # check every line first, so that a bad line leaves the state untouched
        assert isinstance(fp, io.IOBase | io.StringIO)
        start = fp.tell()
        for _ in read_pins(fp):
            pass
        fp.seek(start)
    override: dict[str, object] = {}
    if rmin is not None:
        override["replication_factor_min"] = rmin
    if rmax is not None:
        override["replication_factor_max"] = rmax
    if allocations is not None:
        override["allocations"] = tuple(allocations)
    seen: set[str] | None = set() if replace_all else None
    buffer: list[Pin] = []
    for _, pin in read_pins(fp, skipped=skipped):
        if override:
            pin = replace(pin, **override).validated()  # type: ignore[arg-type]
        buffer.append(pin)
        if seen is not None:
            seen.add(pin.cid)
        if len(buffer) >= batch_size:
            state.apply(buffer)
            result.added += len(buffer)
            result.batches += 1
            buffer = []
    if buffer:
        state.apply(buffer)
        result.added += len(buffer)
        result.batches += 1
    if seen is not None:
        stale: list[str] = []
        for pin in state.list():
            if pin.cid not in seen:
                stale.append(pin.cid)
        for start_at in range(0, len(stale), batch_size):
            state.apply(removes=stale[start_at:start_at + batch_size])
        result.removed = len(stale)
    return result


def _rewindable(fp: object) -> bool:
    try:
        return isinstance(fp, io.IOBase) and fp.seekable() and fp.tell() >= 0
    except (OSError, ValueError):
        return False
