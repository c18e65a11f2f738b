"""Provenance records against the js-ipfs reference node: same CID for the same block."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import Manager
from rubix_integration.codecs import dagjson

TIMEOUT = 20.0


def _rpc(url: str, path: str, body: bytes | None = None) -> Any:
    boundary = uuid.uuid4().hex
    data = None
    headers = {}
    if body is not None:
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"block\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(f"{url}/api/v0/{path}", data=data or b"", headers=headers,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return response.read()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    with Manager(store_url=f"sqlite:///{tmp_path / 'p.sqlite'}") as m:
        yield m


def test_dag_put_on_the_daemon_gives_the_record_cid(manager: Manager, jsipfs_daemon: Any) -> None:
    logger = manager.provenance
    first = logger.log_event("ingest", {"file": "a.csv", "n": 3, "ratio": 0.25, "ok": True,
                                        "none": None, "nested": {"b": [1, 2.5], "a": "x"},
                                        "text": "line\n\"quoted\" é ✓"})
    second = logger.log_transformation("resize", {"w": 64}, input_cid=first,
                                       output_cid=first)
    third = logger.log_event("raw", {"bytes": b"\x00\x01binary", "big": 2**53 - 1,
                                     "small": 1e-7, "large": 1.5e300})
    for cid in (first, second, third):
        block = logger.get_block(cid)
        answer = json.loads(_rpc(
            jsipfs_daemon.url,
            "dag/put?store-codec=dag-json&input-codec=dag-json&hash=sha2-256&pin=false"
            "&timeout=10s", block))
        assert answer["Cid"]["/"] == cid, block
        # and the daemon's copy of the block is byte for byte ours
        stored = _rpc(jsipfs_daemon.url, f"block/get?arg={cid}&timeout=10s")
        assert stored == block


def test_publish_pushes_blocks_to_the_daemon(manager: Manager, jsipfs_daemon: Any) -> None:
    from rubix_integration._settings import resolve_settings
    from rubix_integration.ipfs.base import IPFSContext
    from rubix_integration.ipfs.http import HTTPBackend

    cids = [manager.log_event("e", {"i": i}) for i in range(3)]
    settings = resolve_settings(ipfs_api=jsipfs_daemon.api_multiaddr)
    with HTTPBackend(IPFSContext(settings=settings, timeout=TIMEOUT)) as backend:
        assert manager.provenance.publish(backend) == 3
    for cid in cids:
        got = _rpc(jsipfs_daemon.url, f"block/get?arg={cid}&timeout=10s")
        assert got == manager.provenance.get_block(cid)
        assert str(dagjson.cid_for_block(got)) == cid
    assert manager.provenance.status()["local_only"] == 0
