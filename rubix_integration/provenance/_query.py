"""Turn query filters into SQL conditions for each store's JSON operators."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

__all__ = ["data_condition", "parse_filters", "to_us"]

_SCALARS = (str, int, float, bool, type(None))
COLUMN_FILTERS = ("type", "chain", "origin_node", "cid", "prev", "published")


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


def _flatten(prefix: tuple[str, ...], value: Any, out: dict[tuple[str, ...], Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten((*prefix, str(key)), inner, out)
    else:
        out[prefix] = value


def parse_filters(
    filters: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[tuple[str, ...], Any]]:
    """Split filters into column equalities and ``data`` path equalities.

    Keys are column names (``type``, ``chain``, ``origin_node``, ``cid``, ``prev``,
    ``published``), dotted paths into the data (``"data.model.name"``), or ``"data"`` with a
    nested mapping (``{"data": {"model": {"name": ...}}}``). Values are compared for equality
    and must be scalars (text, number, boolean or ``None``).
    """
    columns: dict[str, Any] = {}
    paths: dict[tuple[str, ...], Any] = {}
    for key, value in (filters or {}).items():
        if key in COLUMN_FILTERS:
            columns[key] = value
            continue
        head, _, rest = key.partition(".")
        if head != "data":
            raise ValueError(
                f"unknown filter {key!r}: use one of {', '.join(COLUMN_FILTERS)}, "
                "'data.<path>' or 'data' with a nested mapping")
        parts = tuple(p for p in rest.split(".") if p) if rest else ()
        if not parts and not isinstance(value, Mapping):
            raise ValueError("the 'data' filter takes a mapping of fields to values")
        _flatten(parts, value, paths)
    for path, value in paths.items():
        if not path:
            raise ValueError("a data filter needs at least one field name")
        if not isinstance(value, _SCALARS):
            raise ValueError(
                f"filter data.{'.'.join(path)}: only text, numbers, booleans and None can be "
                f"compared, not {type(value).__name__}")
    return columns, paths


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f".{json.dumps(p)}" for p in path)


def data_condition(
    dialect: str, column: Any, path: tuple[str, ...], value: Any
) -> sa.ColumnElement[bool]:
    """``data`` at ``path`` equals ``value``: JSONB containment on PostgreSQL (served by the GIN
    index), ``json_extract``/``json_type`` on SQLite."""
    if dialect == "postgresql":
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        from sqlalchemy.dialects.postgresql import JSONB

        condition: sa.ColumnElement[bool] = column.op("@>")(
            sa.cast(sa.literal(json.dumps(nested)), JSONB()))
        return condition
    json_path = _sqlite_path(path)
    if value is None:
        return sa.func.json_type(column, json_path) == "null"
    if isinstance(value, bool):
        return sa.and_(sa.func.json_type(column, json_path) == ("true" if value else "false"))
    if isinstance(value, (int, float)):
        return sa.and_(sa.func.json_type(column, json_path).in_(("integer", "real")),
                       sa.func.json_extract(column, json_path) == value)
    return sa.and_(sa.func.json_type(column, json_path) == "text",
                   sa.func.json_extract(column, json_path) == value)
