"""The ``cli`` backend against the real ``jsipfs`` command line (each call takes about two seconds,
so these tests are few and each checks several things)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from rubix_integration._settings import resolve_settings
from rubix_integration.errors import (
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCIDError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
)
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.cli import CLIBackend, _parse_ls_line
from tests.fixtures.jsipfs import JsIpfsDaemon

RepoFactory = Callable[[Mapping[str, bytes]], tuple[Path, dict[str, str]]]

TRI = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
ABSENT_CID = "QmcJeJo2dndPBqysL3kwQU2j6TJinfnsvcfPU9mJit4Qbd"


def make_backend(bin_path: Path | str | None, repo: Path | None, timeout: float = 30.0,
                 args: tuple[str, ...] = ()) -> CLIBackend:
    settings = resolve_settings(ipfs_bin=str(bin_path) if bin_path else None,
                                ipfs_bin_args=args or None)
    return CLIBackend(IPFSContext(settings=settings, ipfs_path=repo, timeout=timeout))


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- without the real peer -----------------------------------------------------------------------


def test_detect_finds_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    node = tmp_path / "node"
    (node / ".ipfs").mkdir(parents=True)
    context = IPFSContext(settings=resolve_settings(), ipfs_path=node / ".ipfs")
    missing = CLIBackend.detect(context)
    assert not missing.available and "PATH" in missing.reason

    beside = write_script(node / "ipfs", "exit 0\n")
    found = CLIBackend.detect(context)
    assert found.available and str(beside) in found.reason

    configured = write_script(tmp_path / "my-ipfs", "exit 0\n")
    settings = resolve_settings(ipfs_bin=str(configured))
    by_setting = CLIBackend.detect(IPFSContext(settings=settings, ipfs_path=node / ".ipfs"))
    assert by_setting.available and "ipfs_bin" in by_setting.reason

    settings = resolve_settings(ipfs_bin=str(tmp_path / "absent"))
    detection = CLIBackend.detect(IPFSContext(settings=settings))
    assert not detection.available
    with make_backend(tmp_path / "absent", None) as b, pytest.raises(IPFSUnavailableError):
        b.cat(TRI_CID)


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    # fault injection: a "binary" that hangs and leaves a child behind
    child_pid_file = tmp_path / "child.pid"
    fake = write_script(tmp_path / "ipfs", f"sleep 60 &\necho $! > {child_pid_file}\nwait\n")
    with make_backend(fake, tmp_path, timeout=1.0) as b:
        started = time.monotonic()
        with pytest.raises(IPFSTimeoutError) as info:
            b.cat(TRI_CID)
        assert time.monotonic() - started < 4
        assert info.value.cid == TRI_CID and info.value.backend == "cli"
    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the hanging child {child} survived the timeout")


def test_parse_ls_lines() -> None:
    js = _parse_ls_line("-rw-r--r-- - Qmbvkmk9LFsGneteXk3G7YLqtLVME566ho6ibaQZZVHaC9 2 a b.txt")
    assert js is not None and (js.name, js.size, js.type) == ("a b.txt", 2, "file")
    folder = _parse_ls_line("drwxr-xr-x - QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn - e/")
    assert folder is not None and (folder.name, folder.type) == ("e", "directory")
    kubo = _parse_ls_line("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn 4 sub/")
    assert kubo is not None and (kubo.name, kubo.type, kubo.size) == ("sub", "directory", 0)
    assert _parse_ls_line("") is None


# --- the real jsipfs -----------------------------------------------------------------------------


@pytest.mark.jsipfs
def test_repo_on_disk_round_trip(jsipfs_bin: Path, jsipfs_repo_factory: RepoFactory) -> None:
    repo, cids = jsipfs_repo_factory({"tri.txt": TRI})
    assert cids == {"tri.txt": TRI_CID}
    with make_backend(jsipfs_bin, repo) as b:
        assert b.cat(TRI_CID) == TRI
        assert b.cat(TRI_CID, offset=4, length=3) == TRI[4:7]
        with pytest.raises(ContentTooLargeError):
            b.cat(TRI_CID, max_size=10)
        data = os.urandom(300_000)
        cid = b.add_bytes(data)
        assert b.cat(cid) == data
        assert b.health().ok


@pytest.mark.jsipfs
def test_missing_block_and_bad_cid(jsipfs_bin: Path, jsipfs_repo_factory: RepoFactory) -> None:
    repo, _ = jsipfs_repo_factory({})
    with make_backend(jsipfs_bin, repo) as b:
        started = time.monotonic()
        with pytest.raises(ContentNotFoundError) as info:
            b.cat(ABSENT_CID)
        assert time.monotonic() - started < 15
        assert info.value.cid == ABSENT_CID and info.value.__cause__ is not None
        assert not b.has(ABSENT_CID)
        for bad in ("Qmbogus", "", "zzz"):
            with pytest.raises(InvalidCIDError):
                b.cat(bad)


@pytest.mark.jsipfs
def test_directory(jsipfs_bin: Path, jsipfs_repo_factory: RepoFactory, tmp_path: Path) -> None:
    repo, _ = jsipfs_repo_factory({})
    src = tmp_path / "src"
    (src / "sub" / "empty").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "b.txt").write_bytes(b"beta\n")
    with make_backend(jsipfs_bin, repo) as b:
        result = b.add_directory(src)
        paths = {e.path: e for e in result.entries}
        assert set(paths) == {"", "a.txt", "sub", "sub/b.txt", "sub/empty"}
        assert paths[""].cid == result.cid
        with pytest.raises(NotAFileError):
            b.cat(result.cid)
        listing = {e.name: e for e in b.ls(result.cid)}
        assert listing["a.txt"].type == "file" and listing["a.txt"].size == 6
        assert listing["sub"].type == "directory" and listing["sub"].cid == paths["sub"].cid
        dest = tmp_path / "out"
        assert b.get(result.cid, dest) == dest
        assert (dest / "a.txt").read_bytes() == b"alpha\n"
        assert (dest / "sub" / "b.txt").read_bytes() == b"beta\n"
        assert (dest / "sub" / "empty").is_dir()


@pytest.mark.jsipfs
def test_bin_args_reach_a_running_daemon(jsipfs_bin: Path, jsipfs_daemon: JsIpfsDaemon) -> None:
    from rubix_integration.ipfs.http import HTTPBackend

    http = HTTPBackend(IPFSContext(settings=resolve_settings(ipfs_api=jsipfs_daemon.url)))
    with http:
        cid = http.add_bytes(b"through the daemon")
    with make_backend(jsipfs_bin, jsipfs_daemon.repo, args=("--api", jsipfs_daemon.url)) as b:
        assert b.cat(cid) == b"through the daemon"
