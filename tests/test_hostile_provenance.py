"""Hostile inputs to the provenance log, on both stores: stored rows changed behind its back,
filters built to break the queries, and chains cut or rewritten below a signed checkpoint."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rubix_integration import InvalidFilterError, Manager, RubixError
from rubix_integration.codecs import dagjson, parse_cid
from rubix_integration.provenance import ProvenanceLogger
from rubix_integration.provenance.models import PROVENANCE_TABLE

T = PROVENANCE_TABLE
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture
def manager(store_url: str, tmp_path: Path) -> Iterator[Manager]:
    with Manager(store_url=store_url, data_dir=tmp_path / "data") as m:
        yield m


def _dialect(manager: Manager) -> str:
    return str(manager.store.engine.dialect.name)


def _set_json_field(manager: Manager, cid: str, field: str, literal: str) -> None:
    """Write ``literal`` (JSON text) as ``data.<field>`` of record ``cid`` with raw SQL."""
    if _dialect(manager) == "postgresql":
        sql = ("UPDATE provenance_records SET data = jsonb_set(data, CAST(:path AS text[]), "
               "CAST(:value AS jsonb)) WHERE cid = :cid")
        path = "{" + field + "}"
    else:
        sql = "UPDATE provenance_records SET data = json_set(data, :path, json(:value)) " \
              "WHERE cid = :cid"
        path = f"$.{field}"
    with manager.store.transaction() as conn:
        result = conn.execute(sa.text(sql), {"path": path, "value": literal, "cid": cid})
        assert result.rowcount == 1


# --- verify() compares what is stored exactly, types included ----------------------------------


@pytest.mark.parametrize(("recorded", "literal", "changed"), [
    (1, "true", True),
    (0, "false", False),
    (10, "10.0", 10.0),
], ids=["1-to-true", "0-to-false", "10-to-10.0"])
def test_verify_catches_a_changed_json_type(
    manager: Manager, recorded: int, literal: str, changed: Any
) -> None:
    cid = manager.log_event("step", {"n": recorded, "note": "kept"})
    manager.log_event("step", {"n": 2})
    assert manager.provenance.verify().ok
    _set_json_field(manager, cid, "n", literal)
    # the change is visible to readers: the value comes back with the other type
    seen = manager.provenance.get(cid).data["n"]
    assert seen == changed and type(seen) is type(changed)
    report = manager.provenance.verify()
    assert [(p.kind, p.cid) for p in report.problems] == [("altered", cid)]
    assert "data" in report.problems[0].detail


def test_verify_catches_a_changed_type_inside_a_list(manager: Manager) -> None:
    cid = manager.log_event("step", {"n": [1, {"k": 0}]})
    _set_json_field(manager, cid, "n", '[true, {"k": false}]')
    assert [(p.kind, p.cid) for p in manager.provenance.verify().problems] == [("altered", cid)]


@pytest.mark.parametrize("batch", [1, 8], ids=["one-record", "bulk"])
def test_verify_accepts_numbers_as_the_store_gives_them_back(manager: Manager, batch: int) -> None:
    # PostgreSQL keeps JSON numbers as numeric, which drops the ".0" of large integral floats:
    # those records are intact and must verify
    data = {"big": 1e300, "f": 1.5e16, "g": 1e21, "tiny": 5e-324, "neg": -2.5e-8, "i": INT64_MAX,
            "u": 2**64 - 1, "zero": -0.0, "x": 0.1}
    manager.provenance.append_many([("n", data)] * batch)
    report = manager.provenance.verify()
    assert report.ok, report.problems


def test_verify_still_catches_a_changed_number(manager: Manager) -> None:
    cid = manager.log_event("step", {"f": 1.5e16, "i": 7})
    _set_json_field(manager, cid, "f", "15000000000000001")
    assert [(p.kind, p.cid) for p in manager.provenance.verify().problems] == [("altered", cid)]


# --- filters are checked before any SQL runs -------------------------------------------------


BAD_FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("int-above-int64", {"data.x": INT64_MAX + 1}),
    ("int-below-int64", {"data.x": INT64_MIN - 1}),
    ("int-2**70", {"data.x": 2**70}),
    ("list-value", {"data.x": [1, 2]}),
    ("dict-in-list", {"data.x": [{"a": 1}]}),
    ("tuple-value", {"data.x": (1,)}),
    ("bytes-value", {"data.x": b"\x00"}),
    ("nan", {"data.x": math.nan}),
    ("inf", {"data.x": math.inf}),
    ("-inf", {"data": {"x": -math.inf}}),
    ("nul-in-value", {"data.x": "a\x00b"}),
    ("nul-in-key", {"data.a\x00b": 1}),
    ("nul-in-nested-key", {"data": {"a\x00": 1}}),
    ("surrogate-in-value", {"data.x": "\ud800"}),
    ("surrogate-in-key", {"data.\udfff": 1}),
    ("non-text-nested-key", {"data": {1: "a"}}),
    ("empty-path-part", {"data.a..b": 1}),
    ("trailing-dot", {"data.a.": 1}),
    ("published-text", {"published": "yes"}),
    ("published-int", {"published": 1}),
    ("type-int", {"type": 5}),
    ("type-list", {"type": ["a", "b"]}),
    ("chain-nul", {"chain": "a\x00"}),
    ("cid-nul", {"cid": "bafy\x00"}),
    ("cid-int", {"cid": 3}),
    ("origin-node-none", {"origin_node": None}),
    ("prev-nan", {"prev": math.nan}),
    ("field-nul", {"colour\x00": "red"}),
    ("field-list-value", {"colour": ["red"]}),
    ("1000-dotted-levels", {"data." + ".".join(["a"] * 1000): 1}),
    ("65-dotted-levels", {"data." + ".".join(["a"] * 65): 1}),
    ("empty-data-mapping", {"data": {}}),
    ("data-scalar", {"data": 3}),
]


def _deep(levels: int, leaf: Any) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(levels):
        value = {"a": value}
    return dict(value)


@pytest.mark.parametrize("filters", [f for _, f in BAD_FILTERS], ids=[n for n, _ in BAD_FILTERS])
def test_bad_filters_are_refused_alike_on_every_store(
    manager: Manager, filters: dict[str, Any]
) -> None:
    manager.log_event("step", {"x": 1, "a": {"b": 1}})
    for call in (lambda: manager.query_logs(filters), lambda: manager.provenance.count(filters),
                 lambda: manager.provenance.export_prov_json(filters)):
        with pytest.raises(InvalidFilterError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, RubixError)
        assert info.value.filter is not None and str(info.value)


def test_nested_mappings_too_deep_are_refused_without_recursion(manager: Manager) -> None:
    for filters in ({"data": _deep(1000, 1)}, {"data": _deep(65, 1)}, _deep(5000, 1)):
        with pytest.raises(InvalidFilterError):
            manager.query_logs(filters)


def test_filters_must_be_a_mapping_with_text_keys(manager: Manager) -> None:
    for filters in ([("type", "x")], "type=x", {1: "x"}, {("data", "x"): 1}):
        with pytest.raises(InvalidFilterError):
            manager.query_logs(filters)  # type: ignore[arg-type]


def test_the_deepest_field_a_record_can_hold_is_found(manager: Manager) -> None:
    cid = manager.log_event("deep", _deep(64, 7))
    path = "data." + ".".join(["a"] * 64)
    assert [r.cid for r in manager.query_logs({path: 7})] == [cid]
    assert [r.cid for r in manager.query_logs({"data": _deep(64, 7)})] == [cid]
    assert manager.provenance.count({path: 7}) == 1


def test_integers_are_compared_within_64_bits_signed(manager: Manager) -> None:
    low = manager.log_event("n", {"x": INT64_MIN})
    high = manager.log_event("n", {"x": INT64_MAX})
    assert [r.cid for r in manager.query_logs({"data.x": INT64_MAX})] == [high]
    assert [r.cid for r in manager.query_logs({"data.x": INT64_MIN})] == [low]
    for outside in (INT64_MAX + 1, INT64_MIN - 1):
        with pytest.raises(InvalidFilterError, match="64-bit"):
            manager.query_logs({"data.x": outside})


def test_finite_floats_and_scalars_still_match(manager: Manager) -> None:
    cid = manager.log_event("n", {"f": 1e300, "s": "é\n\"", "t": True, "z": None, "g": -0.5})
    for filters in ({"data.f": 1e300}, {"data.s": "é\n\""}, {"data.t": True}, {"data.z": None},
                    {"data": {"g": -0.5, "t": True}}):
        assert [r.cid for r in manager.query_logs(filters)] == [cid], filters


def test_column_filters_of_the_right_type_still_match(manager: Manager) -> None:
    cid = manager.log_event("kind", {})
    record = manager.provenance.get(cid)
    for filters in ({"type": "kind"}, {"chain": record.chain}, {"origin_node": record.origin_node},
                    {"cid": cid}, {"cid": parse_cid(cid)}, {"prev": None},
                    {"published": False}):
        assert [r.cid for r in manager.query_logs(filters)] == [cid], filters
    assert manager.query_logs({"published": True}) == []


SECONDS_MAX = INT64_MAX // 1_000_000
SECONDS_MIN = -(-INT64_MIN // 1_000_000)


@pytest.mark.parametrize("name", ["since", "until"])
def test_time_bounds_are_checked(manager: Manager, name: str) -> None:
    manager.log_event("n", {})
    query = manager.provenance.query_logs
    # the widest times that fit in the store's microsecond column are accepted
    assert len(query(**{name: SECONDS_MAX})) == (1 if name == "until" else 0)
    assert len(query(**{name: SECONDS_MIN})) == (0 if name == "until" else 1)
    last_day = datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert len(query(**{name: last_day})) == (1 if name == "until" else 0)
    for bad in (SECONDS_MAX + 1, SECONDS_MIN - 1, 1e300, -1e300, math.nan, math.inf, True,
                [1], "garbage", "2025-01-01\x00"):
        with pytest.raises(InvalidFilterError) as info:
            manager.provenance.query_logs(**{name: bad})
        assert info.value.filter == name


@pytest.mark.parametrize("name", ["limit", "offset"])
def test_limit_and_offset_are_checked(manager: Manager, name: str) -> None:
    manager.provenance.append_many([("n", {"i": i}) for i in range(3)])
    assert len(manager.provenance.query_logs(**{name: 0})) == (0 if name == "limit" else 3)
    assert len(manager.provenance.query_logs(**{name: INT64_MAX})) == (3 if name == "limit" else 0)
    assert len(manager.provenance.query_logs(**{name: 1})) == (1 if name == "limit" else 2)
    for bad in (-1, INT64_MAX + 1, 1.5, "2", True, math.nan):
        with pytest.raises(InvalidFilterError) as info:
            manager.provenance.query_logs(**{name: bad})
        assert info.value.filter == name


ODD_KEYS = ["é", 'a"b', "a\\b", "\n", "😀", "a.b", "", "[0]", "x y", "\u2028", "\x7f", "$"]


@pytest.mark.parametrize("batch", [1, 8], ids=["one-record", "bulk"])
def test_field_names_of_any_text_are_matched_alike(manager: Manager, batch: int) -> None:
    # one record per key, written through each insert path (the stores keep the text differently)
    for key in ODD_KEYS:
        manager.provenance.append_many([("k", {key: {key: 1}, "key": key})] * batch)
    for key in ODD_KEYS:
        found = manager.query_logs({"data": {key: {key: 1}}}, limit=None)
        assert len(found) == batch and {r.data["key"] for r in found} == {key}, repr(key)
        assert manager.provenance.count({"data": {key: {key: 1}, "key": key}}) == batch
        if key and "." not in key:
            assert manager.provenance.count({f"data.{key}.{key}": 1}) == batch, repr(key)


# --- signed checkpoints anchor the chains ----------------------------------------------------


def _key_file(manager: Manager) -> Path:
    from rubix_integration.provenance.checkpoints import KEY_FILE_NAME

    return Path(manager.settings.data_dir) / KEY_FILE_NAME


def _steps(manager: Manager, count: int, start: int = 0) -> list[str]:
    return [r.cid for r in manager.provenance.append_many(
        [("step", {"n": i}) for i in range(start, start + count)])]


def _kinds(report: Any) -> list[tuple[str, int]]:
    return sorted((p.kind, p.seq) for p in report.problems)


def _rehash_from(manager: Manager, chain: str, start: int) -> None:
    """Rewrite every record of ``chain`` from ``start`` on with other data, recomputing each
    block, CID and link with the package's own encoder: a consistent chain, but another one."""
    with manager.store.connect() as conn:
        rows = conn.execute(sa.select(T.c.seq, T.c.block).where(
            T.c.chain == chain, T.c.seq >= start - 1).order_by(T.c.seq)).all()
    prev = json.loads(rows[0].block) if start else None
    prev_cid = dagjson.cid_text_for_block(rows[0].block.encode()) if start else None
    with manager.store.transaction() as conn:
        for row in rows[1:] if start else rows:
            block = json.loads(row.block)
            block["data"] = {"n": -block["seq"], "forged": True}
            block["prev"] = None if prev_cid is None else parse_cid(prev_cid)
            text = dagjson.encode(block).decode()
            cid = dagjson.cid_text_for_block(text.encode())
            conn.execute(sa.update(T).where(T.c.chain == chain, T.c.seq == row.seq).values(
                cid=cid, prev=prev_cid, data=block["data"], block=text))
            prev, prev_cid = block, cid
    assert prev is not None


