"""``AsyncManager``: every awaitable, against the js-ipfs daemon and with the integration off, and
what a cancelled call leaves behind.

The stalling RPC server below is a fault injector (a daemon that sends part of an answer and then
stops), bound to 127.0.0.1; everything else talks to the real daemon and stores.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import AsyncManager, ContentNotFoundError, IPFSUnavailableError
from rubix_integration.datasets._local import local_backend
from tests.test_datasets_api import daemon_block

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TIMEOUT = 20.0
DATA = bytes(random.Random(4).randrange(256) for _ in range(700_000))  # three chunks and more


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IPFS_DATASETS_ENABLED", raising=False)
    monkeypatch.setenv("RUBIX_IPFS_PATH", str(tmp_path / "no-repo"))
    monkeypatch.setenv("RUBIX_IPFS_TIMEOUT", str(TIMEOUT))


def _config(tmp_path: Path, name: str, store_url: str | None = None,
            **more: Any) -> dict[str, Any]:
    return {"cache_dir": str(tmp_path / name),
            "store_url": store_url or f"sqlite:///{tmp_path / name}.db", **more}


@pytest.fixture(params=["ipfs", "off"])
def mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of each mode: the daemon's address, or the integration off."""
    if request.param == "ipfs":
        return {"ipfs_api": request.getfixturevalue("jsipfs_daemon").api_multiaddr}
    return {"enabled": "0"}


@pytest.fixture
async def am(tmp_path: Path, mode: dict[str, Any], store_url: str
             ) -> AsyncIterator[AsyncManager]:
    async with AsyncManager(_config(tmp_path, "one", store_url, **mode)) as manager:
        yield manager


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(DATA)
    (root / "sub" / "note.txt").write_text("note")
    return root


