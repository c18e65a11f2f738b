"""The embedded content store: add/cat/ls/get round trips, pins, push, concurrency, layout."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rubix_integration._settings import Settings
from rubix_integration.codecs import CID, RAW, import_bytes, multihash_digest, parse_cid
from rubix_integration.errors import (
    ContentNotFoundError,
    CorruptBlockError,
    InvalidCIDError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs import local as local_module
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend

TRI = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
DATA = random.Random(31).randbytes(900_000)


def _local(data_dir: Path, **options: object) -> LocalBackend:
    return LocalBackend(IPFSContext(settings=Settings(data_dir=data_dir), options=dict(options)))


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return _local(tmp_path / "fresh" / "data")


def test_fresh_data_dir(local: LocalBackend, tmp_path: Path) -> None:
    found = LocalBackend.detect(local.context)
    assert found.available and str(local.root) in found.reason
    assert not local.root.exists()
    assert not local.has(TRI_CID)
    with pytest.raises(ContentNotFoundError):
        local.cat(TRI_CID)
    assert local.pins() == []
    assert local.health().ok
    assert not local.root.exists()  # reading creates nothing
    assert local.add_bytes(TRI) == TRI_CID
    assert local.root.is_dir()


def test_layout_is_kubo_flatfs(local: LocalBackend) -> None:
    assert local.add_bytes(TRI) == TRI_CID
    blocks = local.root / "blocks"
    assert (blocks / "SHARDING").read_text() == "/repo/flatfs/shard/v1/next-to-last/2\n"
    # the very path kubo uses for this block (REAL_PEERS.md)
    key = "CIQPAH7BHGYVSCU53OGNY3GEDDCDQOFB3VHD5JWE5XT24IW7QETE45Q"
    assert (blocks / "45" / f"{key}.data").is_file()
    # so the repo backend reads the embedded store as it reads a kubo repo
    repo = RepoBackend(IPFSContext(settings=local.context.settings, ipfs_path=local.root))
    assert repo.cat(TRI_CID) == TRI


def test_add_cat_round_trips(local: LocalBackend, tmp_path: Path) -> None:
    cid = local.add_bytes(DATA)
    assert local.cat(cid) == DATA
    assert b"".join(local.iter_cat(cid)) == DATA
    assert local.cat(cid, offset=300_000, length=5) == DATA[300_000:300_005]
    assert local.cat(str(parse_cid(cid).to_v1())) == DATA
    path = tmp_path / "file.bin"
    path.write_bytes(DATA)
    assert local.add_file(path) == cid
    assert local.get(cid, tmp_path / "copy.bin").read_bytes() == DATA
    assert local.has(cid)
    assert multihash_digest(local.get_block(cid)) == parse_cid(cid).multihash


def test_add_directory_ls_get(local: LocalBackend, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deep").mkdir(parents=True)
    (tree / "one.txt").write_bytes(b"one")
    (tree / ".dot").write_bytes(b"hidden")
    (tree / "sub" / "big.bin").write_bytes(DATA)
    (tree / "sub" / "deep" / "tri").write_bytes(TRI)
    result = local.add_directory(tree)
    by_path = {e.path: e for e in result.entries}
    assert set(by_path) == {"", "one.txt", "sub", "sub/big.bin", "sub/deep", "sub/deep/tri"}
    assert by_path["sub/deep/tri"].cid == TRI_CID
    assert by_path[""].cid == result.cid and result.entries[-1].path == ""
    assert [(e.name, e.type, e.size) for e in local.ls(result.cid)] == [
        ("one.txt", "file", 3), ("sub", "directory", 0)]
    out = local.get(result.cid, tmp_path / "out")
    assert (out / "sub" / "big.bin").read_bytes() == DATA
    assert (out / "sub" / "deep" / "tri").read_bytes() == TRI
    assert not (out / ".dot").exists()
    with pytest.raises(NotAFileError):
        local.cat(result.cid)
    flat = local.add_directory(tree, recursive=False)
    assert [e.name for e in local.ls(flat.cid)] == ["one.txt"]
    hidden = _local(tmp_path / "other", add_hidden=True).add_directory(tree)
    assert hidden.cid != result.cid and ".dot" in {e.path for e in hidden.entries}


def test_pins(local: LocalBackend) -> None:
    cid = local.add_bytes(DATA)
    unpinned = local.add_bytes(b"not pinned", pin=False)
    assert local.pins() == [cid]
    local.pin(unpinned)
    assert set(local.pins()) == {cid, unpinned}
    local.unpin(cid)
    local.unpin(cid)  # unpinning twice is harmless
    assert local.pins() == [unpinned]
    missing = str(CID(0, 0x70, multihash_digest(b"absent")))
    with pytest.raises(ContentNotFoundError):
        local.pin(missing)
    with pytest.raises(InvalidCIDError):
        local.pin("nonsense")


def test_put_block_verifies(local: LocalBackend) -> None:
    block = b"raw bytes"
    cid = str(CID(1, RAW, multihash_digest(block)))
    local.put_block(block, cid=cid)
    assert local.get_block(cid) == block
    assert local.cat(cid) == block
    with pytest.raises(CorruptBlockError):
        local.put_block(b"other bytes", cid=str(CID(1, RAW, multihash_digest(b"x"))))
    assert not local.has(str(CID(1, RAW, multihash_digest(b"x"))))


def test_push_everything_and_selected_roots(local: LocalBackend, tmp_path: Path) -> None:
    big = local.add_bytes(DATA)  # 4 leaves and their root
    tri = local.add_bytes(TRI)  # 1 block
    target = _local(tmp_path / "target")
    assert local.push(target) == 6
    assert target.cat(big) == DATA and target.cat(tri) == TRI
    second = _local(tmp_path / "second")
    assert local.push(second, [big]) == 5
    assert second.cat(big) == DATA and not second.has(tri)
    with pytest.raises(ContentNotFoundError):
        local.push(second, [str(CID(0, 0x70, multihash_digest(b"absent")))])


def test_push_into_a_read_only_backend_is_refused(local: LocalBackend, tmp_path: Path) -> None:
    local.add_bytes(TRI)
    repo = RepoBackend(IPFSContext(settings=local.context.settings, ipfs_path=local.root))
    with pytest.raises(UnsupportedOperationError):
        local.push(repo)
    with pytest.raises(UnsupportedOperationError):
        local.push(repo, [TRI_CID])


def test_concurrent_adds_from_threads(tmp_path: Path) -> None:
    # fresh store: the threads also race to create it
    backends = [_local(tmp_path / "shared"), _local(tmp_path / "shared")]
    payloads = [random.Random(i % 6).randbytes(300_000 + (i % 6)) for i in range(24)]
    barrier = threading.Barrier(8)

    def add(i: int) -> str:
        if i < 8:
            barrier.wait(timeout=10)
        return backends[i % 2].add_bytes(payloads[i])

    with ThreadPoolExecutor(max_workers=8) as pool:
        cids = list(pool.map(add, range(24)))
    for cid, payload in zip(cids, payloads, strict=True):
        assert cid == str(import_bytes(payload, lambda c, b: None).cid)
        assert backends[0].cat(cid) == payload
    assert len(set(backends[0].pins())) == 6
    leftovers = [p for p in (tmp_path / "shared").rglob("*") if p.name.startswith(".put-")]
    assert leftovers == []


def test_hook_registers_the_backend() -> None:
    from rubix_integration._plugins import Plugins

    assert Plugins(load_plugins=()).ipfs_backends()["local"] is LocalBackend
    # registered by dotted path through the registry, not by a hook of its own module
    assert not hasattr(local_module, "register_ipfs_backends")
    assert (LocalBackend.name, LocalBackend.priority, LocalBackend.read_only) == ("local", 90,
                                                                                 False)
