"""The behaviour every IPFS access backend shares, as a pytest class to subclass.

A backend passes when it serves the suite's content with the same bytes, and fails with the same
classified errors, as every other backend (the contract of :mod:`rubix_integration.ipfs.base`)::

    import pytest
    from rubix_integration.testing import ContractContent, IPFSBackendContract

    class TestMyBackend(IPFSBackendContract):
        backend_name = "mybackend"          # the name the plugin registers

        @pytest.fixture
        def contract_ipfs_factory(self, tmp_path_factory):
            def make(content: ContractContent) -> MyBackend:
                ...                         # build a backend that serves `content`
            return make

The factory receives a :class:`ContractContent` and returns a backend serving it: a writable
backend can add it with :func:`serve_by_adding`; a read-only one is given the bytes some other
way. The suite closes each backend it gets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import pytest

from rubix_integration._settings import resolve_settings
from rubix_integration.codecs import file_cid
from rubix_integration.errors import (
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCIDError,
    IPFSTimeoutError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs.base import Health, IPFSBackend, IPFSContext, IPFSDetection

__all__ = [
    "ABSENT_CID",
    "ContractContent",
    "IPFSBackendContract",
    "IPFSBackendFactory",
    "serve_by_adding",
]

#: A well-formed CID that no backend holds.
ABSENT_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX"

CHUNK = 262_144  # kubo's default chunk size: "large" spans three leaves


@cache
def _files() -> dict[str, bytes]:
    return {
        "empty": b"",
        "text": b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u",
        "chunk": random.Random(1).randbytes(CHUNK),
        "large": random.Random(2).randbytes(700_000),
    }


@dataclass(frozen=True)
class ContractContent:
    """What the suite asks a backend to serve, and the CIDs ``ipfs add`` gives it.

    ``folder`` holds each of ``files`` under its name, and ``tree`` (``folder / "tree"``): a
    directory with ``a.txt`` and ``sub/b.bin``. ``cids`` and ``tree_cid`` are the CIDs kubo's
    default settings give them (CIDv0, 256 KiB chunks, balanced DAG).
    """

    folder: Path
    files: Mapping[str, bytes]
    cids: Mapping[str, str]
    tree: Path
    tree_cid: str

    def path(self, name: str) -> Path:
        """The file holding ``files[name]``."""
        return self.folder / name


#: What a test module provides as the ``contract_ipfs_factory`` fixture.
IPFSBackendFactory = Callable[[ContractContent], IPFSBackend]


def make_content(folder: Path) -> ContractContent:
    """Write the suite's content below ``folder``; compute its CIDs with the embedded importer."""
    from rubix_integration.ipfs.local import LocalBackend

    files = _files()
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    tree = folder / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "sub" / "b.bin").write_bytes(random.Random(3).randbytes(300_000))
    settings = resolve_settings(env={}, data_dir=folder.parent / f"{folder.name}-importer")
    with LocalBackend(IPFSContext(settings=settings)) as importer:
        cids = {name: str(file_cid(data)) for name, data in files.items()}
        tree_cid = importer.add_directory(tree, pin=False).cid
    return ContractContent(folder=folder, files=files, cids=cids, tree=tree, tree_cid=tree_cid)


def serve_by_adding(backend: IPFSBackend, content: ContractContent) -> None:
    """Add ``content`` through the backend's own ``add_file`` and ``add_directory``.

    Fails when the backend computes other CIDs than ``ipfs add`` does.
    """
    got = {name: backend.add_file(content.path(name)) for name in content.files}
    assert got == dict(content.cids), f"{backend.name}: add_file gave other CIDs than `ipfs add`"
    tree = backend.add_directory(content.tree).cid
    assert tree == content.tree_cid, f"{backend.name}: add_directory gave {tree}, " \
                                     f"`ipfs add -r` gives {content.tree_cid}"


