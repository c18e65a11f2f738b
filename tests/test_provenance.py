"""The provenance log on real stores: encoding, chains, queries, tampering, export, hooks."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import sqlalchemy as sa
from multiformats import CID as RefCID

from rubix_integration import Manager, hookimpl
from rubix_integration.codecs import CID, dagjson, parse_cid
from rubix_integration.provenance import (
    MAX_RECORD_BYTES,
    InvalidDataError,
    PayloadTooLargeError,
    ProvenanceLogger,
    RecordNotFoundError,
)
from rubix_integration.provenance.models import PROVENANCE_TABLE

T = PROVENANCE_TABLE


# --- the encoding --------------------------------------------------------------------------------


def test_canonical_dag_json_sorts_keys_by_utf8_bytes_and_strips_whitespace() -> None:
    value = {"b": 1, "a": [True, None, "x\n\"y"], "é": {"z": 1, "aa": 2}, "aa": -3, "Z": ""}
    assert dagjson.encode(value) == (
        '{"Z":"","a":[true,null,"x\\n\\"y"],"aa":-3,"b":1,"é":{"aa":2,"z":1}}'.encode())
    # a key outside the basic plane sorts by its UTF-8 bytes, after U+FFFF
    assert dagjson.encode({"\U0001f600": 1, "\uffff": 2}) == '{"\uffff":2,"\U0001f600":1}'.encode()


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1.0"), (0.1, "0.1"), (-2.5, "-2.5"), (1e21, "1e+21"), (1e-7, "1e-7"),
    (1.5e16, "15000000000000000.0"), (0.000001, "0.000001"), (123.456, "123.456"),
    (5e-324, "5e-324"), (0.0, "0.0"),
])
def test_floats_are_written_as_ecmascript_does(value: float, text: str) -> None:
    assert dagjson.format_float(value) == text
    assert float(text) == value


def test_bytes_and_links_round_trip() -> None:
    link = parse_cid("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    value = {"raw": b"\x00\xffhi", "link": link, "list": [link, b""]}
    block = dagjson.encode(value)
    assert b'{"/":{"bytes":"AP9oaQ"}}' in block
    assert b'{"/":"bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}' in block
    assert dagjson.decode(block) == value


@pytest.mark.parametrize("bad", [
    {"x": {1, 2}}, {1: "a"}, {"x": math.nan}, {"x": math.inf}, {"x": 2**64},
    {"x": object()}, {"/": "not allowed"}, {"s": "\ud800"},
])
def test_values_without_a_dag_json_form_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidDataError):
        dagjson.encode(bad)


def test_cid_is_cidv1_dag_json_sha256_and_matches_the_reference_library() -> None:
    block = dagjson.encode({"hello": "world"})
    text = dagjson.cid_text_for_block(block)
    ref = RefCID.decode(text)
    assert ref.version == 1 and ref.codec.name == "dag-json" and ref.hashfun.name == "sha2-256"
    import hashlib

    assert bytes(ref.raw_digest) == hashlib.sha256(block).digest()
    assert str(dagjson.cid_for_block(block)) == text


# --- appending and reading -----------------------------------------------------------------------


def test_records_chain_and_read_back(manager: Manager) -> None:
    first = manager.log_event("ingest", {"file": "a.csv", "rows": 3, "ratio": 0.5})
    second = manager.track_provenance("clean", {"dropped": 1})
    third = manager.log_inference("resnet50", {"score": 0.93, "input": {"id": 7}})
    fourth = manager.log_transformation("resize", {"w": 64}, input_cid=first, output_cid=[third])
    fifth = manager.log_worker_execution("w1", "t1", {"seconds": 1.5})
    sixth = manager.log_pr_activity(42, "merged", {"by": "alice"})
    logger = manager.provenance
    records = [logger.get(c) for c in (first, second, third, fourth, fifth, sixth)]
    assert [r.seq for r in records] == list(range(6))
    assert records[0].prev is None
    assert [r.prev for r in records[1:]] == [r.cid for r in records[:-1]]
    assert records[2].data == {"model": "resnet50", "score": 0.93, "input": {"id": 7}}
    assert records[3].data["input"] == parse_cid(first)
    assert records[3].data["output"] == [parse_cid(third)]
    assert records[4].data["worker_id"] == "w1" and records[5].data["pr_number"] == 42
    # the stored block is exactly what the CID names
    for record in records:
        block = logger.get_block(record.cid)
        assert str(dagjson.cid_for_block(block)) == record.cid
        decoded = dagjson.decode(block)
        assert decoded["type"] == record.type and decoded["seq"] == record.seq
    assert logger.verify().ok


def test_unknown_cid_is_reported(manager: Manager) -> None:
    with pytest.raises(RecordNotFoundError):
        manager.provenance.get("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    with pytest.raises(RecordNotFoundError):
        manager.provenance.get("not a cid")


def test_bad_data_writes_nothing(manager: Manager) -> None:
    manager.log_event("ok", {"a": 1})
    with pytest.raises(InvalidDataError, match="not representable"):
        manager.log_event("bad", {"when": object()})
    with pytest.raises(InvalidDataError):
        manager.provenance.append_many([("ok", {"a": 2}), ("bad", {"x": {1}})])
    with pytest.raises(PayloadTooLargeError) as info:
        manager.log_event("huge", {"blob": "x" * MAX_RECORD_BYTES})
    assert info.value.limit == MAX_RECORD_BYTES
    with pytest.raises(InvalidDataError):
        manager.log_inference("m", {"model": "other"})
    assert manager.provenance.count() == 1
    # the chain goes on from the last good record
    manager.log_event("ok", {"a": 3})
    assert manager.provenance.verify().ok
    assert manager.provenance.count() == 2


def test_queries_by_type_time_and_nested_fields(manager: Manager) -> None:
    logger = manager.provenance
    logger.append_many([
        ("inference", {"model": {"name": "bert", "version": 2}, "ok": True, "score": 0.5}),
        ("inference", {"model": {"name": "gpt", "version": 3}, "ok": False, "score": 2}),
        ("training", {"model": {"name": "bert", "version": 2}, "ok": True, "note": None}),
    ])
    assert len(manager.query_logs({"type": "inference"})) == 2
    bert = manager.query_logs({"data.model.name": "bert"})
    assert {r.type for r in bert} == {"inference", "training"}
    assert [r.type for r in manager.query_logs(
        {"type": "inference", "data": {"model": {"name": "bert", "version": 2}}})] == ["inference"]
    assert len(manager.query_logs({"data.ok": True})) == 2
    assert len(manager.query_logs({"data.ok": False})) == 1
    assert len(manager.query_logs({"data.score": 2})) == 1
    assert len(manager.query_logs({"data.note": None})) == 1
    assert manager.query_logs({"data.model.name": "nobody"}) == []
    everything = manager.query_logs()
    assert [r.seq for r in everything] == [2, 1, 0]  # newest first
    middle = everything[1]
    assert [r.seq for r in manager.query_logs(since=middle.timestamp)] == [2, 1]
    assert [r.seq for r in manager.query_logs(until=middle.timestamp)] == [0]
    assert len(manager.query_logs(limit=1)) == 1
    # a key that is not a column names a top-level field of the data
    assert manager.query_logs({"colour": "red"}) == []
    assert [r.type for r in manager.query_logs({"type": "inference", "model": {"name": "bert"}})
            ] == ["inference"]
    assert manager.query_logs({"ok": True}) == manager.query_logs({"data.ok": True})


def test_each_logger_writes_its_own_chain_and_a_named_chain_resumes(store_url: str) -> None:
    with Manager(store_url=store_url) as one, Manager(store_url=store_url) as two:
        a = one.log_event("x", {"i": 1})
        b = two.log_event("x", {"i": 2})
        assert one.provenance.get(a).chain != two.provenance.get(b).chain
        named = ProvenanceLogger(one, chain="audit")
        first = named.log_event("x", {"i": 3})
        again = ProvenanceLogger(two, chain="audit")
        second = again.log_event("x", {"i": 4})
        assert again.get(second).prev == first and again.get(second).seq == 1
        report = one.provenance.verify()
        assert report.ok and report.chains == 3 and report.records == 4


def test_hook_announces_each_committed_record(store_url: str) -> None:
    seen: list[dict[str, Any]] = []

    class Forwarder:
        @hookimpl
        def provenance_recorded(self, manager: Manager, record: dict[str, Any]) -> None:
            seen.append(record)

    with Manager(store_url=store_url, plugins=[Forwarder()]) as manager:
        cid = manager.log_event("ping", {"b": b"\x01"})
        with pytest.raises(InvalidDataError):
            manager.log_event("bad", {"x": math.nan})
    assert [r["cid"] for r in seen] == [cid]
    assert seen[0]["type"] == "ping" and seen[0]["prev"] is None
    assert seen[0]["data"] == {"b": {"/": {"bytes": "AQ"}}}
    json.dumps(seen[0])  # plain JSON


# --- tampering -----------------------------------------------------------------------------------


@pytest.fixture
def chain(manager: Manager) -> list[str]:
    return [manager.log_event("step", {"n": i, "who": {"name": f"u{i}"}}) for i in range(6)]


def _problems(manager: Manager) -> list[tuple[str, int]]:
    report = manager.provenance.verify()
    assert not report.ok
    return sorted({(p.kind, p.seq) for p in report.problems})


def test_verify_catches_an_altered_data_column(manager: Manager, chain: list[str]) -> None:
    with manager.store.transaction() as conn:
        row = conn.execute(sa.select(T.c.data).where(T.c.cid == chain[2])).scalar_one()
        data = row if isinstance(row, dict) else json.loads(row)
        data["who"]["name"] = "mallory"
        conn.execute(sa.update(T).where(T.c.cid == chain[2]).values(data=data))
    assert _problems(manager) == [("altered", 2)]


def test_verify_catches_an_altered_block(manager: Manager, chain: list[str]) -> None:
    with manager.store.transaction() as conn:
        block = conn.execute(sa.select(T.c.block).where(T.c.cid == chain[3])).scalar_one()
        conn.execute(sa.update(T).where(T.c.cid == chain[3])
                     .values(block=block.replace('"u3"', '"u9"')))
    report = manager.provenance.verify()
    assert {(p.kind, p.seq, p.cid) for p in report.problems} == {("altered", 3, chain[3])}


def test_verify_catches_a_rewritten_record_with_a_recomputed_cid(
    manager: Manager, chain: list[str]
) -> None:
    with manager.store.transaction() as conn:
        block = conn.execute(sa.select(T.c.block).where(T.c.cid == chain[1])).scalar_one()
        forged = block.replace('"u1"', '"zz"')
        new_cid = dagjson.cid_text_for_block(forged.encode())
        data = json.loads(forged)["data"]
        conn.execute(sa.update(T).where(T.c.cid == chain[1])
                     .values(block=forged, cid=new_cid, data=data))
    report = manager.provenance.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("altered", 1)]
    assert "next record links" in report.problems[0].detail


def test_verify_catches_a_removed_record(manager: Manager, chain: list[str]) -> None:
    with manager.store.transaction() as conn:
        conn.execute(sa.delete(T).where(T.c.cid == chain[4]))
    report = manager.provenance.verify()
    assert [(p.kind, p.seq, p.cid) for p in report.problems] == [("removed", 5, chain[5])]
    assert chain[4] in report.problems[0].detail


def test_verify_catches_reordered_records(manager: Manager, chain: list[str]) -> None:
    with manager.store.transaction() as conn:
        conn.execute(sa.update(T).where(T.c.cid == chain[1]).values(seq=-1))
        conn.execute(sa.update(T).where(T.c.cid == chain[2]).values(seq=1))
        conn.execute(sa.update(T).where(T.c.cid == chain[1]).values(seq=2))
    report = manager.provenance.verify()
    assert {(p.kind, p.cid) for p in report.problems} == {
        ("reordered", chain[1]), ("reordered", chain[2])}


# --- export and status ---------------------------------------------------------------------------


def test_prov_json_export_has_entities_activities_and_agents(manager: Manager) -> None:
    source = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    out = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
    manager.log_inference("resnet", {"score": 1})
    cid = manager.log_transformation("resize", {"w": 1}, input_cid=source, output_cid=out)
    manager.log_worker_execution("w7", "t1", {})
    doc = json.loads(manager.provenance.export_prov_json())
    assert f"ipfs:{cid}" in doc["entity"]
    assert f"ipfs:{source}" in doc["entity"] and f"ipfs:{out}" in doc["entity"]
    assert f"rubix:activity-{cid}" in doc["activity"]
    agents = set(doc["agent"])
    assert "rubix:model-resnet" in agents and "rubix:worker-w7" in agents
    assert any(a.startswith("rubix:node-") for a in agents)
    assert any(u["prov:entity"] == f"ipfs:{source}" for u in doc["used"].values())
    assert any(d["prov:generatedEntity"] == f"ipfs:{out}"
               and d["prov:usedEntity"] == f"ipfs:{source}"
               for d in doc["wasDerivedFrom"].values())
    # the prov library reads its own output back
    from prov.model import ProvDocument

    again = ProvDocument.deserialize(content=json.dumps(doc), format="json")
    assert len(again.get_records()) > 0


def test_status_says_records_are_local_until_published(manager: Manager) -> None:
    manager.log_event("a", {})
    status = manager.provenance.status()
    assert status["records"] == 1 and status["local_only"] == 1
    assert "local" in status["mode"]


def test_publish_pushes_blocks_to_an_ipfs_backend(manager: Manager, tmp_path: Any) -> None:
    from rubix_integration.ipfs.base import IPFSContext
    from rubix_integration.ipfs.local import LocalBackend

    cids = [manager.log_event("a", {"i": i, "raw": b"\x00"}) for i in range(3)]
    backend = LocalBackend(IPFSContext(settings=manager.settings, ipfs_path=None,
                                       options={"local_path": str(tmp_path / "blocks")}))
    assert manager.provenance.publish(backend) == 3
    for cid in cids:
        assert backend.get_block(cid) == manager.provenance.get_block(cid)
    assert manager.provenance.publish(backend) == 0
    status = manager.provenance.status()
    assert status["published"] == 3 and status["local_only"] == 0


def test_links_accept_cid_objects(manager: Manager) -> None:
    link = CID(1, 0x55, b"\x12\x20" + bytes(32))
    cid = manager.log_transformation("t", None, input_cid=link)
    assert manager.provenance.get(cid).data["input"] == link
    with pytest.raises(InvalidDataError):
        manager.log_transformation("t", None, input_cid="nope")