def test_without_checkpoints_verify_works_and_says_the_chain_is_unanchored(
    manager: Manager,
) -> None:
    _steps(manager, 3)
    report = manager.provenance.verify()
    assert report.ok and report.records == 3 and report.checkpoints == 0
    assert report.unanchored == (manager.provenance.chain,)
    assert report.as_dict()["unanchored"] == [manager.provenance.chain]
    assert not _key_file(manager).exists()  # verifying creates no key


def test_a_checkpoint_signs_the_head_with_a_private_key_file(manager: Manager) -> None:
    cids = _steps(manager, 3)
    logger = manager.provenance
    checkpoint = manager.checkpoint_provenance()
    assert (checkpoint.chain, checkpoint.seq, checkpoint.head) == (logger.chain, 2, cids[-1])
    assert checkpoint.public_key == logger.public_key and len(checkpoint.signature) == 64
    key_file = _key_file(manager)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    _steps(manager, 2, start=3)
    report = logger.verify()
    assert report.ok and report.checkpoints == 1 and report.unanchored == ()
    # the block is DAG-JSON linking the head; its JSON form reads back to the same checkpoint
    from rubix_integration.provenance import Checkpoint

    block = dagjson.decode(checkpoint.block)
    assert block["head"] == parse_cid(cids[-1]) and block["seq"] == 2
    assert dagjson.cid_text_for_block(checkpoint.block) == checkpoint.cid
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again == checkpoint
    assert [c.cid for c in logger.checkpoints()] == [checkpoint.cid]
    # a second logger of this node (same data dir) uses the same key
    with Manager(store_url=str(manager.settings.store_url),
                 data_dir=manager.settings.data_dir) as other:
        assert other.provenance.public_key == logger.public_key
        assert other.provenance.verify().ok