class IPFSBackendContract:
    """The IPFS backend contract; subclass it as ``Test…`` and provide ``contract_ipfs_factory``.

    Class attributes to set:

    - ``backend_name``: the name the backend registers (what ``RUBIX_IPFS`` selects);
    - ``load_plugins``: the installed plugins the registry loads to find it (``None``: every
      entry point of the group ``rubix_integration``; ``()``: only the built-ins);
    - ``plugins``: plugin objects registered directly, for a backend that has no entry point;
    - ``serves_directories``: ``False`` for a backend without ``ls``/``get``; the suite then
      expects them to raise ``UnsupportedOperationError``;
    - ``malformed_cids``: the malformed CIDs each tried once (fewer for a slow backend).
    """

    backend_name: ClassVar[str] = ""
    load_plugins: ClassVar[Sequence[str] | None] = None
    plugins: ClassVar[Sequence[object]] = ()
    serves_directories: ClassVar[bool] = True
    malformed_cids: ClassVar[tuple[str, ...]] = ("not-a-cid", "Qm123", "")

    # --- fixtures --------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def contract_content(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractContent:
        """The content every test reads (written once per class)."""
        return make_content(tmp_path_factory.mktemp("contract") / "content")

    @pytest.fixture
    def contract_backend(
        self,
        contract_ipfs_factory: IPFSBackendFactory,
        contract_content: ContractContent,
    ) -> Iterator[IPFSBackend]:
        """The backend under test, serving ``contract_content``; closed afterwards."""
        backend = contract_ipfs_factory(contract_content)
        try:
            yield backend
        finally:
            backend.close()

    def registered_class(self) -> type[IPFSBackend]:
        """The class registered under ``backend_name`` through the plugin hooks."""
        from rubix_integration._plugins import Plugins

        assert self.backend_name, f"{type(self).__name__}: set backend_name"
        registry = Plugins(load_plugins=self.load_plugins, extra=self.plugins).ipfs_backends()
        assert self.backend_name in registry, (
            f"no plugin registers an IPFS backend named {self.backend_name!r} "
            f"(registered: {', '.join(registry)})")
        return registry[self.backend_name]

    # --- identity and detection ------------------------------------------------------------------

    def test_backend_is_the_registered_class(self, contract_backend: IPFSBackend) -> None:
        cls = self.registered_class()
        assert isinstance(contract_backend, cls)
        assert contract_backend.name == self.backend_name
        assert isinstance(cls.priority, int) and isinstance(cls.read_only, bool)

    def test_detect_offers_the_served_context(self, contract_backend: IPFSBackend) -> None:
        detection = type(contract_backend).detect(contract_backend.context)
        assert isinstance(detection, IPFSDetection)
        assert detection.available, detection.reason
        assert isinstance(detection.reason, str) and detection.reason.strip()

    def test_detect_is_quick_and_writes_nothing(self, tmp_path: Path) -> None:
        cls = self.registered_class()
        absent = tmp_path / "absent" / ".ipfs"
        context = IPFSContext(settings=resolve_settings(env={}, data_dir=tmp_path / "data"),
                              ipfs_path=absent, timeout=2)
        started = time.monotonic()
        for ctx in (context, IPFSContext(settings=context.settings, ipfs_path=None, timeout=2)):
            detection = cls.detect(ctx)
            assert isinstance(detection, IPFSDetection)
            assert isinstance(detection.reason, str) and detection.reason.strip()
        assert time.monotonic() - started < 10
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "detect() created files"

    def test_health_reports_without_raising(self, contract_backend: IPFSBackend) -> None:
        health = contract_backend.health()
        assert isinstance(health, Health)
        assert health.ok, health.detail

    # --- reading ---------------------------------------------------------------------------------

    def test_cat_returns_the_served_bytes(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        for name, data in contract_content.files.items():
            got = contract_backend.cat(contract_content.cids[name])
            assert isinstance(got, bytes), name
            assert got == data, name

    @pytest.mark.parametrize(
        ("offset", "length"),
        [(0, 10), (CHUNK - 100, 200), (262_000, 1_000), (699_990, None), (699_995, 100)],
        ids=["head", "across-a-leaf", "across-a-leaf-2", "tail", "past-the-end"],
    )
    def test_range_read(
        self, contract_backend: IPFSBackend, contract_content: ContractContent,
        offset: int, length: int | None,
    ) -> None:
        data = contract_content.files["large"]
        end = None if length is None else offset + length
        got = contract_backend.cat(contract_content.cids["large"], offset=offset, length=length)
        assert got == data[offset:end]

    def test_streamed_read_equals_whole_read(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        chunks = list(contract_backend.iter_cat(contract_content.cids["large"]))
        assert all(isinstance(c, bytes) for c in chunks)
        assert b"".join(chunks) == contract_content.files["large"]

    def test_max_size_refuses_larger_content(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        cid = contract_content.cids["large"]
        with pytest.raises(ContentTooLargeError) as info:
            contract_backend.cat(cid, max_size=1000)
        assert info.value.cid == cid
        text = contract_content.files["text"]
        got = contract_backend.cat(contract_content.cids["text"], max_size=len(text))
        assert got == text

    def test_missing_content_fails_within_the_timeout(
        self, contract_backend: IPFSBackend
    ) -> None:
        started = time.monotonic()
        with pytest.raises((ContentNotFoundError, IPFSTimeoutError)) as info:
            contract_backend.cat(ABSENT_CID, timeout=2)
        assert time.monotonic() - started < 15
        assert info.value.cid == ABSENT_CID

    def test_malformed_cid_is_classified(self, contract_backend: IPFSBackend) -> None:
        for text in self.malformed_cids:
            with pytest.raises(InvalidCIDError):
                contract_backend.cat(text)

    def test_concurrent_reads_agree(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        names = ["text", "chunk", "large", "text"]
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            got = list(pool.map(
                lambda name: contract_backend.cat(contract_content.cids[name]), names))
        assert got == [contract_content.files[n] for n in names]

    def test_has_answers_for_held_and_absent_content(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        try:
            held = contract_backend.has(contract_content.cids["text"])
        except UnsupportedOperationError:
            pytest.skip(f"{self.backend_name} does not implement has()")
        assert held is True
        # a local question: it never waits for the network, so a short limit is plenty
        assert contract_backend.has(ABSENT_CID, timeout=5) is False

    # --- directories -----------------------------------------------------------------------------

    def test_directory_is_not_a_file(
        self, contract_backend: IPFSBackend, contract_content: ContractContent
    ) -> None:
        if not self.serves_directories:
            pytest.skip(f"{self.backend_name} serves no directories")
        with pytest.raises(NotAFileError) as info:
            contract_backend.cat(contract_content.tree_cid)
        assert info.value.cid == contract_content.tree_cid

    def test_ls_and_get_of_a_tree(
        self, contract_backend: IPFSBackend, contract_content: ContractContent, tmp_path: Path
    ) -> None:
        if not self.serves_directories:
            for call in (lambda: contract_backend.ls(contract_content.tree_cid),
                         lambda: contract_backend.get(contract_content.tree_cid, tmp_path / "o")):
                with pytest.raises(UnsupportedOperationError):
                    call()
            return
        entries = {e.name: e for e in contract_backend.ls(contract_content.tree_cid)}
        assert set(entries) == {"a.txt", "sub"}
        assert entries["a.txt"].type == "file" and entries["sub"].type == "directory"
        assert entries["a.txt"].size == 6
        out = contract_backend.get(contract_content.tree_cid, tmp_path / "out")
        assert (out / "a.txt").read_bytes() == b"alpha\n"
        sub = contract_content.tree / "sub" / "b.bin"
        assert (out / "sub" / "b.bin").read_bytes() == sub.read_bytes()

    # --- writing ---------------------------------------------------------------------------------

    def test_add_gives_the_cid_of_ipfs_add_or_is_refused(
        self, contract_backend: IPFSBackend, tmp_path: Path
    ) -> None:
        data = b"contract add " + random.Random(4).randbytes(64)
        path = tmp_path / "added.bin"
        path.write_bytes(data)
        if contract_backend.read_only:
            with pytest.raises(UnsupportedOperationError):
                contract_backend.add_bytes(data)
            with pytest.raises(UnsupportedOperationError):
                contract_backend.add_file(path)
            return
        expected = str(file_cid(data))
        assert contract_backend.add_bytes(data) == expected
        # add_file falls back to add_bytes in the base class: a backend gets it for free
        assert contract_backend.add_file(path) == expected
        assert contract_backend.cat(expected) == data

    # --- lifecycle -------------------------------------------------------------------------------

    def test_close_is_idempotent(self, contract_backend: IPFSBackend) -> None:
        with contract_backend as entered:
            assert entered is contract_backend
        contract_backend.close()  # a second close, and the fixture's third, must not raise
