"""The ``http`` backend against a real js-ipfs daemon (external/js-ipfs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rubix_integration._settings import resolve_settings
from rubix_integration.codecs import CID, RAW, import_bytes, import_directory, multihash_digest
from rubix_integration.errors import (
    ConfigError,
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    InvalidCIDError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
)
from rubix_integration.ipfs import http as http_module
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.http import HTTPBackend, parse_api_address
from tests.fixtures.jsipfs import JsIpfsDaemon

pytestmark = pytest.mark.jsipfs

TRI = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
# a valid CID whose content no test ever adds
ABSENT_CID = "QmcJeJo2dndPBqysL3kwQU2j6TJinfnsvcfPU9mJit4Qbd"


def make_backend(api: str | None = None, ipfs_path: Path | None = None,
                 timeout: float = 5.0) -> HTTPBackend:
    settings = resolve_settings(ipfs_api=api)
    return HTTPBackend(IPFSContext(settings=settings, ipfs_path=ipfs_path, timeout=timeout))


@pytest.fixture
def backend(jsipfs_daemon: JsIpfsDaemon) -> Iterator[HTTPBackend]:
    with make_backend(jsipfs_daemon.url) as b:
        assert isinstance(b, HTTPBackend)
        yield b


def ipfs_cid(path: Path) -> str:
    """The CID Debian's ``ipfs_cid`` computes for a file (an oracle independent of js-ipfs)."""
    if shutil_which("ipfs_cid") is None:
        pytest.skip("ipfs_cid (Debian package ipfs-cid) is not installed")
    out = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return str(json.loads(out)["CIDv0"])


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- addresses and detection ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "multiaddr", "url"), [
    ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001"),
    ("/ip4/10.0.0.2/tcp/80/https", "/ip4/10.0.0.2/tcp/80/https", "https://10.0.0.2:80"),
    ("/ip6/::1/tcp/5001/http", "/ip6/::1/tcp/5001/http", "http://[::1]:5001"),
    ("/dns4/node.example/tcp/5001", "/dns4/node.example/tcp/5001/http",
     "http://node.example:5001"),
    ("http://localhost:5001/", "/dns/localhost/tcp/5001/http", "http://localhost:5001"),
    ("http://[::1]:9", "/ip6/::1/tcp/9/http", "http://[::1]:9"),
])
def test_parse_api_address(text: str, multiaddr: str, url: str) -> None:
    address = parse_api_address(text)
    assert (address.multiaddr, address.url) == (multiaddr, url)


@pytest.mark.parametrize("text", ["/ip4/1.2.3.4/udp/5", "/ip4/1.2.3.4/tcp/99999", "ftp://x:1",
                                  "localhost:5001", "/ip4/1.2.3.4/tcp/1/ws"])
def test_parse_api_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_api_address(text)


def test_bad_ipfs_api_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ipfs_api"):
        make_backend("/ip4/127.0.0.1/udp/5001")
    detection = HTTPBackend.detect(IPFSContext(settings=resolve_settings(ipfs_api="nonsense")))
    assert not detection.available and "ipfs_api" in detection.reason


def test_detect_finds_daemon_through_setting_and_api_file(jsipfs_daemon: JsIpfsDaemon) -> None:
    by_setting = HTTPBackend.detect(
        IPFSContext(settings=resolve_settings(ipfs_api=jsipfs_daemon.url)))
    assert by_setting.available, by_setting.reason
    assert jsipfs_daemon.url in by_setting.reason and "setting" in by_setting.reason
    by_file = HTTPBackend.detect(
        IPFSContext(settings=resolve_settings(), ipfs_path=jsipfs_daemon.repo))
    assert by_file.available, by_file.reason
    assert str(jsipfs_daemon.repo / "api") in by_file.reason


