"""JSON conditions in each dialect's own terms, for the stores' expression builders.

PostgreSQL compares through JSONB operators (``@>``, ``?``, ``<@``, ``?|``), which its GIN
indexes serve; SQLite walks the JSON1 functions (``json_extract``, ``json_type``, ``json_each``).
Capabilities never call these directly: they ask their store (see
:class:`~rubix_integration.stores.primitives.StorePrimitives`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

__all__ = [
    "pg_array_contains",
    "pg_array_overlaps",
    "pg_array_within",
    "pg_path_equals",
    "sqlite_array_contains",
    "sqlite_array_overlaps",
    "sqlite_array_within",
    "sqlite_path_equals",
]


def _jsonb(value: Any) -> Any:
    from sqlalchemy.dialects.postgresql import JSONB

    return sa.cast(sa.literal(json.dumps(value)), JSONB())


def pg_path_equals(column: Any, path: tuple[str, ...], value: Any) -> sa.ColumnElement[bool]:
    """JSONB containment of ``{path…: value}`` (served by a GIN index on ``column``)."""
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    condition: sa.ColumnElement[bool] = column.op("@>")(_jsonb(nested))
    return condition


def pg_array_contains(column: Any, item: str) -> sa.ColumnElement[bool]:
    """The JSONB array ``column`` holds the text ``item``."""
    condition: sa.ColumnElement[bool] = column.op("?")(item)
    return condition


def pg_array_within(column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
    """Every element of the JSONB array ``column`` is one of ``items``."""
    condition: sa.ColumnElement[bool] = column.op("<@")(_jsonb(list(items)))
    return condition


def pg_array_overlaps(column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
    """The JSONB array ``column`` holds at least one of ``items``."""
    from sqlalchemy.dialects.postgresql import ARRAY

    condition: sa.ColumnElement[bool] = column.op("?|")(
        sa.cast(sa.literal(list(items), ARRAY(sa.Text())), ARRAY(sa.Text())))
    return condition


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f".{json.dumps(p)}" for p in path)


def _plain_name(part: str) -> bool:
    # SQLite's JSON path matches a name against its spelling in the stored text: a name of
    # printable ASCII is spelled alike by every encoder, but one with other characters may be
    # stored escaped ("\u00e9") or not, and a '"' ends a quoted name in older SQLite versions
    return '"' not in part and all(" " <= c <= "~" for c in part)


def _sqlite_leaf(kind: Any, atom: Any, value: Any) -> sa.ColumnElement[bool]:
    if value is None:
        return sa.and_(kind == "null")
    if isinstance(value, bool):
        return sa.and_(kind == ("true" if value else "false"))
    if isinstance(value, (int, float)):
        return sa.and_(kind.in_(("integer", "real")), atom == value)
    return sa.and_(kind == "text", atom == value)


def _sqlite_walk(column: Any, path: tuple[str, ...], value: Any) -> sa.ColumnElement[bool]:
    """The field at ``path`` equals ``value``, found by walking ``json_each`` level by level: its
    ``key`` is the decoded name, however the stored text spells it."""
    # one EXISTS per level, each over the level above: SQLite has no LATERAL keyword, and a
    # flat join of the levels reads to SQLAlchemy as a cartesian product
    levels = [sa.func.json_each(column).table_valued("key", "value", "type", "atom").alias()]
    for _ in path[1:]:
        levels.append(sa.func.json_each(levels[-1].c.value)
                      .table_valued("key", "value", "type", "atom").alias())
    last = levels[-1]
    condition: sa.ColumnElement[bool] = sa.exists().where(
        last.c.key == path[-1], _sqlite_leaf(last.c.type, last.c.atom, value))
    for each, part in zip(reversed(levels[:-1]), reversed(path[:-1]), strict=True):
        condition = sa.exists().where(each.c.key == part, each.c.type == "object", condition)
    return condition


def sqlite_path_equals(column: Any, path: tuple[str, ...], value: Any) -> sa.ColumnElement[bool]:
    """The field at ``path`` equals the scalar ``value`` (``json_type`` + ``json_extract``)."""
    if not all(_plain_name(part) for part in path):
        return _sqlite_walk(column, path, value)
    json_path = _sqlite_path(path)
    return _sqlite_leaf(sa.func.json_type(column, json_path),
                        sa.func.json_extract(column, json_path), value)


def _each(column: Any) -> Any:
    return sa.func.json_each(column).table_valued("value").alias()


def sqlite_array_contains(column: Any, item: str) -> sa.ColumnElement[bool]:
    """The JSON array ``column`` holds the text ``item``."""
    each = _each(column)
    return sa.exists().where(each.c.value == item)


def sqlite_array_within(column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
    """Every element of the JSON array ``column`` is one of ``items``."""
    each = _each(column)
    return ~sa.exists().where(each.c.value.not_in(list(items)))


def sqlite_array_overlaps(column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
    """The JSON array ``column`` holds at least one of ``items``."""
    each = _each(column)
    return sa.exists().where(each.c.value.in_(list(items)))
