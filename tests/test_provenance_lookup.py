"""Provenance storage: the fast encoder, CID lookups across groups, query plans, older tables."""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration import Manager
from rubix_integration.codecs import dagjson, parse_cid
from rubix_integration.provenance import InvalidDataError, RecordNotFoundError
from rubix_integration.provenance import _lookup as provenance_lookup
from rubix_integration.provenance.models import CID_GROUP, CID_GROUP_BITS, PROVENANCE_TABLE
from tests.fixtures.stores import legacy_provenance_table

T = PROVENANCE_TABLE
LINK = parse_cid("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")


# --- the encoder's two paths agree ---------------------------------------------------------------


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, 2**53, 2**63 - 1, -(2**63), 2**64 - 1, 10**17, -(10**17),
                           rng.randrange(-(2**63), 2**64)])
    if kind == 2:  # any finite double, exponent forms included
        while True:
            value = float(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
            if math.isfinite(value):
                return value
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.5, 1e21, 1e-7, 123.456, 1e16, 1.5e16, 0.0001, 1e-5])
    if kind == 4:
        return rng.choice(["", "e-mail", "1e-05", "-0.0", "/", "a\"b\\c\n\x00\x1f", "é", "😀",
                           "\u2028", "x" * rng.randrange(40)])
    if kind == 5:
        return rng.choice([b"", b"\x00\xff", LINK])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys = ["a", "B", "é", "😀", "\uffff", "file-name", "10", ""]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _outcome(call: Any, value: Any) -> Any:
    try:
        return call(value)
    except InvalidDataError as exc:
        return ("error", str(exc))


def test_fast_and_full_encoders_give_the_same_bytes_or_the_same_error() -> None:
    rng = random.Random(20250102)
    values: list[Any] = [_random_value(rng) for _ in range(3000)]
    values += [
        {"x": 1e16}, {"x": -0.0}, {"x": 5e-324}, {"x": 2**64}, {"x": -(2**63) - 1},
        {"x": 10**18}, {"x": -(10**17)}, {1: "a"}, {True: 1}, {None: 1}, {"/": "x"},
        {"x": {1, 2}}, {"x": math.nan}, {"x": math.inf}, {"s": "\ud800"}, {"x": object()},
        {"l": [{"n": i} for i in range(100)]}, _nested(64, 1), _nested(65, 1), _nested(64, []),
        _nested(64, [1]), [[{}] * 70], {"a": (1, 2)}, {"raw": b"\x01", "link": LINK},
    ]
    for value in values:
        full = _outcome(dagjson._encode_full, value)
        fast = _outcome(lambda v: dagjson.encode_plain(v)[0], value)
        assert fast == full, value
        if not isinstance(full, tuple):
            assert dagjson.encode_plain(value)[1] == json.loads(full)


# --- CID lookups ---------------------------------------------------------------------------------


def _jump_ids(manager: Manager, cid: str, to_id: int) -> None:
    """Give record ``cid`` the id ``to_id`` and make later records take ids after it."""
    with manager.store.transaction() as conn:
        conn.execute(sa.update(T).where(T.c.cid == cid).values(id=to_id))
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('provenance_records', 'id'), "
                f"{to_id})")


