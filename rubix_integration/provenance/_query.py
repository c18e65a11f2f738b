"""Check query filters at the API boundary; the store turns them into SQL conditions.

Every filter is checked before any SQL is built, so a filter a store could not compare fails the
same way on every store, with :class:`~rubix_integration.errors.InvalidFilterError`:

- text (a column value, a field name, a compared string) is valid Unicode without NUL, which
  PostgreSQL cannot hold;
- integers lie in the signed 64-bit range, the one both stores compare integers in (records may
  hold integers up to ``2**64 - 1``; those cannot be filtered on);
- floats are finite;
- a data path has 1 to :data:`~rubix_integration.codecs.dagjson.MAX_DEPTH` non-empty field
  names: no record holds a value deeper than that;
- times, limits and offsets fit the stores' 64-bit integers (see :func:`check_window`).

Which key means what (see :func:`parse_filters`): a record's own columns by name; ``data.<path>``
or ``data`` with a nested mapping for fields of its data; and any other key for the top-level field
of the data with that name, as ``query_logs({"type": "inference", "model": "bert-base"})`` reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from rubix_integration.codecs import CID
from rubix_integration.codecs.dagjson import MAX_DEPTH
from rubix_integration.errors import InvalidFilterError

__all__ = ["check_data_filter", "check_window", "parse_filters", "to_us"]

COLUMN_FILTERS = ("type", "chain", "origin_node", "cid", "prev", "published")
#: The range both stores compare integers in (SQLite's INTEGER, PostgreSQL's bigint).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def to_us(value: datetime | str | float | int) -> int:
    """Microseconds since the epoch from a datetime (naive = UTC), ISO text or epoch seconds."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a time: {value!r}")
    return round(value * 1_000_000)


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character, which the stores cannot compare"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _check_time(name: str, value: Any) -> int:
    try:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")
        if isinstance(value, str) and _text_problem(value):
            raise ValueError("not valid text")
        us = to_us(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidFilterError(
            f"{name}={_show(str(value))} is not a time: give a datetime (naive means UTC), ISO "
            f"8601 text or finite epoch seconds ({exc})", filter=name) from None
    if not INT64_MIN <= us <= INT64_MAX:
        raise InvalidFilterError(
            f"{name}={_show(str(value))} is outside the times the store can hold (64-bit "
            "microseconds since 1970: about 292,000 years either way)", filter=name)
    return us


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFilterError(
            f"{name} must be a whole number, not {type(value).__name__} {_show(str(value))}",
            filter=name)
    if not 0 <= value <= INT64_MAX:
        raise InvalidFilterError(
            f"{name}={value} is outside 0 to 2**63-1", filter=name)
    return value


def check_window(
    *, limit: Any = None, offset: Any = 0, since: Any = None, until: Any = None
) -> tuple[int | None, int, int | None, int | None]:
    """``limit``, ``offset``, ``since`` and ``until`` checked: ``(limit, offset, since_us,
    until_us)``.

    ``limit`` (``None`` for no limit) and ``offset`` are whole numbers from 0 to ``2**63 - 1``;
    ``since`` and ``until`` (``None`` for no bound) are datetimes (naive means UTC), ISO 8601 text
    or finite epoch seconds that fit the store's 64-bit microsecond column.
    """
    return (
        None if limit is None else _check_count("limit", limit),
        _check_count("offset", offset),
        None if since is None else _check_time("since", since),
        None if until is None else _check_time("until", until),
    )


def _too_deep(name: str) -> InvalidFilterError:
    return InvalidFilterError(
        f"filter {_show(name)} goes more than {MAX_DEPTH} fields deep; no record holds a value "
        "that deep", filter=_show(name, 200))


def check_data_filter(path: tuple[str, ...], value: Any) -> None:
    """Check one equality on a field of the data: ``path`` names the field (one name per level),
    ``value`` is what it must equal. The rules are in this module's docstring."""
    name = "data." + ".".join(path)
    if not path:
        raise InvalidFilterError("a data filter needs at least one field name", filter="data")
    if len(path) > MAX_DEPTH:
        raise _too_deep(name)
    for part in path:
        if not isinstance(part, str):
            raise InvalidFilterError(
                f"filter {_show(name)}: field name {part!r} is not text", filter=_show(name, 200))
        problem = _text_problem(part)
        if problem:
            raise InvalidFilterError(f"filter {_show(name)}: field name {_show(part)} {problem}",
                                     filter=_show(name, 200))
    _check_scalar(name, value)


def _check_scalar(name: str, value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise InvalidFilterError(f"filter {_show(name)}: the value {problem}",
                                     filter=_show(name, 200))
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidFilterError(
                f"filter {_show(name)}: the integer {_show(str(value))} is outside the signed "
                "64-bit range the stores compare integers in", filter=_show(name, 200))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilterError(
                f"filter {_show(name)}: {value!r} cannot be compared (no record holds NaN or "
                "an infinity)", filter=_show(name, 200))
    else:
        raise InvalidFilterError(
            f"filter {_show(name)}: only text, numbers, booleans and None can be compared, "
            f"not {type(value).__name__}", filter=_show(name, 200))


def _check_column(name: str, value: Any) -> Any:
    if name == "published":
        if not isinstance(value, bool):
            raise InvalidFilterError(
                f"filter 'published' takes True or False, not {_show(repr(value))}",
                filter=name)
        return value
    if name == "cid" and isinstance(value, CID):
        return value
    if name == "prev" and isinstance(value, CID):
        return str(value)
    if value is None and name == "prev":  # the first record of a chain links nothing
        return value
    if not isinstance(value, str):
        allowed = {"cid": "text or a CID", "prev": "text, a CID or None"}.get(name, "text")
        raise InvalidFilterError(
            f"filter {name!r} takes {allowed}, not {type(value).__name__}", filter=name)
    problem = _text_problem(value)
    if problem:
        raise InvalidFilterError(f"filter {name!r}: the value {problem}", filter=name)
    return value


def _flatten(filters: Mapping[Any, Any], prefix: tuple[str, ...],
             out: dict[tuple[str, ...], Any]) -> None:
    # iterative, and bounded by MAX_DEPTH: a nested mapping of any depth cannot exhaust the stack
    stack: list[tuple[tuple[str, ...], Any]] = [(prefix, filters)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            if not value:
                name = "data." + ".".join(path) if path else "data"
                raise InvalidFilterError(
                    f"filter {_show(name)} is an empty mapping: it compares nothing",
                    filter=_show(name, 200))
            if len(path) >= MAX_DEPTH:
                raise _too_deep("data." + ".".join(path))
            for key, inner in value.items():
                if not isinstance(key, str):
                    name = "data." + ".".join(path) if path else "data"
                    raise InvalidFilterError(
                        f"filter {_show(name)}: field name {key!r} is not text",
                        filter=_show(name, 200))
                stack.append(((*path, key), inner))
        else:
            check_data_filter(path, value)
            out[path] = value


def parse_filters(
    filters: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[tuple[str, ...], Any]]:
    """Check filters and split them into column equalities and ``data`` path equalities.

    Keys are column names (``type``, ``chain``, ``origin_node``, ``cid``, ``prev``,
    ``published``), dotted paths into the data (``"data.model.name"``), or ``"data"`` with a
    nested mapping (``{"data": {"model": {"name": ...}}}``, which also reaches field names
    holding a dot). Any other key names a top-level field of the data, whole (``{"model":
    "bert"}`` is ``{"data": {"model": "bert"}}``; ``{"a.b": 1}`` is the field named ``a.b``); a
    mapping value reaches inside it (``{"model": {"name": "bert"}}``). A data field named like a
    column, or beginning with ``data.``, is reached through ``"data"`` with a nested mapping.
    Column values are text (``cid`` also a CID, ``prev`` also ``None``, ``published`` a
    boolean); data values are scalars (text, number, boolean or ``None``), each checked by
    :func:`check_data_filter`. Anything else raises
    :class:`~rubix_integration.errors.InvalidFilterError` before any SQL runs.
    """
    columns: dict[str, Any] = {}
    paths: dict[tuple[str, ...], Any] = {}
    if filters is None:
        return columns, paths
    if not isinstance(filters, Mapping):
        raise InvalidFilterError(
            f"filters must be a mapping of names to values, not {type(filters).__name__}")
    for key, value in filters.items():
        if not isinstance(key, str):
            raise InvalidFilterError(f"a filter name must be text, not {type(key).__name__}",
                                     filter=_show(repr(key)))
        if key in COLUMN_FILTERS:
            columns[key] = _check_column(key, value)
            continue
        head, dot, rest = key.partition(".")
        if head != "data":
            # any other name is a field of the data, taken whole (dots included)
            check_data_filter((key,), None)  # the name itself
            if isinstance(value, Mapping):
                _flatten(value, (key,), paths)
            else:
                check_data_filter((key,), value)
                paths[(key,)] = value
            continue
        if not dot:
            if not isinstance(value, Mapping):
                raise InvalidFilterError(
                    "the 'data' filter takes a mapping of fields to values", filter="data")
            _flatten(value, (), paths)
            continue
        if rest.count(".") >= MAX_DEPTH:
            raise _too_deep(key)
        parts = tuple(rest.split("."))
        if "" in parts:
            raise InvalidFilterError(
                f"filter {_show(key)}: a field name is empty (two dots in a row, or one at an "
                "end); to match a field named '' use a nested mapping", filter=_show(key, 200))
        if isinstance(value, Mapping):
            check_data_filter(parts, None)  # the names themselves
            _flatten(value, parts, paths)
        else:
            check_data_filter(parts, value)
            paths[parts] = value
    return columns, paths

