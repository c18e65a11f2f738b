"""The merge engine on real stores: feeds, last-writer-wins, refusals, checks, checkpoints and
tombstones.

Every test runs with the store under test (SQLite and PostgreSQL) on one side and a SQLite store
on the other, so each backend both serves and applies changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration._settings import resolve_settings
from rubix_integration.codecs import hlc
from rubix_integration.codecs.hlc import pack, wall_ms
from rubix_integration.errors import ChangeRejectedError, ClockDriftError, ResyncRequiredError
from rubix_integration.replication import ReplicatedTables, Replicator
from rubix_integration.replication.engine import decode_cursor, encode_cursor
from rubix_integration.replication.models import CHECKPOINT_TABLE, PEER_TABLE
from rubix_integration.stores.base import Store
from tests.fixtures.stores import open_store
from tests.test_replication_support import T, delete, put, rows, task_row

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Store]:
    """A second store (SQLite) for the other node."""
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    with open_store(url, resolve_settings(store_url=url, data_dir=tmp_path / "d2")) as s:
        s.create_schema()
        yield s


def pull(dst: Replicator, src: Replicator, table: str = "workflow_tasks",
         batch: int = 100) -> int:
    """Pull ``src``'s feed of ``table`` into ``dst`` as the sync loop does; rows applied."""
    applied = 0
    while True:
        feed = src.changes(table, cursor=encode_cursor(dst.checkpoint(src.node_id, table)),
                           limit=batch, exclude_origin=dst.node_id, reader=dst.node_id)
        result = dst.apply(table, dst.decode(table, feed.changes, peer=src.node_id),
                           peer=src.node_id, cursor=decode_cursor(feed.cursor))
        applied += result.applied
        if not feed.has_more or result.refused:
            return applied


def encoded(rep: Replicator, key: str, version: int, origin: str,
            state: str = "pending") -> dict[str, Any]:
    """The JSON form of one task row with an explicit version and origin."""
    row = {**task_row(key, state), "origin_node": origin, "change_version": version}
    return rep.tables.codec("workflow_tasks").encode(row)


def test_clock_drift_error_lives_in_errors_and_stays_importable_from_hlc() -> None:
    assert hlc.ClockDriftError is ClockDriftError
    assert ClockDriftError.__module__ == "rubix_integration.errors"


def test_feed_pages_by_cursor_and_answers_the_since_form(store: Store) -> None:
    rep = Replicator(store)
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    versions = [put(store, f"k{i}") for i in range(7)]
    pages, cursor = [], None
    while True:
        feed = rep.changes("workflow_tasks", cursor=cursor, limit=3)
        pages.append([r["task_id"] for r in feed.changes])
        cursor = feed.cursor
        if not feed.has_more:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [k for p in pages for k in p] == [f"k{i}" for i in range(7)]
    assert decode_cursor(cursor) <= max(versions)
    since = rep.changes("workflow_tasks", since=before.isoformat().replace("+00:00", "Z"),
                        limit=100)
    assert len(since.changes) == 7 and since.changes[0]["change_version"] == versions[0]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    assert rep.changes("workflow_tasks", since=future).changes == []
    with pytest.raises(ChangeRejectedError, match="cursor"):
        rep.changes("workflow_tasks", cursor="not-a-cursor")
    with pytest.raises(ChangeRejectedError, match="ISO 8601"):
        rep.changes("workflow_tasks", since="yesterday")
    with pytest.raises(ChangeRejectedError, match="does not replicate"):
        rep.changes("rubix_meta")


def test_pull_both_ways_converges_and_applying_again_changes_nothing(
    store: Store, other: Store,
) -> None:
    a, b = Replicator(store), Replicator(other)
    for i in range(5):
        put(store, f"a{i}", "pending", n=i)
        put(other, f"b{i}", "running", n=i)
    delete(store, "a1")
    put(other, "a0", "done")  # b writes a row a also writes: b's is newer
    assert pull(b, a, batch=2) == 4  # a0: b holds a newer version
    assert pull(a, b, batch=2) >= 5
    assert rows(store) == rows(other)
    assert rows(store)["a1"]["deleted_at"] is not None
    # the same batch again: idempotent
    feed = b.changes("workflow_tasks", limit=100)
    again = a.apply("workflow_tasks", a.decode("workflow_tasks", feed.changes))
    assert again.applied == 0 and again.unchanged == len(feed.changes)
    assert rows(store) == rows(other)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_the_rule_picks_one_winner_whatever_the_order(store: Store, other: Store,
                                                      order: str) -> None:
    prio = {"node-low": 0, "node-high": 5}
    a = Replicator(store, priorities=prio)
    b = Replicator(other, priorities=prio)
    v = pack(wall_ms() - 1000)
    cases = [
        # (key, versions as (stamp, origin, state)), expected winning state
        ("by-stamp", [(v + 2, "node-low", "newer-stamp"),
                      (v + 1, "node-high", "lower-stamp")], "newer-stamp"),
        ("by-priority", [(v, "node-low", "low"), (v, "node-high", "high")], "high"),
        ("by-node-id", [(v, "node-x", "x"), (v, "node-y", "y")], "y"),
    ]
    for key, versions, _ in cases:
        batch = [encoded(a, key, s, o, st) for s, o, st in versions]
        if order == "reverse":
            batch.reverse()
        for rep in (a, b):
            for item in batch:  # one change per batch: arrival order matters
                rep.apply("workflow_tasks", rep.decode("workflow_tasks", [item]))
    for key, _, winner in cases:
        assert rows(store)[key]["state"] == winner
        assert rows(other)[key]["state"] == winner