async def test_content_round_trip(am: AsyncManager, mode: dict[str, Any],
                                  tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    cid = await am.add_file(tree / "big.bin")
    assert cid.published is ("ipfs_api" in mode)
    assert await am.cat(cid) == DATA
    assert await am.cat(cid, max_size=len(DATA)) == DATA
    out = await am.get_file(cid, tmp_path / "out" / "big.bin")
    assert out.read_bytes() == DATA
    root = await am.add_directory(tree)
    entries = await am.list_directory(root)
    assert [(e["name"], e.type) for e in entries] == [("big.bin", "file"), ("sub", "directory")]
    got = await am.get_file(root, tmp_path / "copy")
    assert (got / "sub" / "note.txt").read_text() == "note"
    assert not list((tmp_path / "out").glob(".*.part")) and not list(tmp_path.glob(".*.part"))
    if "ipfs_api" not in mode:  # a daemon would look for it until the timeout
        with pytest.raises(ContentNotFoundError):
            await am.cat("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")


async def test_reads_from_the_daemon_go_through_the_async_client(
        jsipfs_daemon: Any, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    api = {"ipfs_api": jsipfs_daemon.api_multiaddr}
    async with AsyncManager(_config(tmp_path, "writer", **api)) as writer:
        cid = await writer.add_file(tree / "big.bin")
        root = await writer.add_directory(tree)
    assert daemon_block(jsipfs_daemon.url, cid) is not None
    async with AsyncManager(_config(tmp_path, "reader", **api)) as reader:
        local = local_backend(reader.manager)
        assert not local.has(cid)  # so every read below is served by the daemon
        assert await reader.cat(cid) == DATA
        assert reader._client is not None  # the native path was taken
        entries = await reader.list_directory(root)
        assert [e.name for e in entries] == ["big.bin", "sub"]
        assert entries[0].cid == cid and entries[0].size == len(DATA)
        assert entries == reader.filesystem.list_directory(root)  # as the sync backend reads it
        out = await reader.get_file(cid, tmp_path / "o.bin")
        assert out.read_bytes() == DATA
        tree_out = await reader.get_file(root, tmp_path / "o-tree")
        assert (tree_out / "big.bin").read_bytes() == DATA
        assert not local.has(cid)


async def test_records_and_tasks(am: AsyncManager, mode: dict[str, Any]) -> None:
    on = "ipfs_api" in mode
    logged = await am.log_event("model_loaded", {"model": "bert-base"})
    assert logged is not None and logged.published is on and bool(logged) is on
    tracked = await am.track_provenance("inference", {"model": "bert-base"})
    assert tracked is not None
    found = await am.query_logs({"type": "operation", "model": "bert-base"}, limit=10)
    assert [r.cid for r in found] == [tracked]
    task = await am.submit_task("t1", "inference", {"x": 1}, priority=3,
                                tags=["P2P_ELIGIBLE", "GPU_PREFERRED"])
    assert task["state"] == "pending"
    claimed = await am.get_next_task("w1", ["GPU"])
    assert claimed is not None and claimed["task_id"] == "t1"
    assert await am.get_next_task("w1", ["GPU"]) is None
    done = await am.complete_task("t1", {"ok": True})
    assert done.state == "completed"
    assert (await am.get_task_status("t1"))["result"] == {"ok": True}


async def test_sync_tokens(tmp_path: Path, store_url: str) -> None:
    from rubix_integration.tokens.demo import make_node

    ids = make_node(tmp_path / "nodes" / "n1", [b"one", b"two"], rng=random.Random(1))
    async with AsyncManager(_config(tmp_path, "sync", store_url, enabled="0")) as am:
        summary = await am.sync_tokens([tmp_path / "nodes"], processes=1)
        assert summary.ok and summary.databases_processed == 1 and summary.records == len(ids)


# --- cancellation ---------------------------------------------------------------------------------


async def _cancel_soon(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)  # let it start its work
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_writes_finish_whole_before_the_cancellation(
        am: AsyncManager, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    await _cancel_soon(am.log_event("cancelled", {"n": 1}))
    await _cancel_soon(am.track_provenance("cancelled-op", {"n": 2}))
    # when the cancellation is seen, the write is done: whole, and nothing still runs
    records = am.manager.provenance.query_logs({"n": 1}) + am.manager.provenance.query_logs(
        {"n": 2})
    assert len(records) == 2 and am.manager.provenance.verify().ok
    await _cancel_soon(am.add_file(tree / "big.bin"))
    await _cancel_soon(am.add_directory(tree))
    local = local_backend(am.manager)
    again = await am.add_directory(tree)  # the same CIDs, every block already there
    assert all(local.has(e.cid) for e in again.entries)
    await _cancel_soon(am.submit_task("c1", "job", {"n": 1}))
    assert (await am.get_task_status("c1")).state == "pending"
    await _cancel_soon(am.get_next_task("w", []))
    claimed = await am.get_task_status("c1")
    assert claimed.state == "running" and claimed.lease_token  # a whole claim; its lease runs out
    await _cancel_soon(am.complete_task("c1", {"r": 1}, force=True))
    assert (await am.get_task_status("c1")).state == "completed"
    await _cancel_soon(am.get_task_status("c1"))
    await _cancel_soon(am.query_logs({"n": 1}))
    await _cancel_soon(am.cat(again))  # a directory: refused or cancelled, nothing written


async def test_cancelled_sync_finishes_first(tmp_path: Path) -> None:
    from rubix_integration.tokens.demo import make_node

    make_node(tmp_path / "nodes" / "n1", [b"one"], rng=random.Random(2))
    async with AsyncManager(_config(tmp_path, "sync", enabled="0")) as am:
        await _cancel_soon(am.sync_tokens([tmp_path / "nodes"], processes=1))
        again = await am.sync_tokens([tmp_path / "nodes"], processes=1)
        assert again.databases_skipped == 1  # the cancelled sync had finished it


class _Stall:
    """An RPC server that answers ``version``, then sends part of ``cat``/``ls`` and stops."""

    def __init__(self) -> None:
        self.sent = threading.Event()
        self.release = threading.Event()
        stall = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.startswith("/api/v0/version"):
                    body = json.dumps({"Version": "0.0.0-stall"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(b"x" * 65536)
                self.wfile.flush()
                stall.sent.set()
                stall.release.wait(TIMEOUT)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}/http"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def stall() -> Iterator[_Stall]:
    server = _Stall()
    try:
        yield server
    finally:
        server.close()


CID = "QmYEJAPHxLsFGurqJBUA86PCsWnbmcTRmx5WSdySLa7KPz"


@pytest.mark.parametrize("call", ["cat", "get_file", "list_directory"])
async def test_cancelled_native_reads_stop_at_once_and_write_nothing(
        stall: _Stall, tmp_path: Path, call: str) -> None:
    dest = tmp_path / "out" / "file.bin"
    async with AsyncManager(_config(tmp_path, "stall", ipfs_api=stall.api)) as am:
        if call == "cat":
            task = asyncio.ensure_future(am.cat(CID))
        elif call == "get_file":
            task = asyncio.ensure_future(am.get_file(CID, dest))
        else:
            task = asyncio.ensure_future(am.list_directory(CID))
        while not stall.sent.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
    assert not dest.exists()
    assert not (dest.parent.exists() and list(dest.parent.iterdir()))  # no partial file left


async def test_daemon_gone_is_a_classified_error(tmp_path: Path) -> None:
    async with AsyncManager(_config(tmp_path, "gone", ipfs_api="/ip4/127.0.0.1/tcp/9",
                                    ipfs_mode="http")) as am:
        with pytest.raises(IPFSUnavailableError), pytest.warns(RuntimeWarning, match="http"):
            await am.cat(CID)
