"""Fast JSON for change feeds: :mod:`orjson` when installed, :mod:`json` otherwise.

Every function gives the values (or a JSON text meaning the same values) that :mod:`json`
gives; whatever :mod:`orjson` treats differently (``NaN``, integers beyond 64 bits, types that
are not JSON's) goes the :mod:`json` way.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["HAVE_ORJSON", "column_text", "feed_body", "fragment", "loads", "paused_gc"]

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; kept working without it
    orjson = None  # type: ignore[assignment]

#: Whether orjson is there (feeds are then served without parsing SQLite's JSON columns).
HAVE_ORJSON = orjson is not None


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a page of changes is built or parsed: it makes
    a great many objects at once, none of them in a cycle, and collecting while they are made
    only walks them over and over. (Reference counting frees as usual meanwhile.)"""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def loads(data: bytes | str) -> Any:
    """Parse a JSON document (``json.loads``), the collector paused."""
    with paused_gc():
        if orjson is not None:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # NaN, Infinity, integers beyond 64 bits: json's reading
        return json.loads(data)


if orjson is not None:
    _STRICT = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
               | orjson.OPT_PASSTHROUGH_SUBCLASS)
else:  # pragma: no cover
    _STRICT = 0


def column_text(fallback: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A bind processor for a JSON column stored as text: ``value``'s JSON text, or what
    ``fallback`` (the dialect's own processor) makes of it when orjson would write it
    differently (``None``, ``null`` anywhere inside, a type that is not JSON's)."""
    if orjson is None:  # pragma: no cover
        return fallback

    null = fallback(None)  # the same for every row: SQL NULL or the text 'null'
    dumps, strict = orjson.dumps, _STRICT

    def process(value: Any) -> Any:
        if value is None:
            return null
        try:
            out = dumps(value, option=strict)
        except TypeError:
            return fallback(value)
        return fallback(value) if b"null" in out else out.decode()

    return process


def fragment(value: Any) -> Any:
    """A JSON column's stored text, to be written into a document as it is (SQLite keeps a
    JSON number as a number: it is written as one, as SQLAlchemy reads it)."""
    return orjson.Fragment(value) if isinstance(value, str) else value


def feed_body(body: dict[str, Any], floats: Sequence[str] | None) -> bytes:
    """The JSON document of a feed page, as Starlette's ``JSONResponse`` writes it. With
    orjson, a change holding a ``NaN`` or infinite float (which orjson would write as ``null``)
    makes it :mod:`json`'s document, which refuses it as ``JSONResponse`` does."""
    if orjson is not None and floats is not None:
        finite = all(math.isfinite(c[f]) for c in body["changes"] for f in floats
                     if c[f] is not None)
        if finite:
            return orjson.dumps(body)
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")