def test_detect_without_address(tmp_path: Path) -> None:
    detection = HTTPBackend.detect(IPFSContext(settings=resolve_settings(), ipfs_path=tmp_path))
    assert not detection.available
    assert str(tmp_path / "api") in detection.reason
    with make_backend(ipfs_path=tmp_path) as b, pytest.raises(IPFSUnavailableError):
        b.cat(TRI_CID)


def test_api_file_pointing_at_closed_port(tmp_path: Path) -> None:
    port = closed_port()
    (tmp_path / "api").write_text(f"/ip4/127.0.0.1/tcp/{port}/http")
    started = time.monotonic()
    detection = HTTPBackend.detect(IPFSContext(settings=resolve_settings(), ipfs_path=tmp_path))
    assert time.monotonic() - started < 3
    assert not detection.available
    assert f"127.0.0.1:{port}" in detection.reason and "api file" in detection.reason
    with make_backend(ipfs_path=tmp_path) as b:
        for call in (lambda: b.cat(TRI_CID), lambda: b.ls(TRI_CID),
                     lambda: b.add_bytes(b"x"), lambda: b.pin(TRI_CID)):
            with pytest.raises(IPFSUnavailableError) as info:
                call()
            assert info.value.backend == "http"
            assert info.value.__cause__ is not None
        health = b.health()
        assert not health.ok and str(port) in health.detail


def test_health(backend: HTTPBackend) -> None:
    health = backend.health()
    assert health.ok, health.detail
    assert backend.address is not None and backend.address.url in health.detail


# --- add and cat round trips ---------------------------------------------------------------------


def test_known_cids(backend: HTTPBackend) -> None:
    assert backend.add_bytes(TRI) == TRI_CID
    assert backend.add_bytes(b"") == EMPTY_CID
    assert backend.cat(TRI_CID) == TRI
    assert backend.cat(EMPTY_CID) == b""


@pytest.mark.parametrize("size", [0, 11, 262144, 262145, 700_000])
def test_round_trip_matches_ipfs_cid(backend: HTTPBackend, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    expected = ipfs_cid(path)
    assert backend.add_bytes(data) == expected
    assert backend.add_file(path) == expected
    assert backend.cat(expected) == data
    assert b"".join(backend.iter_cat(expected)) == data


def test_offset_and_length(backend: HTTPBackend) -> None:
    data = os.urandom(600_000)
    cid = backend.add_bytes(data)
    assert backend.cat(cid, offset=4, length=3) == data[4:7]
    assert backend.cat(cid, offset=262_140, length=10) == data[262_140:262_150]
    assert backend.cat(cid, offset=599_990) == data[599_990:]
    assert backend.cat(cid, length=0) == b""
    assert b"".join(backend.iter_cat(cid, offset=300_000, length=5)) == data[300_000:300_005]
    with pytest.raises(ValueError):
        backend.cat(cid, offset=-1)


def test_max_size(backend: HTTPBackend) -> None:
    cid = backend.add_bytes(TRI)
    assert backend.cat(cid, max_size=len(TRI)) == TRI
    assert backend.cat(cid, offset=4, length=3, max_size=len(TRI)) == TRI[4:7]
    with pytest.raises(ContentTooLargeError) as info:
        backend.cat(cid, max_size=len(TRI) - 1)
    assert info.value.cid == cid
    with pytest.raises(ContentTooLargeError):
        backend.cat(cid, offset=10, length=2, max_size=len(TRI) - 1)
    with pytest.raises(ContentTooLargeError):
        backend.iter_cat(cid, max_size=10)
    big = backend.add_bytes(os.urandom(300_000))
    with pytest.raises(ContentTooLargeError):
        backend.cat(big, max_size=1000)


def test_add_without_pin_is_still_readable(backend: HTTPBackend) -> None:
    data = os.urandom(100)
    cid = backend.add_bytes(data, pin=False)
    assert backend.cat(cid) == data


# --- directories ---------------------------------------------------------------------------------


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "b.bin": os.urandom(300_000),
        "sub/c.txt": b"gamma\n",
        "sub/deeper/d.txt": b"delta\n",
        "with space.txt": b"space\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty" / "inner").mkdir(parents=True)
    (root / ".hidden").write_bytes(b"skipped like ipfs add -r does")
    return files