def test_a_change_from_a_clock_too_far_ahead_is_refused_and_offered_again(
    store: Store, other: Store,
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    a = Replicator(store, max_drift_ms=300_000, on_event=lambda e, d: events.append((e, d)))
    ahead = encoded(a, "fast", pack(wall_ms() + 301_000), "node-fast", "future")
    fine = encoded(a, "ok", pack(wall_ms() + 200_000), "node-fast", "a-bit-ahead")
    result = a.apply("workflow_tasks", a.decode("workflow_tasks", [fine, ahead]),
                     peer="node-fast", cursor=ahead["change_version"])
    assert result.applied == 1 and len(result.refused) == 1
    assert result.refused[0]["key"] == ["fast"] and result.refused[0]["ahead_ms"] > 300_000
    assert "fast" not in rows(store) and rows(store)["ok"]["state"] == "a-bit-ahead"
    # the checkpoint stops before the refused change, so it is offered again later
    assert a.checkpoint("node-fast", "workflow_tasks") == ahead["change_version"] - 1
    assert [e for e, _ in events] == ["clock_drift_refused"]
    assert a.stats()["rows_refused"] == 1
    # a local write after accepting the change from 200 s ahead is stamped above it: the fast
    # clock does not win the next conflict
    assert put(store, "ok", "local-later") > fine["change_version"]


def test_concurrent_writes_count_as_conflicts_and_are_logged_with_both_versions(
    store: Store, other: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = Replicator(store), Replicator(other)
    put(store, "same", "from-a")
    put(other, "same", "from-b")
    caplog.set_level(logging.INFO, logger="rubix_integration.replication")
    pull(a, b)
    pull(b, a)
    assert rows(store)["same"] == rows(other)["same"]
    assert a.stats()["conflicts_resolved"] + b.stats()["conflicts_resolved"] >= 1
    logged = [r.getMessage() for r in caplog.records if "conflict on workflow_tasks" in
              r.getMessage()]
    assert logged and "from-a" in logged[0] and "from-b" in logged[0]
    # a plain update of a row the other side had seen is not a conflict
    before = a.stats()["conflicts_resolved"]
    put(other, "same", "later")
    pull(a, b)
    assert a.stats()["conflicts_resolved"] == before
    assert rows(store)["same"]["state"] == "later"


@pytest.mark.parametrize(("change", "message"), [
    ({"no_such_column": 1}, "unknown column"),
    ({"state": 5}, "expected text"),
    ({"priority": "high"}, "expected an integer"),
    ({"task_type": "x" * 201}, "exceeds the column"),
    ({"task_type": None}, "null where"),
    ({"change_version": True}, "expected an integer"),
])
def test_incoming_rows_are_checked_against_the_table(store: Store, change: dict[str, Any],
                                                     message: str) -> None:
    a = Replicator(store)
    good = encoded(a, "fine", pack(wall_ms()), "node-x")
    bad = {**encoded(a, "bad", pack(wall_ms()), "node-x"), **change}
    with pytest.raises(ChangeRejectedError, match=message):
        a.decode("workflow_tasks", [good, bad], peer="node-x")
    missing = dict(good)
    del missing["state"]
    with pytest.raises(ChangeRejectedError, match="lacks column"):
        a.decode("workflow_tasks", [missing])
    with pytest.raises(ChangeRejectedError, match="does not replicate"):
        a.decode("no_such_table", [good])
    assert rows(store) == {}


def test_a_batch_that_fails_half_way_leaves_neither_rows_nor_checkpoint(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = Replicator(store)
    batch = a.decode("workflow_tasks", [encoded(a, f"k{i}", pack(wall_ms()) + i, "node-x")
                                        for i in range(10)])
    a.apply("workflow_tasks", batch[:2], peer="node-x", cursor=batch[1]["change_version"])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crash after the rows were written")

    monkeypatch.setattr(a, "_advance_clock", crash)
    with pytest.raises(RuntimeError):
        a.apply("workflow_tasks", batch[2:], peer="node-x",
                cursor=batch[-1]["change_version"])
    assert sorted(rows(store)) == ["k0", "k1"]
    assert a.checkpoint("node-x", "workflow_tasks") == batch[1]["change_version"]
    monkeypatch.undo()
    a.apply("workflow_tasks", batch[2:], peer="node-x", cursor=batch[-1]["change_version"])
    assert len(rows(store)) == 10


def test_tombstones_go_once_every_peer_acknowledged_and_a_late_peer_resyncs(
    store: Store, other: Store, tmp_path: Path,
) -> None:
    # one writer here: no out-of-order commits to wait for, so the feed need not lag
    a, b = Replicator(store, feed_lag_ms=0), Replicator(other)
    for i in range(50):
        put(store, f"k{i}")
    pull(b, a)
    # a third node pulled everything once, then went away
    late_url = f"sqlite:///{tmp_path / 'late.sqlite'}"
    with open_store(late_url, resolve_settings(store_url=late_url,
                                               data_dir=tmp_path / "d3")) as late_store:
        late_store.create_schema()
        late = Replicator(late_store)
        pull(late, a)
        assert len(rows(late_store)) == 50
        for i in range(40):
            delete(store, f"k{i}")
        # b has not acknowledged the deletes yet, nor has the late node: nothing is collected
        assert a.collect_tombstones().get("workflow_tasks", 0) == 0
        pull(b, a)
        a.changes("workflow_tasks", cursor=encode_cursor(b.checkpoint(a.node_id,
                                                                      "workflow_tasks")),
                  reader=b.node_id)  # b's next pull acknowledges what it applied
        assert a.collect_tombstones().get("workflow_tasks", 0) == 0  # the late node holds out
        # the late node stays away past the retention: tombstones no longer wait for it
        with store.transaction() as conn:
            conn.execute(sa.update(CHECKPOINT_TABLE).where(
                CHECKPOINT_TABLE.c.peer_id == late.node_id).values(
                acked_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)))
        a.retention_s = 86400
        assert a.collect_tombstones()["workflow_tasks"] == 40
        assert len(rows(store)) == 10 and a.horizon("workflow_tasks") > 0
        # b deleted nothing it should not have; the late node is told to resync fully
        with pytest.raises(ResyncRequiredError):
            a.changes("workflow_tasks",
                      cursor=encode_cursor(late.checkpoint(a.node_id, "workflow_tasks")),
                      reader=late.node_id)
        full = a.changes("workflow_tasks", limit=1000, reader=late.node_id)
        seen = {(r["task_id"],) for r in full.changes}
        assert late.prune_unseen("workflow_tasks", seen, full.horizon) == 40
        assert sorted(rows(late_store)) == sorted(rows(store))


def test_tombstones_stay_bounded_once_acknowledged(store: Store, other: Store) -> None:
    a, b = Replicator(store, feed_lag_ms=0), Replicator(other)
    for round_ in range(4):
        with store.transaction() as conn:
            batch = store.stamp(T, [task_row(f"r{round_}-{i}") for i in range(250)],
                                connection=conn)
            store.upsert(T, batch, connection=conn)
        with store.transaction() as conn:
            keys = [f"r{round_}-{i}" for i in range(250)]
            for key in keys:
                conn.execute(sa.update(T).where(T.c.task_id == key).values(
                    store.stamp(T, [{"deleted_at": dt.datetime.now(dt.timezone.utc)}],
                                connection=conn)[0]))
        pull(b, a, batch=500)
        a.changes("workflow_tasks", cursor=encode_cursor(b.checkpoint(a.node_id,
                                                                      "workflow_tasks")),
                  reader=b.node_id)
        a.collect_tombstones()
    left = len(rows(store))
    assert left < 1000 * 0.01, f"{left} tombstones left of 1000 deletes"


def test_a_host_table_replicates_once_registered(store: Store, other: Store) -> None:
    meta = sa.MetaData()
    table = sa.Table(
        "host_notes", meta,
        sa.Column("note_id", sa.String(36), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("stars", sa.Integer),
        sa.Column("origin_node", sa.String(36), nullable=False),
        sa.Column("change_version", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    plain = sa.Table("host_plain", meta, sa.Column("id", sa.Integer, primary_key=True))
    for s in (store, other):
        with s.transaction() as conn:
            meta.create_all(conn)
    reg_a, reg_b = ReplicatedTables(), ReplicatedTables()
    with pytest.raises(ValueError, match="lacks the column"):
        reg_a.register(plain)
    reg_a.register(table)
    reg_b.register(table)
    assert "host_notes" in reg_a.names()
    a, b = Replicator(store, reg_a), Replicator(other, reg_b)
    with store.transaction() as conn:
        conn.execute(sa.insert(table), [
            {"note_id": "n1", "body": "hello", "stars": 3, "origin_node": store.node_id,
             "change_version": pack(wall_ms())}])
    assert pull(b, a, table="host_notes") == 1
    assert rows(other, table)["n1"]["body"] == "hello"
    with pytest.raises(ChangeRejectedError, match="unknown column"):
        b.decode("host_notes", [{**a.changes("host_notes").changes[0], "evil": 1}])
    # unregistered: refused
    reg_b.unregister("host_notes")
    with pytest.raises(ChangeRejectedError, match="does not replicate"):
        b.decode("host_notes", a.changes("host_notes").changes)


def test_peer_bookkeeping_tables_are_not_replicated() -> None:
    import rubix_integration.tokens.models  # noqa: F401  (the token tables join the metadata)

    names = ReplicatedTables().names()
    assert "workflow_tasks" in names and "tokenrecords" in names
    assert PEER_TABLE.name not in names and CHECKPOINT_TABLE.name not in names


def test_provenance_records_are_copied_verified_and_never_duplicated(
    store_url: str, tmp_path: Path,
) -> None:
    from rubix_integration import Manager

    other_url = f"sqlite:///{tmp_path / 'prov-b.sqlite'}"
    with Manager(store_url=store_url, data_dir=tmp_path / "pa") as ma, \
            Manager(store_url=other_url, data_dir=tmp_path / "pb") as mb:
        cids = [ma.log_event("demo", {"n": i}) for i in range(5)]
        mb.log_event("local", {"on": "b"})
        a, b = Replicator(ma.store, feed_lag_ms=0), Replicator(mb.store)
        assert "provenance_records" in a.tables.names()
        assert pull(b, a, table="provenance_records", batch=2) == 5
        assert pull(b, a, table="provenance_records") == 0  # nothing twice
        for cid in cids:
            assert mb.provenance.get(cid).data is not None
        report = mb.verify_provenance()
        assert report.ok, report
        # a record whose content does not hash to its CID is refused
        feed = a.changes("provenance_records", limit=1)
        forged = {**feed.changes[0], "block": feed.changes[0]["block"].replace("0", "1", 1)}
        with pytest.raises(ChangeRejectedError, match="does not hash"):
            b.apply("provenance_records", b.decode("provenance_records", [forged]))
        # the local id and publishing state stay behind
        assert "id" not in feed.changes[0] and "published" not in feed.changes[0]


def _typed_table() -> sa.Table:
    """A host table with a column of each type the checks know."""
    return sa.Table(
        "host_typed", sa.MetaData(),
        sa.Column("item_id", sa.String(36), primary_key=True),
        sa.Column("flag", sa.Boolean),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("ratio", sa.Float),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
        sa.Column("day", sa.Date),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("ident", sa.Uuid),
        sa.Column("label", sa.String(8)),
        sa.Column("body", sa.JSON),
        sa.Column("origin_node", sa.String(36), nullable=False),
        sa.Column("change_version", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )


def _typed_rows(count: int) -> list[dict[str, Any]]:
    import uuid

    bodies: list[Any] = [{"a": [1, None, "null"]}, ["é", "\u2603", {"deep": {"x": 1.5}}],
                         None, "text", 1 << 62, [], {}, True, 7, -2.25]
    return [{"item_id": f"i{i}", "flag": [True, False, None][i % 3], "count": i - 3,
             "ratio": [0.5, 2, None][i % 3], "price": "12.30", "seen_at":
             "2026-01-02T03:04:05.123456+00:00" if i % 2 else None, "day": "2026-01-02",
             "blob": "aGVsbG8=", "ident": str(uuid.UUID(int=i)), "label": "x" * (i % 8),
             "body": bodies[i % len(bodies)], "origin_node": "node-x",
             "change_version": pack(wall_ms()) + i, "deleted_at": None}
            for i in range(count)]


@pytest.mark.parametrize(("change", "message"), [
    ({"flag": 1}, "expected a boolean"),
    ({"count": None}, "null where"),
    ({"count": 1 << 63}, "64-bit range"),
    ({"count": 2.0}, "expected an integer"),
    ({"ratio": "1"}, "expected a number"),
    ({"ratio": False}, "expected a number"),
    ({"price": [1]}, "expected a decimal"),
    ({"seen_at": "yesterday"}, "host_typed.seen_at"),
    ({"blob": "not base64!"}, "host_typed.blob"),
    ({"ident": "nope"}, "host_typed.ident"),
    ({"label": "x" * 9}, "exceeds the column"),
    ({"label": 7}, "expected text"),
])
def test_checks_of_a_whole_batch_refuse_what_row_checks_refuse(
        store: Store, change: dict[str, Any], message: str) -> None:
    tables = ReplicatedTables()
    tables.register(_typed_table())
    a = Replicator(store, tables)
    good = _typed_rows(40)
    codec = tables.codec("host_typed")
    # a good batch decodes to exactly what decoding row by row gives
    assert a.decode("host_typed", good) == [codec.decode(r) for r in good]
    assert a.decode("host_typed", good)[1]["ratio"] == 2.0
    assert isinstance(a.decode("host_typed", good)[1]["ratio"], float)
    bad = [*good[:20], {**good[20], **change}, *good[21:]]
    with pytest.raises(ChangeRejectedError, match=message) as caught:
        a.decode("host_typed", bad, peer="node-x")
    with pytest.raises(ChangeRejectedError) as one:
        codec.decode({**good[20], **change}, peer="node-x")
    assert str(caught.value) == str(one.value)
    # the rows handed in are left as they were
    assert [r["ratio"] for r in good[:3]] == [0.5, 2, None]
    assert isinstance(good[1]["ratio"], int)
    # decoded in place (rows just parsed): a refused batch is left as it came, a good one
    # becomes what a copy would
    with pytest.raises(ChangeRejectedError, match=message):
        a.decode("host_typed", bad, peer="node-x", copy=False)
    assert bad[1]["seen_at"] == good[1]["seen_at"] and isinstance(bad[1]["seen_at"], str)
    expected = a.decode("host_typed", good)
    assert a.decode("host_typed", good, copy=False) == expected
    assert good == expected


def test_a_served_feed_is_the_feed_and_json_columns_arrive_intact(
        store: Store, other: Store) -> None:
    import json

    table = _typed_table()
    for s in (store, other):
        with s.transaction() as conn:
            table.metadata.create_all(conn)
    reg_a, reg_b = ReplicatedTables(), ReplicatedTables()
    reg_a.register(table)
    reg_b.register(table)
    a, b = Replicator(store, reg_a), Replicator(other, reg_b)
    src = a.decode("host_typed", _typed_rows(30))
    a.apply("host_typed", src, peer="node-x")
    ninth = encode_cursor(src[9]["change_version"])
    for cursor, limit in ((None, 1000), (None, 7), (ninth, 5)):
        body = a.changes_json("host_typed", cursor=cursor, limit=limit)
        feed = a.changes("host_typed", cursor=cursor, limit=limit)
        served, direct = json.loads(body), json.loads(json.dumps(feed.as_dict()))
        # (a PostgreSQL cursor that caught up trails the wall clock, read at each call)
        served.pop("cursor")
        direct.pop("cursor")
        assert served == direct and served["count"] > 0
    # b pulls a's feed as served over HTTP: every value arrives as a wrote it
    cursor_b = 0
    while True:
        data = json.loads(a.changes_json("host_typed", cursor=encode_cursor(cursor_b),
                                         limit=8, reader=b.node_id))
        b.apply("host_typed", b.decode("host_typed", data["changes"], peer=a.node_id),
                peer=a.node_id, cursor=decode_cursor(data["cursor"]))
        cursor_b = decode_cursor(data["cursor"])
        if not data["has_more"]:
            break
    def same_instants(found: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
        # SQLite gives timestamps back without their zone (UTC), PostgreSQL with it
        return {k: {c: v.replace(tzinfo=dt.timezone.utc)
                    if isinstance(v, dt.datetime) and v.tzinfo is None else v
                    for c, v in r.items()} for k, r in found.items()}

    assert same_instants(rows(other, table)) == same_instants(rows(store, table))
    assert rows(other, table)["i1"]["body"] == ["é", "\u2603", {"deep": {"x": 1.5}}]
    assert rows(other, table)["i2"]["body"] is None
    assert rows(other, table)["i4"]["body"] == 1 << 62
    # a float the JSON of a feed cannot carry is refused as before, not sent as null
    with store.transaction() as conn:
        conn.execute(sa.update(table).where(table.c.item_id == "i0").values(
            ratio=float("inf")))  # (SQLite keeps no NaN: it stores NULL)
    with pytest.raises(ValueError):
        a.changes_json("host_typed", limit=1000)
