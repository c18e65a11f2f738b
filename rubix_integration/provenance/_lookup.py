"""Reading records back: named lookups by CID, column conditions, rows as records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs import CID, dagjson
from rubix_integration.provenance.models import CID_GROUP, CID_GROUP_BITS, PROVENANCE_TABLE
from rubix_integration.provenance.records import ProvenanceRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row

__all__ = ["NAMED_BLOCK", "NAMED_ID", "NAMED_RECORD", "column_conditions", "record_from_row",
           "rows_named"]


# lookup groups probed by one statement (each is one bound parameter)
GROUPS_PER_LOOKUP = 1000


def record_from_row(row: Any) -> ProvenanceRecord:
    """The record a row of ``provenance_records`` holds."""
    data = row.data
    if isinstance(data, str):  # a JSON column read through a plain text path
        data = json.loads(data)
    return ProvenanceRecord(
        cid=row.cid, prev=row.prev, chain=row.chain, seq=int(row.seq), type=row.type,
        timestamp_us=int(row.timestamp_us), origin_node=row.origin_node,
        data=dagjson.from_json_form(data), published=bool(row.published))


def _named(*columns: Any) -> sa.Select[Any]:
    t = PROVENANCE_TABLE
    return (sa.select(*columns)
            .where(CID_GROUP.in_(sa.bindparam("groups", expanding=True)),
                   t.c.cid == sa.bindparam("cid"))
            .order_by(t.c.id))


# built once: lookups are frequent and short, so building a statement would cost as much as
# running it
_ID_RANGE = sa.select(sa.select(sa.func.min(PROVENANCE_TABLE.c.id)).scalar_subquery(),
                      sa.select(sa.func.max(PROVENANCE_TABLE.c.id)).scalar_subquery())
NAMED_RECORD = _named(PROVENANCE_TABLE)
NAMED_BLOCK = _named(PROVENANCE_TABLE.c.block)
NAMED_ID = _named(PROVENANCE_TABLE.c.id)


def rows_named(conn: Connection, cid: str, query: sa.Select[Any],
                first: bool = False) -> list[Row[Any]]:
    """Rows of ``query`` (one of the ``NAMED_*``) for the records named ``cid``, oldest first;
    stop at the first one found when ``first``. Probes each lookup group of
    ``ix_provenance_records_cid`` in turn."""
    # min() and max() in scalar subqueries: SQLite reads only one of them per statement from the
    # index, and would scan the table for both
    low, high = conn.execute(_ID_RANGE).one()
    if high is None:
        return []
    groups = range(int(low) >> CID_GROUP_BITS, (int(high) >> CID_GROUP_BITS) + 1)
    found: list[Row[Any]] = []
    for start in range(0, len(groups), GROUPS_PER_LOOKUP):
        chunk = list(groups[start:start + GROUPS_PER_LOOKUP])
        found += conn.execute(query, {"groups": chunk, "cid": cid}).all()
        if found and first:
            break
    return found


def column_conditions(conn: Connection, columns: Mapping[str, Any]) -> list[Any]:
    """Conditions for column filters; a CID is looked up first and matched by row id."""
    t = PROVENANCE_TABLE
    conditions: list[Any] = []
    for name, value in columns.items():
        if name == "cid" and isinstance(value, (str, CID)):
            ids = [row.id for row in rows_named(conn, str(value), NAMED_ID)]
            conditions.append(t.c.id.in_(ids))
        else:
            conditions.append(t.c[name] == value)
    return conditions

