"""The ``repo`` backend reads repos written by real kubo (libkubo) and js-ipfs, and nothing else.

The shared kubo repo is never altered: tests that corrupt blocks work on a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rubix_integration._settings import Settings
from rubix_integration.codecs import (
    CID,
    IDENTITY,
    RAW,
    PBLink,
    b32_upper_encode,
    encode_pbnode,
    encode_unixfs,
    multihash_digest,
    parse_cid,
)
from rubix_integration.codecs._unixfs import DIRECTORY, FILE, HAMT_SHARD
from rubix_integration.errors import (
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    InvalidCIDError,
    IPFSUnavailableError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs import repo as repo_module
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend
from tests.fixtures.kubo import KuboRepo

TRI = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
BIG = random.Random(21).randbytes(1_300_000)  # five chunks under one root
MEDIUM = random.Random(22).randbytes(700_000)


@pytest.fixture(scope="module")
def kubo(kubo_repo_factory: Callable[..., KuboRepo],
         tmp_path_factory: pytest.TempPathFactory) -> KuboRepo:
    tree = tmp_path_factory.mktemp("tree") / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "sub" / "b.bin").write_bytes(MEDIUM)
    return kubo_repo_factory({"tri.txt": TRI, "big.bin": BIG, "medium.bin": MEDIUM,
                              "empty": b"", "tree": tree})


def _backend(path: Path | None, tmp_path: Path, timeout: float = 10.0) -> RepoBackend:
    return RepoBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data"), ipfs_path=path,
                                   timeout=timeout))


def _snapshot(root: Path) -> dict[str, tuple[int, str, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size,
                                                hashlib.sha256(path.read_bytes()).hexdigest(),
                                                st.st_mtime_ns)
        else:
            out[str(path.relative_to(root))] = (0, "dir", 0)
    return out


@pytest.fixture
def copy(kubo: KuboRepo, tmp_path: Path) -> Path:
    dest = tmp_path / "repo-copy"
    shutil.copytree(kubo.path, dest, symlinks=True)
    return dest


def _block_path(repo: Path, cid: str) -> Path:
    key = b32_upper_encode(parse_cid(cid).multihash)
    return repo / "blocks" / key[-3:-1] / f"{key}.data"


# --- reading what kubo wrote ---------------------------------------------------------------------


def test_detect_accepts_a_kubo_repo(kubo: KuboRepo, tmp_path: Path) -> None:
    found = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=kubo.path))
    assert found.available
    assert "flatfs" in found.reason and str(kubo.path) in found.reason


def test_reads_match_what_kubo_added(kubo: KuboRepo, tmp_path: Path) -> None:
    assert kubo.cids["tri.txt"] == TRI_CID
    before = _snapshot(kubo.path)
    with _backend(kubo.path, tmp_path) as backend:
        assert backend.cat(TRI_CID) == TRI
        assert backend.cat(kubo.cids["big.bin"]) == BIG
        assert backend.cat(kubo.cids["medium.bin"]) == MEDIUM
        assert backend.cat(kubo.cids["empty"]) == b""
        assert b"".join(backend.iter_cat(kubo.cids["big.bin"])) == BIG
        # CIDv1 of the same content is the same block file
        assert backend.cat(str(parse_cid(kubo.cids["big.bin"]).to_v1())) == BIG
        for offset, length in [(0, 10), (262_140, 10), (262_144, 262_144), (1_299_990, None),
                               (5, 0), (2_000_000, 5), (700_000, 300_000)]:
            expected = BIG[offset:] if length is None else BIG[offset : offset + length]
            assert backend.cat(kubo.cids["big.bin"], offset=offset, length=length) == expected
        assert backend.cat(TRI_CID, offset=4, length=1) == b"0"
        assert backend.has(TRI_CID)
        assert backend.get_block(TRI_CID) == _block_path(kubo.path, TRI_CID).read_bytes()
        entries = backend.ls(kubo.cids["tree"])
        assert [(e.name, e.type, e.size) for e in entries] == [
            ("a.txt", "file", 5), ("sub", "directory", 0)]
        dest = backend.get(kubo.cids["tree"], tmp_path / "out")
        assert (dest / "a.txt").read_bytes() == b"alpha"
        assert (dest / "sub" / "b.bin").read_bytes() == MEDIUM
        backend.get(kubo.cids["big.bin"], tmp_path / "big.out")
        assert (tmp_path / "big.out").read_bytes() == BIG
        assert backend.health().ok
    # nothing was written, no lock was taken, no file appeared or changed
    assert _snapshot(kubo.path) == before


def test_max_size(kubo: KuboRepo, tmp_path: Path) -> None:
    backend = _backend(kubo.path, tmp_path)
    assert backend.cat(kubo.cids["big.bin"], max_size=len(BIG)) == BIG
    with pytest.raises(ContentTooLargeError) as info:
        backend.cat(kubo.cids["big.bin"], max_size=len(BIG) - 1)
    assert info.value.cid == kubo.cids["big.bin"] and info.value.backend == "repo"
    with pytest.raises(ContentTooLargeError):
        backend.iter_cat(kubo.cids["big.bin"], max_size=1000)


def test_writes_are_refused(kubo: KuboRepo, tmp_path: Path) -> None:
    backend = _backend(kubo.path, tmp_path)
    assert RepoBackend.read_only
    with pytest.raises(UnsupportedOperationError):
        backend.add_bytes(b"x")
    with pytest.raises(UnsupportedOperationError):
        backend.put_block(TRI, cid=TRI_CID)
    with pytest.raises(UnsupportedOperationError):
        backend.pin(TRI_CID)


def test_hook_registers_the_backend() -> None:
    from rubix_integration._plugins import Plugins

    assert Plugins(load_plugins=()).ipfs_backends()["repo"] is RepoBackend
    # registered by dotted path through the registry, not by a hook of its own module
    assert not hasattr(repo_module, "register_ipfs_backends")
    assert (RepoBackend.name, RepoBackend.priority) == ("repo", 10)


# --- bad input -----------------------------------------------------------------------------------


def test_directory_is_not_a_file(kubo: KuboRepo, tmp_path: Path) -> None:
    backend = _backend(kubo.path, tmp_path)
    with pytest.raises(NotAFileError) as info:
        backend.cat(kubo.cids["tree"])
    assert info.value.cid == kubo.cids["tree"]
    with pytest.raises(NotAFileError):
        backend.iter_cat(kubo.cids["tree"])


@pytest.mark.parametrize("text", ["", "hello", "Qm123", TRI_CID[:-1] + "0", "bafy!"])
def test_malformed_cid(kubo: KuboRepo, tmp_path: Path, text: str) -> None:
    backend = _backend(kubo.path, tmp_path)
    with pytest.raises(InvalidCIDError):
        backend.cat(text)
    with pytest.raises(InvalidCIDError):
        backend.has(text)


def test_truncated_block(copy: Path, kubo: KuboRepo, tmp_path: Path) -> None:
    path = _block_path(copy, TRI_CID)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CorruptBlockError) as info:
        _backend(copy, tmp_path).cat(TRI_CID)
    assert info.value.cid == TRI_CID and info.value.path == str(path)


def test_block_not_matching_its_hash(copy: Path, kubo: KuboRepo, tmp_path: Path) -> None:
    # a leaf in the middle of a multi-block file: valid dag-pb, wrong content
    backend = _backend(copy, tmp_path)
    leaf = backend.ls(kubo.cids["big.bin"])[2].cid
    path = _block_path(copy, leaf)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert backend.cat(kubo.cids["big.bin"], length=262_144) == BIG[:262_144]  # skipped
    with pytest.raises(CorruptBlockError) as info:
        backend.cat(kubo.cids["big.bin"])
    assert info.value.cid == leaf
    with pytest.raises(CorruptBlockError):
        backend.get_block(leaf)


def test_missing_block_fails_fast(copy: Path, kubo: KuboRepo, tmp_path: Path) -> None:
    backend = _backend(copy, tmp_path, timeout=60)
    leaf = backend.ls(kubo.cids["big.bin"])[4].cid
    _block_path(copy, leaf).unlink()
    started = time.monotonic()
    with pytest.raises(ContentNotFoundError) as info:
        backend.cat(kubo.cids["big.bin"])
    assert time.monotonic() - started < 1.0
    assert info.value.cid == leaf
    assert not backend.has(leaf)
    # a slice that does not touch the missing leaf still reads
    assert backend.cat(kubo.cids["big.bin"], length=10) == BIG[:10]
    unknown = str(CID(0, 0x70, multihash_digest(b"never added")))
    with pytest.raises(ContentNotFoundError):
        backend.cat(unknown)


def test_non_flatfs_datastores_are_rejected(tmp_path: Path) -> None:
    for name, spec in {
        "badger": {"path": "badgerds", "type": "badgerds"},
        "pebble": {"mounts": [{"mountpoint": "/", "path": "pebbleds", "type": "pebbleds"}],
                   "type": "mount"},
    }.items():
        repo = tmp_path / name
        repo.mkdir()
        (repo / "datastore_spec").write_text(json.dumps(spec))
        found = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=repo))
        assert not found.available
        assert f"{name}ds" in found.reason and "not flatfs" in found.reason
        with pytest.raises(IPFSUnavailableError):
            _backend(repo, tmp_path)


def test_missing_or_empty_repo_is_rejected(tmp_path: Path) -> None:
    missing = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=tmp_path / "nope"))
    assert not missing.available and "does not exist" in missing.reason
    (tmp_path / "empty").mkdir()
    empty = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=tmp_path / "empty"))
    assert not empty.available and "no datastore_spec" in empty.reason
    none = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=None))
    assert not none.available
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "datastore_spec").write_text("{not json")
    bad = RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=tmp_path / "bad"))
    assert not bad.available and "cannot be read" in bad.reason
    with pytest.raises(IPFSUnavailableError):
        _backend(None, tmp_path)


# --- content kubo's defaults do not produce ------------------------------------------------------


def _store_with(tmp_path: Path, blocks: list[bytes]) -> tuple[Path, list[CID]]:
    """A repo whose blocks are written by the embedded store (the same flatfs layout)."""
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    cids = []
    for block in blocks:
        cid = CID(1, 0x70, multihash_digest(block))
        local.put_block(block, cid=str(cid))
        cids.append(cid)
    return local.root, cids


def test_raw_leaves_cidv1_and_identity(tmp_path: Path) -> None:
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    parts = [random.Random(i).randbytes(1000 + i) for i in range(3)]
    leaves = [CID(1, RAW, multihash_digest(p)) for p in parts]
    for cid, part in zip(leaves, parts, strict=True):
        local.put_block(part, cid=str(cid))
    # an inline (identity) leaf holds its bytes in the CID itself
    inline = CID(1, RAW, multihash_digest(b"!inline!", IDENTITY))
    sizes = [*[len(p) for p in parts], 8]
    root_block = encode_pbnode(
        [PBLink(c, "", s) for c, s in zip([*leaves, inline], sizes, strict=True)],
        encode_unixfs(FILE, filesize=sum(sizes), blocksizes=sizes))
    root = CID(1, 0x70, multihash_digest(root_block))
    local.put_block(root_block, cid=str(root))
    backend = _backend(local.root, tmp_path)
    expected = b"".join(parts) + b"!inline!"
    assert str(root).startswith("bafybei")
    assert backend.cat(str(root)) == expected
    assert backend.cat(str(root), offset=1500, length=1000) == expected[1500:2500]
    assert backend.cat(str(leaves[1])) == parts[1]
    assert backend.cat(str(inline)) == b"!inline!"
    assert backend.has(str(inline))


def test_hamt_directory_listing(tmp_path: Path) -> None:
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    a = local.add_bytes(b"a")
    b = local.add_bytes(b"bb")
    inner = encode_pbnode([PBLink(parse_cid(b), "1Fb.txt", 10)],
                          encode_unixfs(HAMT_SHARD, fanout=256, hash_type=0x22))
    inner_cid = CID(0, 0x70, multihash_digest(inner))
    local.put_block(inner, cid=str(inner_cid))
    top = encode_pbnode([PBLink(parse_cid(a), "0Aa.txt", 9), PBLink(inner_cid, "7E", 70)],
                        encode_unixfs(HAMT_SHARD, fanout=256, hash_type=0x22))
    top_cid = CID(0, 0x70, multihash_digest(top))
    local.put_block(top, cid=str(top_cid))
    backend = _backend(local.root, tmp_path)
    assert [(e.name, e.cid, e.size) for e in backend.ls(str(top_cid))] == [
        ("a.txt", a, 1), ("b.txt", b, 2)]
    out = backend.get(str(top_cid), tmp_path / "hamt")
    assert (out / "b.txt").read_bytes() == b"bb"
    with pytest.raises(NotAFileError):
        backend.cat(str(top_cid))


def test_unsafe_names_are_refused_on_get(tmp_path: Path) -> None:
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    a = parse_cid(local.add_bytes(b"evil"))
    block = encode_pbnode([PBLink(a, "..", 5)], encode_unixfs(DIRECTORY))
    cid = CID(0, 0x70, multihash_digest(block))
    local.put_block(block, cid=str(cid))
    with pytest.raises(CorruptBlockError):
        _backend(local.root, tmp_path).get(str(cid), tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "evil").exists()


def test_undecodable_block(tmp_path: Path) -> None:
    root, cids = _store_with(tmp_path, [b"\x0a\x02\x08\x09", b"\xff\xfe"])
    backend = _backend(root, tmp_path)
    for cid in cids:
        with pytest.raises(CorruptBlockError):
            backend.cat(str(cid))


# --- js-ipfs repos -------------------------------------------------------------------------------


def _jsipfs_repo(jsipfs_bin: Path, tmp_path: Path, files: dict[str, bytes]) -> tuple[Path,
                                                                                 dict[str, str]]:
    from tests.fixtures.jsipfs import init_repo

    repo = init_repo(jsipfs_bin, tmp_path / "jsrepo")
    staging = tmp_path / "jsfiles"
    staging.mkdir()
    cids = {}
    env = {**os.environ, "IPFS_PATH": str(repo)}
    for name, data in files.items():
        (staging / name).write_bytes(data)
        proc = subprocess.run([str(jsipfs_bin), "add", "-Q", "--progress=false",
                               str(staging / name)], capture_output=True, text=True,
                              timeout=120, env=env, check=True)
        cids[name] = proc.stdout.strip().splitlines()[-1]
    return repo, cids


def test_reads_a_jsipfs_repo(jsipfs_bin: Path, tmp_path: Path) -> None:
    # written by `jsipfs init --empty-repo --profile test` and `jsipfs add`, no daemon
    repo, cids = _jsipfs_repo(jsipfs_bin, tmp_path, {"tri.txt": TRI, "big.bin": BIG})
    assert (repo / "blocks" / "SHARDING.data").is_file()
    assert json.loads((repo / "version").read_text()) == 12
    assert RepoBackend.detect(IPFSContext(settings=Settings(), ipfs_path=repo)).available
    before = _snapshot(repo)
    backend = _backend(repo, tmp_path)
    assert cids["tri.txt"] == TRI_CID
    assert backend.cat(TRI_CID) == TRI
    assert backend.cat(cids["big.bin"]) == BIG
    assert _snapshot(repo) == before
    # a js-ipfs repo without datastore_spec is still found through blocks/SHARDING.data
    bare = tmp_path / "bare"
    shutil.copytree(repo, bare)
    os.unlink(bare / "datastore_spec")
    assert _backend(bare, tmp_path).cat(cids["big.bin"]) == BIG