def test_cids_are_found_in_every_lookup_group(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = manager.provenance
    first = log.append_many([("a", {"i": i, "raw": b"\x00", "link": LINK}) for i in range(10)])
    # the last record moves to group 3, and the next batch follows it there
    _jump_ids(manager, first[-1].cid, (3 << CID_GROUP_BITS) + 5)
    second = log.append_many([("b", {"i": i, "ok": i % 2 == 0}) for i in range(10)])
    single = log.append("c", {"n": None})
    with manager.store.connect() as conn:
        groups = set(conn.execute(sa.select(CID_GROUP)).scalars())
    assert groups == {0, 3}
    monkeypatch.setattr(provenance_lookup, "GROUPS_PER_LOOKUP", 2)  # several statements per lookup
    for record in [*first, *second, single]:
        assert log.get(record.cid) == record
        assert log.get(parse_cid(record.cid)) == record
        assert dagjson.cid_text_for_block(log.get_block(record.cid)) == record.cid
        assert log.query_logs({"cid": record.cid}) == [record]
        assert log.query_logs({"cid": parse_cid(record.cid), "type": record.type}) == [record]
        assert log.count({"cid": record.cid}) == 1
    assert log.count({"cid": first[0].cid, "type": "b"}) == 0
    missing = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with pytest.raises(RecordNotFoundError):
        log.get(missing)
    with pytest.raises(RecordNotFoundError):
        log.get_block(missing)
    assert log.query_logs({"cid": missing}) == [] and log.count({"cid": missing}) == 0
    assert log.verify().ok


def test_lookups_on_an_empty_store(manager: Manager) -> None:
    missing = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with pytest.raises(RecordNotFoundError):
        manager.provenance.get(missing)
    assert manager.query_logs({"cid": missing}) == []


def test_a_rewritten_cid_column_is_what_lookups_see(manager: Manager) -> None:
    records = manager.provenance.append_many([("step", {"n": i}) for i in range(8)])
    forged = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with manager.store.transaction() as conn:
        conn.execute(sa.update(T).where(T.c.cid == records[3].cid).values(cid=forged))
    assert manager.provenance.get(forged).seq == 3
    with pytest.raises(RecordNotFoundError):
        manager.provenance.get(records[3].cid)
    assert ("altered", 3) in {(p.kind, p.seq) for p in manager.provenance.verify().problems}


def test_bulk_rows_read_back_as_written(manager: Manager) -> None:
    items = [("kind", {"i": i, "f": i / 3, "raw": bytes([i]), "link": LINK, "t": (i, "x"),
                       "deep": {"e-1": [1e-7, 1e21, -0.0]}}) for i in range(12)]
    records = manager.provenance.append_many(items)
    for record, (_, data) in zip(records, items, strict=True):
        stored = manager.provenance.get(record.cid)
        assert stored == record
        assert stored.data == {**data, "t": list(data["t"])}
        assert stored.published is False
    assert manager.provenance.verify().ok


# --- query plans ---------------------------------------------------------------------------------


def _statements(manager: Manager, call: Any) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(manager.store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(manager.store.engine, "before_cursor_execute", capture)
    return seen


def _plan(manager: Manager, statement: str, parameters: Any) -> str:
    with manager.store.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("ANALYZE provenance_records")
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement,
                                                                  parameters))


def test_cid_lookup_probes_the_grouped_index(manager: Manager) -> None:
    records = manager.provenance.append_many([("t", {"i": i}) for i in range(50)])
    statements = [(s, p) for s, p in _statements(
        manager, lambda: manager.provenance.get(records[20].cid)) if s.startswith("SELECT")]
    assert len(statements) == 2
    id_range, lookup = statements
    assert "max(" in id_range[0] and ">> 16" in lookup[0]
    plan = _plan(manager, *lookup)
    assert "ix_provenance_records_cid" in plan
    if manager.store.name == "sqlite":
        assert "cid=?" in plan  # both columns of the index are searched, not just the group
        # min() and max() each read one end of the primary key, no scan
        range_plan = _plan(manager, *id_range)
        assert "SEARCH provenance_records" in range_plan and "SCAN provenance_records" not in (
            range_plan)
    else:
        assert "(id >> 16)" in plan and "cid)::text =" in plan


def test_type_query_on_sqlite_searches_the_type_and_time_index(tmp_path: Any) -> None:
    with Manager(store_url=f"sqlite:///{tmp_path / 'p.sqlite'}") as manager:
        manager.provenance.append_many([(f"type{i % 5}", {"i": i}) for i in range(50)])
        queries = [(s, p) for s, p in _statements(
            manager, lambda: manager.query_logs({"type": "type3"}, limit=10))
            if "provenance_records.type" in s]
        assert len(queries) == 1
        plan = _plan(manager, *queries[0])
    assert "SEARCH provenance_records USING INDEX ix_provenance_records_type_time (type=?)" in plan
    assert "TEMP B-TREE" not in plan  # rows come in index order: no sort of the matches


# --- tables created before the grouped index -----------------------------------------------------


def test_a_table_with_the_former_unique_cid_index_keeps_working(store_url: str) -> None:
    url = sa.engine.make_url(store_url)
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(store_url)
    try:
        legacy_provenance_table().create(engine)
    finally:
        engine.dispose()
    with Manager(store_url=store_url) as manager:
        log = manager.provenance
        records = log.append_many([("a", {"i": i, "raw": b"\x02"}) for i in range(10)])
        records.append(log.append("b", {"x": 1}))
        indexes = {ix["name"] for ix in sa.inspect(manager.store.engine).get_indexes(T.name)}
        assert "ix_provenance_records_cid" not in indexes  # schema creation adds no index
        for record in records:
            assert log.get(record.cid) == record
            assert log.query_logs({"cid": record.cid}) == [record]
        with pytest.raises(sa.exc.IntegrityError), manager.store.transaction() as conn:
            row = conn.execute(sa.select(T).where(T.c.cid == records[0].cid)).one()._asdict()
            conn.execute(sa.insert(T), {**row, "id": None, "chain": "other"})
        assert log.verify().ok and log.count() == 11
