"""The IPFS backend contract (``rubix_integration.testing``) run on every built-in backend.

Each backend serves the same content: ``local`` (the embedded store), ``repo`` (a kubo-layout repo
on disk), ``http`` (the js-ipfs daemon) and ``cli`` (``jsipfs --api`` against that daemon). A
backend written with only the methods CONTRIBUTING.md lists as required runs the suite too, and
the auto-detected chain closes the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from rubix_integration import (
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCIDError,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
    IPFSTimeoutError,
    Manager,
    hookimpl,
)
from rubix_integration._settings import resolve_settings
from rubix_integration.codecs import file_cid, parse_cid
from rubix_integration.ipfs.cli import CLIBackend
from rubix_integration.ipfs.http import HTTPBackend
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend
from rubix_integration.testing import (
    ContractContent,
    IPFSBackendContract,
    IPFSBackendFactory,
    serve_by_adding,
)
from rubix_integration.testing.ipfs_contract import ABSENT_CID
from tests.fixtures.jsipfs import JsIpfsDaemon


class TestLocalContract(IPFSBackendContract):
    backend_name = "local"
    load_plugins = ()

    @pytest.fixture
    def contract_ipfs_factory(self, tmp_path_factory: pytest.TempPathFactory
                              ) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            store = tmp_path_factory.mktemp("local")
            with LocalBackend(_local_context(store)) as writer:
                serve_by_adding(writer, content)
            return LocalBackend(_local_context(store))

        return make


class TestRepoContract(IPFSBackendContract):
    """The blocks the embedded store wrote, read as a kubo repo on disk."""

    backend_name = "repo"
    load_plugins = ()

    @pytest.fixture
    def contract_ipfs_factory(self, tmp_path_factory: pytest.TempPathFactory
                              ) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            store = tmp_path_factory.mktemp("repo")
            with LocalBackend(_local_context(store)) as writer:
                serve_by_adding(writer, content)
            return RepoBackend(IPFSContext(settings=resolve_settings(env={}),
                                           ipfs_path=store / "ipfs"))

        return make


class TestHTTPContract(IPFSBackendContract):
    backend_name = "http"
    load_plugins = ()

    @pytest.fixture
    def contract_ipfs_factory(self, jsipfs_daemon: JsIpfsDaemon) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            backend = _http(jsipfs_daemon)
            try:
                serve_by_adding(backend, content)
            except BaseException:
                backend.close()
                raise
            return backend

        return make


class TestCLIContract(IPFSBackendContract):
    """``jsipfs --api`` against the daemon; each call starts a process, so fewer malformed CIDs."""

    backend_name = "cli"
    load_plugins = ()
    malformed_cids = ("",)

    @pytest.fixture
    def contract_ipfs_factory(self, jsipfs_daemon: JsIpfsDaemon, jsipfs_bin: Path
                              ) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            with _http(jsipfs_daemon) as http:
                serve_by_adding(http, content)
            return CLIBackend(IPFSContext(
                settings=resolve_settings(env={}, ipfs_bin=str(jsipfs_bin),
                                          ipfs_bin_args=["--api", jsipfs_daemon.url]),
                ipfs_path=jsipfs_daemon.repo, timeout=30))

        return make


def _local_context(store: Path) -> IPFSContext:
    return IPFSContext(settings=resolve_settings(env={}, data_dir=store))


def _http(daemon: JsIpfsDaemon) -> HTTPBackend:
    return HTTPBackend(IPFSContext(
        settings=resolve_settings(env={}, ipfs_api=daemon.api_multiaddr),
        ipfs_path=daemon.repo, timeout=20))


# --- the least a backend implements --------------------------------------------------------------


class MinimalBackend(IPFSBackend):
    """Files kept in memory, with only ``detect``, ``iter_cat`` and ``add_bytes`` written."""

    name = "contract-minimal"
    priority = 95

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        self._blocks: dict[bytes, bytes] = {}

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        return IPFSDetection(True, "kept in memory")

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        key = parse_cid(cid).multihash
        if key not in self._blocks:
            raise ContentNotFoundError(f"{cid} is not held", cid=cid, backend=self.name)
        data = self._blocks[key]
        if max_size is not None and len(data) > max_size:
            raise ContentTooLargeError(f"{cid} holds {len(data)} bytes", cid=cid,
                                       backend=self.name)
        yield data[offset:None if length is None else offset + length]

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        cid = file_cid(data)
        self._blocks[cid.multihash] = data
        return str(cid)


class MinimalPlugin:
    @hookimpl
    def register_ipfs_backends(self) -> list[type[IPFSBackend]]:
        return [MinimalBackend]


class TestMinimalBackendContract(IPFSBackendContract):
    backend_name = "contract-minimal"
    load_plugins = ()
    plugins: ClassVar[list[object]] = [MinimalPlugin()]
    serves_directories = False

    @pytest.fixture
    def contract_ipfs_factory(self) -> IPFSBackendFactory:
        def make(content: ContractContent) -> IPFSBackend:
            backend = MinimalBackend(IPFSContext(settings=resolve_settings(env={})))
            for name, data in content.files.items():
                assert backend.add_bytes(data) == content.cids[name]
            return backend

        return make


# --- the chain auto-detection builds -------------------------------------------------------------


def test_auto_reads_from_disk_and_falls_back_to_the_daemon(
    jsipfs_daemon: JsIpfsDaemon, tmp_path: Path
) -> None:
    """A node whose repo lacks a block still gets it through its daemon."""
    node_repo = tmp_path / "node" / ".ipfs"
    disk = LocalBackend(IPFSContext(settings=resolve_settings(env={}),
                                    options={"local_path": str(node_repo)}))
    on_disk = disk.add_bytes(b"TRI 1 only on disk")
    disk.close()
    http = _http(jsipfs_daemon)
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
            backend.cat(ABSENT_CID, timeout=2)
        with pytest.raises(InvalidCIDError):
            backend.cat("nonsense")