def local_tree_cid(root: Path) -> str:
    """The root CID computed with the package's own importer (independent of the daemon)."""
    def imp(path: Path):  # type: ignore[no-untyped-def]
        if path.is_dir():
            return import_directory(
                [(c.name, imp(c)) for c in path.iterdir() if not c.name.startswith(".")],
                lambda _c, _b: None)
        return import_bytes(path.read_bytes(), lambda _c, _b: None)
    return str(imp(root).cid)


def test_add_directory_ls_get(backend: HTTPBackend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    result = backend.add_directory(src)
    assert result.cid == local_tree_cid(src)
    by_path = {e.path: e for e in result.entries}
    assert set(by_path) == {"", "a.txt", "b.bin", "sub", "sub/c.txt", "sub/deeper",
                            "sub/deeper/d.txt", "with space.txt", "empty", "empty/inner"}
    assert by_path[""].cid == result.cid and by_path[""].is_dir
    assert by_path["sub"].is_dir and not by_path["sub/c.txt"].is_dir
    for rel, data in files.items():
        assert backend.cat(by_path[rel].cid) == data

    listing = {e.name: e for e in backend.ls(result.cid)}
    assert set(listing) == {"a.txt", "b.bin", "sub", "with space.txt", "empty"}
    assert listing["sub"].type == "directory" and listing["sub"].cid == by_path["sub"].cid
    assert listing["b.bin"].type == "file" and listing["b.bin"].size == 300_000
    assert backend.ls(by_path["empty/inner"].cid) == []

    dest = tmp_path / "out" / "tree"
    assert backend.get(result.cid, dest) == dest
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert (dest / "empty" / "inner").is_dir()
    assert not (dest / ".hidden").exists()

    file_dest = tmp_path / "one.txt"
    backend.get(by_path["sub/c.txt"].cid, file_dest)
    assert file_dest.read_bytes() == b"gamma\n"


def test_add_directory_not_recursive(backend: HTTPBackend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    result = backend.add_directory(src, recursive=False)
    assert {e.path for e in result.entries} == {"", "a.txt", "b.bin", "with space.txt"}
    assert {e.name for e in backend.ls(result.cid)} == {"a.txt", "b.bin", "with space.txt"}


def test_add_directory_of_empty_folders(backend: HTTPBackend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    result = backend.add_directory(src)
    assert result.cid == local_tree_cid(src)
    assert [e.name for e in backend.ls(result.cid)] == ["x"]


# --- blocks and pins -----------------------------------------------------------------------------


def test_blocks(backend: HTTPBackend) -> None:
    cid = backend.add_bytes(TRI)
    block = backend.get_block(cid)
    assert TRI in block and len(block) == 73
    assert backend.has(cid)
    started = time.monotonic()
    assert not backend.has(ABSENT_CID)
    assert time.monotonic() - started < 3

    data = os.urandom(64)
    raw = str(CID(1, RAW, multihash_digest(data)))
    assert not backend.has(raw)
    backend.put_block(data, cid=raw)
    assert backend.has(raw)
    assert backend.get_block(raw) == data
    with pytest.raises(CorruptBlockError):
        backend.put_block(b"other bytes", cid=raw)


def test_pin_and_unpin(backend: HTTPBackend) -> None:
    cid = backend.add_bytes(os.urandom(50), pin=False)

    def pinned() -> set[str]:
        answer = backend._rpc.call("pin/ls", (), {"type": "recursive"}, limit=10, what="pin ls")
        return {str(k) for part in answer for k in part.get("Keys") or {}}

    assert cid not in pinned()
    backend.pin(cid)
    assert cid in pinned()
    backend.unpin(cid)
    assert cid not in pinned()
    backend.unpin(cid)  # not pinned any more: nothing to do
    with pytest.raises((ContentNotFoundError, IPFSTimeoutError)):
        backend.pin(ABSENT_CID, timeout=1)


def test_client_reaches_the_full_rpc_api_through_ipfshttpclient(backend: HTTPBackend) -> None:
    cid = backend.add_bytes(b"seen through ipfshttpclient", pin=True)
    client = backend.client()
    try:
        assert client.cat(cid) == b"seen through ipfshttpclient"
        assert cid in {str(k) for k in client.pin.ls(type="recursive")["Keys"]}
    finally:
        client.close()


def test_client_without_a_daemon_address_is_a_classified_error(tmp_path: Path) -> None:
    with make_backend(ipfs_path=tmp_path / "no-repo") as backend, \
            pytest.raises(IPFSUnavailableError):
        backend.client()


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["cat", "iter_cat", "ls", "get_block", "get"])
def test_missing_cid_fails_fast(backend: HTTPBackend, tmp_path: Path, call: str) -> None:
    started = time.monotonic()
    with pytest.raises((ContentNotFoundError, IPFSTimeoutError)) as info:
        if call == "get":
            backend.get(ABSENT_CID, tmp_path / "x", timeout=1)
        elif call == "iter_cat":
            b"".join(backend.iter_cat(ABSENT_CID, timeout=1))
        else:
            getattr(backend, call)(ABSENT_CID, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 1 + http_module.CLIENT_GRACE + 1.0, elapsed
    assert info.value.cid == ABSENT_CID and info.value.backend == "http"
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("bad", ["Qmbogus", "not a cid", "", "bafy!!!"])
def test_malformed_cid(backend: HTTPBackend, bad: str) -> None:
    for call in (backend.cat, backend.ls, backend.has, backend.get_block, backend.pin):
        with pytest.raises(InvalidCIDError):
            call(bad)


def test_directory_passed_to_cat(backend: HTTPBackend, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"f")
    root = backend.add_directory(tmp_path / "d").cid
    with pytest.raises(NotAFileError) as info:
        backend.cat(root)
    assert info.value.cid == root
    with pytest.raises(NotAFileError):
        backend.cat(root, max_size=100)
    with pytest.raises(NotAFileError):
        backend.iter_cat(root, max_size=100)


def test_daemon_killed_mid_run(jsipfs_fresh_daemon: JsIpfsDaemon) -> None:
    with make_backend(ipfs_path=jsipfs_fresh_daemon.repo) as b:
        cid = b.add_bytes(TRI)
        assert b.cat(cid) == TRI
        jsipfs_fresh_daemon.kill()
        assert (jsipfs_fresh_daemon.repo / "api").exists()  # left behind, as after a crash
        started = time.monotonic()
        with pytest.raises(IPFSUnavailableError) as info:
            b.cat(cid)
        assert time.monotonic() - started < 3
        assert info.value.cid == cid
        with pytest.raises(IPFSUnavailableError):
            b.add_bytes(b"more")
        assert not b.health().ok
    detection = HTTPBackend.detect(
        IPFSContext(settings=resolve_settings(), ipfs_path=jsipfs_fresh_daemon.repo))
    assert not detection.available


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_cats(backend: HTTPBackend) -> None:
    payloads = {backend.add_bytes(f"TRI {i} token".encode()): f"TRI {i} token".encode()
                for i in range(40)}
    threads: set[int] = set()

    def read(cid: str) -> bytes:
        threads.add(threading.get_ident())
        return backend.cat(cid)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            results = dict(zip(payloads, pool.map(read, payloads), strict=True))
            assert results == payloads
    assert len(threads) > 1
    backend.close()
    assert backend.cat(next(iter(payloads))) == next(iter(payloads.values()))