@pytest.mark.parametrize("keep", [0, 2, 4], ids=["all-removed", "cut-below", "cut-at-head"])
def test_truncating_the_tail_below_a_checkpoint_is_detected(manager: Manager, keep: int) -> None:
    _steps(manager, 5)
    checkpoint = manager.provenance.checkpoint()
    with manager.store.transaction() as conn:
        conn.execute(sa.delete(T).where(T.c.chain == checkpoint.chain, T.c.seq >= keep))
    report = manager.provenance.verify()
    # the chain left is consistent: only the checkpoint tells
    assert [(p.kind, p.seq, p.cid) for p in report.problems] == [
        ("truncated", 4, checkpoint.head)]
    assert checkpoint.cid in report.problems[0].detail


def test_a_tail_appended_after_the_last_checkpoint_is_not_protected(manager: Manager) -> None:
    _steps(manager, 3)
    manager.provenance.checkpoint()
    _steps(manager, 3, start=3)
    with manager.store.transaction() as conn:
        conn.execute(sa.delete(T).where(T.c.seq >= 3))
    # the limit of an anchor, as documented: records after it can go unnoticed
    assert manager.provenance.verify().ok


@pytest.mark.parametrize("start", [0, 2, 4])
def test_a_rehashed_suffix_is_detected(manager: Manager, start: int) -> None:
    _steps(manager, 5)
    checkpoint = manager.provenance.checkpoint()
    _rehash_from(manager, checkpoint.chain, start)
    report = manager.provenance.verify()
    assert [(p.kind, p.seq, p.cid) for p in report.problems] == [
        ("rewritten", 4, checkpoint.head)]


