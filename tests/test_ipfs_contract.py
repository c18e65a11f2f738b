"""One behavioural suite, run on every IPFS access backend: the contract of ipfs/base.py.

Each backend serves the same content: ``local`` (the embedded store), ``repo`` (a kubo-layout repo
on disk), ``http`` (the js-ipfs daemon) and ``cli`` (``jsipfs --api`` against that daemon). The
same calls must return the same bytes and raise the same classified errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rubix_integration import (
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCIDError,
    IPFSBackend,
    IPFSContext,
    IPFSTimeoutError,
    Manager,
    NotAFileError,
)
from rubix_integration._settings import resolve_settings
from rubix_integration.ipfs.cli import CLIBackend
from rubix_integration.ipfs.http import HTTPBackend
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend
from tests.fixtures.jsipfs import JsIpfsDaemon

FILES: dict[str, bytes] = {
    "empty": b"",
    "text": b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u",
    "chunk": bytes(random.Random(1).randrange(256) for _ in range(262_144)),
    "large": random.Random(2).randbytes(700_000),
}
ABSENT = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX"  # a well-formed CID nobody holds


@dataclass
class Served:
    backend: IPFSBackend
    cids: dict[str, str]
    tree: str
    tree_src: Path


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(random.Random(3).randbytes(300_000))
    return root


@pytest.fixture(scope="session")
def content_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("content")
    for name, data in FILES.items():
        (base / name).write_bytes(data)
    _tree(base / "tree")
    return base


def _load(writer: IPFSBackend, content_dir: Path) -> tuple[dict[str, str], str]:
    cids = {name: writer.add_file(content_dir / name) for name in FILES}
    tree = writer.add_directory(content_dir / "tree").cid
    return cids, tree


@pytest.fixture(scope="session")
def expected(content_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[dict[str, str], str]:
    """The CIDs the embedded importer computes (those of `ipfs add`)."""
    local = LocalBackend(IPFSContext(settings=resolve_settings(
        env={}, data_dir=tmp_path_factory.mktemp("expected"))))
    return _load(local, content_dir)


@pytest.fixture(params=["local", "repo", "http", "cli"])
def served(request: pytest.FixtureRequest, content_dir: Path,
           tmp_path_factory: pytest.TempPathFactory,
           expected: tuple[dict[str, str], str]) -> Iterator[Served]:
    kind = request.param
    if kind in ("local", "repo"):
        store = tmp_path_factory.mktemp(kind)
        writer = LocalBackend(IPFSContext(settings=resolve_settings(env={}, data_dir=store)))
        cids, tree = _load(writer, content_dir)
        writer.close()
        backend: IPFSBackend
        if kind == "local":
            backend = LocalBackend(IPFSContext(settings=resolve_settings(env={}, data_dir=store)))
        else:  # the same blocks read as a kubo repo on disk
            backend = RepoBackend(IPFSContext(settings=resolve_settings(env={}),
                                              ipfs_path=store / "ipfs"))
    else:
        daemon: JsIpfsDaemon = request.getfixturevalue("jsipfs_daemon")
        http = HTTPBackend(IPFSContext(
            settings=resolve_settings(env={}, ipfs_api=daemon.api_multiaddr),
            ipfs_path=daemon.repo, timeout=20))
        cids, tree = _load(http, content_dir)
        if kind == "http":
            backend = http
        else:
            http.close()
            jsipfs = request.getfixturevalue("jsipfs_bin")
            backend = CLIBackend(IPFSContext(
                settings=resolve_settings(env={}, ipfs_bin=str(jsipfs),
                                          ipfs_bin_args=["--api", daemon.url]),
                ipfs_path=daemon.repo, timeout=30))
    assert (cids, tree) == expected, f"{kind} computed other CIDs than `ipfs add`"
    try:
        yield Served(backend, cids, tree, content_dir / "tree")
    finally:
        backend.close()


def test_cat_returns_the_added_bytes(served: Served) -> None:
    for name, data in FILES.items():
        assert served.backend.cat(served.cids[name]) == data, name


def test_range_read_across_a_chunk_boundary(served: Served) -> None:
    got = served.backend.cat(served.cids["large"], offset=262_000, length=1_000)
    assert got == FILES["large"][262_000:263_000]


def test_streamed_read_equals_whole_read(served: Served) -> None:
    assert b"".join(served.backend.iter_cat(served.cids["large"])) == FILES["large"]


def test_max_size_refuses_larger_content(served: Served) -> None:
    with pytest.raises(ContentTooLargeError):
        served.backend.cat(served.cids["large"], max_size=1000)


def test_missing_content_fails_fast(served: Served) -> None:
    started = time.monotonic()
    with pytest.raises((ContentNotFoundError, IPFSTimeoutError)):
        served.backend.cat(ABSENT, timeout=2)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("text", ["not-a-cid", "Qm123", ""])
def test_malformed_cid_is_classified(served: Served, text: str) -> None:
    if served.backend.name == "cli" and text:
        pytest.skip("one malformed CID is enough for the slow CLI")
    with pytest.raises(InvalidCIDError):
        served.backend.cat(text)


def test_directory_is_not_a_file(served: Served) -> None:
    with pytest.raises(NotAFileError):
        served.backend.cat(served.tree)


def test_ls_and_get_of_a_tree(served: Served, tmp_path: Path) -> None:
    entries = {e.name: e for e in served.backend.ls(served.tree)}
    assert set(entries) == {"a.txt", "sub"}
    assert entries["a.txt"].type == "file" and entries["sub"].type == "directory"
    assert entries["a.txt"].size == 6
    out = served.backend.get(served.tree, tmp_path / "out")
    assert (out / "a.txt").read_bytes() == b"alpha\n"
    assert (out / "sub" / "b.bin").read_bytes() == (served.tree_src / "sub" / "b.bin").read_bytes()


def test_auto_reads_from_disk_and_falls_back_to_the_daemon(
    jsipfs_daemon: JsIpfsDaemon, tmp_path: Path
) -> None:
    """A node whose repo lacks a block still gets it through its daemon."""
    node_repo = tmp_path / "node" / ".ipfs"
    disk = LocalBackend(IPFSContext(settings=resolve_settings(env={}),
                                    options={"local_path": str(node_repo)}))
    on_disk = disk.add_bytes(b"TRI 1 only on disk")
    disk.close()
    http = HTTPBackend(IPFSContext(settings=resolve_settings(
        env={}, ipfs_api=jsipfs_daemon.api_multiaddr), timeout=20))
    only_daemon = http.add_bytes(b"TRI 2 only in the daemon")
    http.close()
    with Manager(ipfs_api=jsipfs_daemon.api_multiaddr, data_dir=tmp_path / "d",
                 ipfs_bin=str(tmp_path / "none")) as manager:
        choice = manager.choose_ipfs(node_repo)
        assert (choice.name, choice.fallbacks) == ("repo", ("http",))
        assert "then" not in choice.reason and "http" in choice.reason
        backend = manager.ipfs(node_repo)
        assert backend.name == "repo+http"
        assert backend.cat(on_disk) == b"TRI 1 only on disk"
        assert backend.cat(only_daemon) == b"TRI 2 only in the daemon"
        with pytest.raises((ContentNotFoundError, IPFSTimeoutError)):
            backend.cat(ABSENT, timeout=2)
        with pytest.raises(InvalidCIDError):
            backend.cat("nonsense")
