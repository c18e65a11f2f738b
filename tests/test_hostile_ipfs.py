"""Hostile IPFS content: DAGs built to escape ``get``'s destination, to nest without end, to declare
huge sizes, oversized block files, and CID texts built to be slow to parse.

Every hostile DAG is built with the package's own dag-pb/UnixFS encoders and put into a real
embedded store (``local`` mode) or into the flatfs folder of a real kubo repo (``repo`` mode); the
CLI runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import gc
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rubix_integration._settings import Settings
from rubix_integration.codecs import (
    CID,
    DAG_JSON,
    DAG_PB,
    IDENTITY,
    RAW,
    PBLink,
    encode_pbnode,
    encode_unixfs,
    file_cid,
    multihash_digest,
    parse_cid,
)
from rubix_integration.codecs._cid import MAX_IDENTITY_DIGEST
from rubix_integration.codecs._unixfs import DIRECTORY, FILE, HAMT_SHARD, SYMLINK
from rubix_integration.errors import (
    ContentTooLargeError,
    CorruptBlockError,
    InvalidCIDError,
    IPFSError,
    RubixError,
)
from rubix_integration.ipfs._flatfs import FlatFS
from rubix_integration.ipfs.base import IPFSBackend, IPFSContext, IPFSDetection
from rubix_integration.ipfs.local import LocalBackend
from rubix_integration.ipfs.repo import RepoBackend
from tests.fixtures.kubo import KuboRepo

SCRIPT = Path(sys.executable).parent / "rubix-integration"
MODES = ("local", "repo")
# deeper than Python's recursion limit and than the package's depth bound
TOO_DEEP = 2_500


# --- where hostile blocks go ----------------------------------------------------------------------


@dataclass
class Place:
    """A store holding hostile blocks: the backend reading it and the CLI settings selecting it."""

    mode: str
    backend: IPFSBackend
    blocks: FlatFS
    env: dict[str, str]

    def put(self, block: bytes) -> CID:
        cid = CID(0, DAG_PB, multihash_digest(block))
        self.blocks.put(cid, block)
        return cid

    def file(self, data: bytes) -> CID:
        return self.put(encode_pbnode((), encode_unixfs(FILE, data=data, filesize=len(data))))

    def symlink(self, target: str) -> CID:
        return self.put(encode_pbnode((), encode_unixfs(SYMLINK, data=target.encode())))

    def directory(self, entries: list[tuple[str, CID]]) -> CID:
        # links in the order given: a real importer sorts them, a hostile one need not
        links = [PBLink(cid, name, 0) for name, cid in entries]
        return self.put(encode_pbnode(links, encode_unixfs(DIRECTORY)))

    def hamt(self, buckets: list[tuple[int, str, CID]]) -> CID:
        links = [PBLink(cid, f"{index:02X}{name}", 0) for index, name, cid in buckets]
        bitfield = sum(1 << index for index, _, _ in buckets)
        data = encode_unixfs(HAMT_SHARD, data=bitfield.to_bytes(32, "big").lstrip(b"\0"),
                             hash_type=0x22, fanout=256)
        return self.put(encode_pbnode(links, data))

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), "ipfs", args[0], "--ipfs", self.mode, *args[1:]],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env}, check=False)


@pytest.fixture(scope="module")
def kubo_repo(kubo_repo_factory: Callable[..., KuboRepo]) -> KuboRepo:
    return kubo_repo_factory({"seed.txt": b"a real kubo repo"})


@pytest.fixture(params=MODES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    settings = Settings(data_dir=tmp_path / "data")
    backend: IPFSBackend
    if request.param == "local":
        local = LocalBackend(IPFSContext(settings=settings))
        local.add_bytes(b"creates the store")
        blocks = FlatFS.create(local.root / "blocks")
        backend = local
        env = {"RUBIX_DATA_DIR": str(tmp_path / "data"), "RUBIX_INTEGRATION_ENABLED": "0"}
    else:
        kubo: KuboRepo = request.getfixturevalue("kubo_repo")
        repo = tmp_path / "kubo-repo"
        shutil.copytree(kubo.path, repo, symlinks=True)
        blocks = FlatFS.create(repo / "blocks")
        backend = RepoBackend(IPFSContext(settings=settings, ipfs_path=repo))
        env = {"RUBIX_IPFS_PATH": str(repo), "RUBIX_DATA_DIR": str(tmp_path / "data")}
    with backend:
        yield Place(request.param, backend, blocks, env)


def _one_error_line(out: subprocess.CompletedProcess[str], kind: str) -> str:
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith(f"Error: {kind}"), lines[0]
    return lines[0]


# --- get never writes outside its destination -----------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_bytes(b"original")
    return folder


def _outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"original"


def _link_target(outside: Path, name: str, relative: bool) -> str:
    # the link sits in <tmp>/out/dest; ../.. from there is <tmp>
    return f"../../outside/{name}" if relative else str(outside / name)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("second", ["file-over", "file-new", "directory"])
def test_get_never_writes_through_a_link(place: Place, outside: Path, tmp_path: Path,
                                         relative: bool, second: str) -> None:
    if second == "file-over":
        link = place.symlink(_link_target(outside, "victim.txt", relative))
        then = place.file(b"pwned")
    elif second == "file-new":
        link = place.symlink(_link_target(outside, "new.txt", relative))
        then = place.file(b"pwned")
    else:
        link = place.symlink(str(outside) if not relative else "../../outside")
        then = place.directory([("victim.txt", place.file(b"pwned")),
                                ("new.txt", place.file(b"pwned"))])
    root = place.directory([("evil", link), ("evil", then)])
    dest = tmp_path / "out" / "dest"
    with pytest.raises(IPFSError) as caught:
        place.backend.get(str(root), dest)
    assert type(caught.value).__name__ == "UnsafePathError"
    assert "evil" in str(caught.value)
    _outside_untouched(outside)

    out = place.cli("get", str(root), str(tmp_path / "out" / "again"))
    assert "evil" in _one_error_line(out, "UnsafePathError")
    _outside_untouched(outside)


def test_get_through_hamt_buckets_holding_one_name(place: Place, outside: Path,
                                                   tmp_path: Path) -> None:
    link = place.symlink(_link_target(outside, "victim.txt", relative=False))
    root = place.hamt([(0x00, "evil", link), (0x7F, "evil", place.file(b"pwned"))])
    with pytest.raises(IPFSError) as caught:
        place.backend.get(str(root), tmp_path / "out" / "dest")
    assert type(caught.value).__name__ == "UnsafePathError"
    _outside_untouched(outside)
    out = place.cli("get", str(root), str(tmp_path / "out" / "again"))
    _one_error_line(out, "UnsafePathError")
    _outside_untouched(outside)


def test_get_still_writes_a_tree_with_links(place: Place, tmp_path: Path) -> None:
    inner = place.directory([("b.txt", place.file(b"bee"))])
    root = place.directory([("a.txt", place.file(b"ay")), ("link", place.symlink("a.txt")),
                            ("sub", inner)])
    dest = tmp_path / "tree"
    assert place.backend.get(str(root), dest) == dest
    assert (dest / "a.txt").read_bytes() == b"ay"
    assert os.readlink(dest / "link") == "a.txt"
    assert (dest / "sub" / "b.txt").read_bytes() == b"bee"
    # a second get into the same folder replaces what the first wrote
    assert place.backend.get(str(root), dest) == dest
    assert (dest / "sub" / "b.txt").read_bytes() == b"bee"


def test_get_refuses_a_link_already_in_the_destination(place: Place, outside: Path,
                                                       tmp_path: Path) -> None:
    root = place.directory([("victim.txt", place.file(b"pwned")),
                            ("sub", place.directory([("x", place.file(b"pwned"))]))])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "victim.txt").symlink_to(outside / "victim.txt")
    (dest / "sub").symlink_to(outside)
    with pytest.raises(RubixError) as caught:
        place.backend.get(str(root), dest)
    assert type(caught.value).__name__ == "UnsafePathError"
    _outside_untouched(outside)


@pytest.mark.parametrize("case", ["file-then-directory", "directory-then-file",
                                  "directory-then-symlink", "long-name"])
def test_get_clashes_are_one_line(place: Place, tmp_path: Path, case: str) -> None:
    file = place.file(b"data")
    folder = place.directory([("x", place.file(b"inner"))])
    if case == "file-then-directory":
        root = place.directory([("same", file), ("same", folder)])
    elif case == "directory-then-file":
        root = place.directory([("same", folder), ("same", file)])
    elif case == "directory-then-symlink":
        root = place.directory([("same", folder), ("same", place.symlink("/tmp"))])
    else:
        root = place.directory([("n" * 300, file)])
    out = place.cli("get", str(root), str(tmp_path / "dest"))
    line = _one_error_line(out, "UnsafePathError")
    assert ("n" * 300 if case == "long-name" else "same") in line


# --- depth ----------------------------------------------------------------------------------------


def _dir_chain(place: Place, depth: int) -> CID:
    cid = place.file(b"bottom")
    name = "f"
    for _ in range(depth):
        cid = place.directory([(name, cid)])
        name = "d"
    return cid


@pytest.fixture
def deep_dest(tmp_path: Path) -> Iterator[Path]:
    """A folder for trees deeper than ``shutil.rmtree`` (and pytest's clean-up) can recurse:
    removed here with ``rm -rf``, which walks by descriptors without recursion limits."""
    folder = tmp_path / "deep-trees"
    folder.mkdir()
    yield folder
    subprocess.run(["rm", "-rf", "--", str(folder)], check=True, timeout=120)


def test_get_deep_directory_is_refused(place: Place, deep_dest: Path) -> None:
    root = _dir_chain(place, TOO_DEEP)
    with pytest.raises(RubixError) as caught:
        place.backend.get(str(root), deep_dest / "deep")
    assert type(caught.value).__name__ == "DAGTooDeepError"
    assert "2048" in str(caught.value)
    _one_error_line(place.cli("get", str(root), str(deep_dest / "deep2")), "DAGTooDeepError")


def test_get_directory_deeper_than_the_recursion_limit(tmp_path: Path, deep_dest: Path) -> None:
    local = LocalBackend(IPFSContext(settings=Settings(data_dir=tmp_path / "data")))
    place = Place("local", local, FlatFS.create(tmp_path / "data" / "ipfs" / "blocks"), {})
    depth = sys.getrecursionlimit() + 200
    dest = deep_dest / "deep"
    local.get(str(_dir_chain(place, depth)), dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        for _ in range(depth - 1):
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("f", os.O_RDONLY, dir_fd=fd), "rb") as fh:
            assert fh.read() == b"bottom"
    finally:
        os.close(fd)


def test_cat_deep_file_chain_is_refused(place: Place) -> None:
    cid = place.file(b"x")
    for _ in range(TOO_DEEP):
        cid = place.put(encode_pbnode([PBLink(cid, "", 0)],
                                      encode_unixfs(FILE, filesize=1, blocksizes=[1])))
    for call in (lambda: place.backend.cat(str(cid)),
                 lambda: place.backend.cat(str(cid), max_size=10),
                 lambda: b"".join(place.backend.iter_cat(str(cid)))):
        with pytest.raises(RubixError) as caught:
            call()
        assert type(caught.value).__name__ == "DAGTooDeepError"
    _one_error_line(place.cli("cat", str(cid)), "DAGTooDeepError")


def test_ls_deep_hamt_chain_is_refused(place: Place) -> None:
    cid = place.hamt([(0, "leaf", place.file(b"x"))])
    for _ in range(TOO_DEEP):
        cid = place.hamt([(0, "", cid)])
    with pytest.raises(RubixError) as caught:
        place.backend.ls(str(cid))
    assert type(caught.value).__name__ == "DAGTooDeepError"
    _one_error_line(place.cli("ls", str(cid)), "DAGTooDeepError")


# --- CID text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["z", "Qm", "f", "b", "m"])
def test_long_cid_text_is_refused_fast(prefix: str) -> None:
    text = prefix + "2" * 300_000 if prefix != "f" else prefix + "ab" * 150_000
    started = time.monotonic()
    with pytest.raises(InvalidCIDError) as caught:
        parse_cid(text)
    assert time.monotonic() - started < 0.5
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("base", ["base58btc", "base32", "base16", "base32upper"])
def test_largest_identity_cid_parses_in_every_base(base: str) -> None:
    data = os.urandom(MAX_IDENTITY_DIGEST)
    cid = CID(1, DAG_JSON, multihash_digest(data, IDENTITY))
    text = cid.encode(base)
    started = time.monotonic()
    assert parse_cid(text) == cid
    assert time.monotonic() - started < 1.0


def test_cid_caches_are_bounded_by_bytes() -> None:
    from rubix_integration.codecs import _cid

    # base16 text: its decoder is C code, so the measurement stays fast under tracemalloc
    texts = (CID(1, RAW, multihash_digest(i.to_bytes(4, "big") * 25_000, IDENTITY))
             .encode("base16") for i in range(300))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for text in texts:
            assert parse_cid(text).encode("base16") == text
        del text
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 24 * 2**20, f"{retained / 2**20:.0f} MiB held after parsing"
    # formatting a large inline CID leaves nothing behind either
    formats = _cid._format.cache_info().currsize
    big = CID(1, RAW, multihash_digest(b"y" * 100_000, IDENTITY))
    assert parse_cid(str(big)) == big
    assert _cid._format.cache_info().currsize == formats


@pytest.mark.parametrize(("text", "defect"), [
    ("QmNotACid", "46"),
    ("QmIsNotACidButLooksLikeOneAtFirstGlanceAbcdef0", "outside the base58btc alphabet"),
])
def test_v0_looking_text_reports_its_real_defect(text: str, defect: str,
                                                 tmp_path: Path) -> None:
    with pytest.raises(InvalidCIDError) as caught:
        parse_cid(text)
    message = str(caught.value)
    assert f"{text!r} is not a valid CID" in message and defect in message
    assert "multibase prefix" not in message
    out = subprocess.run([str(SCRIPT), "ipfs", "cat", "--ipfs", "local", text],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "RUBIX_DATA_DIR": str(tmp_path)})
    assert defect in _one_error_line(out, "InvalidCIDError")


# --- block files and content sizes ----------------------------------------------------------------


def _sparse_block(place: Place, size: int) -> CID:
    """A real block's CID whose block file is replaced by a sparse file of ``size`` bytes."""
    cid = place.file(b"a token's content")
    path = place.blocks.path(cid)
    with open(path, "r+b") as fh:
        fh.truncate(size)
    return cid


def test_oversized_block_file_is_refused_without_reading_it(place: Place) -> None:
    cid = _sparse_block(place, 64 * 2**20)
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(CorruptBlockError) as caught:
            place.backend.get_block(str(cid))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert peak < 2 * 2**20
    assert "limit" in str(caught.value)


def _limit_memory() -> None:
    # a runaway read fails fast here instead of taking the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


def test_16_gib_sparse_block_via_cli(place: Place) -> None:
    cid = _sparse_block(place, 16 * 2**30)
    started = time.monotonic()
    out = subprocess.run([str(SCRIPT), "ipfs", "cat", "--ipfs", place.mode, str(cid)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, **place.env}, preexec_fn=_limit_memory)
    assert "limit" in _one_error_line(out, "CorruptBlockError")
    assert time.monotonic() - started < 20


def _huge_file(place: Place) -> tuple[CID, int]:
    """A file DAG declaring about 1.4 TB whose leaves are one 256 KiB block used again and again."""
    leaf_size = 256 * 1024
    cid, size = place.file(os.urandom(leaf_size)), leaf_size
    for _ in range(3):
        block = encode_pbnode([PBLink(cid, "", size)] * 174,
                              encode_unixfs(FILE, filesize=size * 174, blocksizes=[size] * 174))
        cid, size = place.put(block), size * 174
    return cid, size


def _run_measured(args: list[str], env: dict[str, str]) -> tuple[int, int, int, str]:
    """Run the CLI; return exit status, bytes it wrote to stdout, its peak RSS (bytes), stderr."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=_limit_memory)
    assert proc.stdout is not None and proc.stderr is not None
    killer = threading.Timer(60, proc.kill)
    killer.start()
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()))  # type: ignore[union-attr]
    drain.start()
    written = 0
    try:
        while chunk := proc.stdout.read(1 << 20):
            written += len(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
        drain.join(10)
    return proc.returncode, written, usage.ru_maxrss * 1024, b"".join(errors).decode()


def test_cat_streams_a_huge_file_in_bounded_memory(place: Place) -> None:
    cid, size = _huge_file(place)
    assert size > 10**12
    env = {**os.environ, **place.env, "RUBIX_IPFS_TIMEOUT": "2"}
    started = time.monotonic()
    status, written, peak, stderr = _run_measured(
        [str(SCRIPT), "ipfs", "cat", "--ipfs", place.mode, str(cid)], env)
    assert time.monotonic() - started < 30
    out = subprocess.CompletedProcess([], status, "", stderr)
    _one_error_line(out, "IPFSTimeoutError")
    assert written > 20 * 2**20, "nothing was streamed before the time limit"
    assert peak < 250 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


def test_cat_max_size_stops_a_huge_file_at_once(place: Place) -> None:
    cid, _ = _huge_file(place)
    with pytest.raises(ContentTooLargeError):
        place.backend.cat(str(cid), max_size=10**6)
    out = place.cli("cat", "--max-size", "1000000", str(cid))
    _one_error_line(out, "ContentTooLargeError")
    assert out.stdout == ""


# --- the local pin database under concurrency -----------------------------------------------------


def test_pin_database_opened_by_many_backends_at_once(tmp_path: Path) -> None:
    # each round is a fresh pin database that 12 backends open at the same moment; before the
    # opening was serialised about one round in seventy failed with "database is locked"
    for round_ in range(150):
        root = tmp_path / f"r{round_}"
        LocalBackend(IPFSContext(settings=Settings(data_dir=root))).add_bytes(b"x", pin=False)
        backends = [LocalBackend(IPFSContext(settings=Settings(data_dir=root)))
                    for _ in range(12)]
        barrier = threading.Barrier(len(backends))
        failures: list[BaseException] = []

        def add(i: int, backends: list[LocalBackend] = backends,
                barrier: threading.Barrier = barrier, failures: list[BaseException] = failures
                ) -> None:
            try:
                barrier.wait(timeout=10)
                backends[i].add_bytes(b"pin %d" % i)
            except BaseException as exc:  # collected and reported below
                failures.append(exc)

        threads = [threading.Thread(target=add, args=(i,)) for i in range(len(backends))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert failures == []
        assert len(backends[0].pins()) == len(backends)
        for b in backends:
            b.close()


# --- the base class -------------------------------------------------------------------------------


class _DictBackend(IPFSBackend):
    """A minimal backend that only knows ``add_bytes``."""

    name = "dict-test"

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        self.added: dict[str, bytes] = {}

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        return IPFSDetection(True, "test")

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        cid = str(file_cid(data))
        self.added[cid] = data
        return cid


def test_add_file_falls_back_to_add_bytes(tmp_path: Path) -> None:
    backend = _DictBackend(IPFSContext(settings=Settings(data_dir=tmp_path)))
    payload = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(payload)
    cid = backend.add_file(tmp_path / "f.bin")
    assert cid == str(file_cid(payload)) and backend.added[cid] == payload
    with pytest.raises(IPFSError) as caught:
        backend.add_file(tmp_path / "missing.bin")
    assert caught.value.path == str(tmp_path / "missing.bin")