def test_a_forged_signature_is_detected(manager: Manager) -> None:
    from rubix_integration.provenance.checkpoints import CHECKPOINT_TABLE

    _steps(manager, 2)
    checkpoint = manager.provenance.checkpoint()
    forged = dagjson.decode(checkpoint.block)
    forged["signature"] = bytes([forged["signature"][0] ^ 1]) + forged["signature"][1:]
    with manager.store.transaction() as conn:
        conn.execute(sa.update(CHECKPOINT_TABLE).values(block=dagjson.encode(forged).decode()))
    report = manager.provenance.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint", 1)]
    assert "signature" in report.problems[0].detail
    assert report.unanchored == (checkpoint.chain,)


def test_a_moved_head_under_an_old_signature_is_detected(manager: Manager) -> None:
    from rubix_integration.provenance.checkpoints import CHECKPOINT_TABLE

    cids = _steps(manager, 3)
    checkpoint = manager.provenance.checkpoint()
    moved = dagjson.decode(checkpoint.block)
    moved["seq"], moved["head"] = 1, parse_cid(cids[1])
    with manager.store.transaction() as conn:
        conn.execute(sa.update(CHECKPOINT_TABLE).values(block=dagjson.encode(moved).decode()))
    assert _kinds(manager.provenance.verify()) == [("checkpoint", 1)]


def test_a_checkpoint_signed_by_another_key_is_detected(manager: Manager) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _steps(manager, 2)
    intruder = ProvenanceLogger(manager, chain=manager.provenance.chain,
                                signing_key=Ed25519PrivateKey.generate())
    _rehash_from(manager, intruder.chain, 0)
    forged = intruder.checkpoint()  # signs the rewritten head with a key of its own
    report = manager.provenance.verify()
    assert [(p.kind, p.cid) for p in report.problems] == [("checkpoint", forged.cid)]
    assert "not trusted" in report.problems[0].detail
    # trusted explicitly, the same checkpoint anchors the chain
    assert manager.provenance.verify(trusted_keys=[forged.public_key.hex()]).ok
    assert not _key_file(manager).exists()  # a key given by the caller is not written


def test_garbage_in_the_checkpoint_table_is_reported(manager: Manager) -> None:
    from rubix_integration.provenance.checkpoints import CHECKPOINT_TABLE

    _steps(manager, 1)
    manager.provenance.checkpoint()
    with manager.store.transaction() as conn:
        conn.execute(sa.update(CHECKPOINT_TABLE).values(block='{"chain": 1}'))
    assert [p.kind for p in manager.provenance.verify().problems] == ["checkpoint"]


def test_an_exported_checkpoint_outlives_the_store(manager: Manager, tmp_path: Path) -> None:
    from rubix_integration.provenance import Checkpoint
    from rubix_integration.provenance.checkpoints import CHECKPOINT_TABLE

    _steps(manager, 4)
    exported = tmp_path / "checkpoint.json"
    exported.write_text(manager.provenance.checkpoint().to_json())
    # someone with write access to the store cuts the chain and the stored checkpoints
    with manager.store.transaction() as conn:
        conn.execute(sa.delete(T).where(T.c.seq >= 2))
        conn.execute(sa.delete(CHECKPOINT_TABLE))
    assert manager.provenance.verify().ok
    outside = Checkpoint.from_json(exported.read_text())
    assert _kinds(manager.provenance.verify(checkpoints=[outside])) == [("truncated", 3)]


def test_checkpoint_json_that_is_not_one_is_refused() -> None:
    from rubix_integration import InvalidDataError
    from rubix_integration.provenance import Checkpoint

    for text in ("", "[]", "{}", '{"chain":"c"}', "not json", '{"/":"x"}', "1e999"):
        with pytest.raises(InvalidDataError):
            Checkpoint.from_json(text)


def test_a_checkpoint_needs_records(manager: Manager) -> None:
    from rubix_integration import RecordNotFoundError

    with pytest.raises(RecordNotFoundError):
        manager.provenance.checkpoint()


def test_a_key_file_others_can_read_is_refused(manager: Manager) -> None:
    from rubix_integration import ConfigError

    _steps(manager, 1)
    manager.provenance.checkpoint()
    key_file = _key_file(manager)
    os.chmod(key_file, 0o644)
    with Manager(store_url=str(manager.settings.store_url),
                 data_dir=manager.settings.data_dir) as other, \
            pytest.raises(ConfigError, match="chmod 600"):
        other.provenance.checkpoint()
    os.chmod(key_file, 0o600)
    key_file.write_text("not a key")
    with Manager(store_url=str(manager.settings.store_url),
                 data_dir=manager.settings.data_dir) as other, \
            pytest.raises(ConfigError, match="Ed25519"):
        other.provenance.checkpoint()


def test_publish_pushes_checkpoints_after_their_records(manager: Manager, tmp_path: Path) -> None:
    from rubix_integration.ipfs.base import IPFSContext
    from rubix_integration.ipfs.local import LocalBackend

    cids = _steps(manager, 2)
    checkpoint = manager.provenance.checkpoint()
    backend = LocalBackend(IPFSContext(settings=manager.settings, ipfs_path=None,
                                       options={"local_path": str(tmp_path / "blocks")}))
    assert manager.provenance.publish(backend) == 3
    assert backend.get_block(checkpoint.cid) == checkpoint.block
    assert backend.get_block(cids[-1]) == manager.provenance.get_block(cids[-1])
    assert manager.provenance.publish(backend) == 0


def test_signing_stays_out_of_the_import() -> None:
    import subprocess
    import sys

    code = ("import sys, rubix_integration, rubix_integration.provenance; "
            "print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"
