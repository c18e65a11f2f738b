"""The example product-review app on three nodes (SQLite, PostgreSQL, SQLite): what is created on
one node shows up on the others, both ways, and a delete travels too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_replication_support import free_port, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.postgres]

APP = Path(__file__).resolve().parents[1] / "examples" / "replication_app" / "app.py"


@pytest.fixture
def nodes(tmp_path: Path, pg_database: str) -> Iterator[list[str]]:
    stores = [f"sqlite:///{tmp_path / 'node1.sqlite'}", pg_database,
              f"sqlite:///{tmp_path / 'node3.sqlite'}"]
    ports = [free_port() for _ in stores]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (store, port) in enumerate(zip(stores, ports, strict=True)):
            peers = [a for u in urls if u != urls[i] for a in ("--peer", u)]
            log = (tmp_path / f"node{i + 1}.log").open("wb")
            procs.append(subprocess.Popen(
                [sys.executable, str(APP), "--port", str(port), "--node-id", f"node{i + 1}",
                 "--store", store, "--interval", "2", *peers], stdout=log,
                stderr=subprocess.STDOUT))

        def up() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"a node exited: {proc.returncode}")
            try:
                return all(httpx.get(u + "/p2p/status", timeout=1).status_code == 200
                           for u in urls)
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the three nodes")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _names(url: str, table: str) -> list[str]:
    found: list[dict[str, Any]] = httpx.get(f"{url}/{table}/", timeout=10).json()
    return [str(r.get("name") or r.get("body")) for r in found]


def test_created_on_one_node_seen_on_the_others_and_back(nodes: list[str]) -> None:
    one, two, three = nodes
    made = httpx.post(f"{one}/products/", json={"name": "Test Product",
                                                 "description": "From Node 1"}, timeout=10)
    assert made.status_code == 201 and made.json()["origin_node"] == "node1"
    wait_for(lambda: "Test Product" in _names(two, "products"), 20, "the product on node 2")
    httpx.post(f"{two}/categories/", json={"name": "Test Category",
                                           "description": "From Node 2"}, timeout=10)
    wait_for(lambda: "Test Category" in _names(one, "categories"), 20,
             "the category on node 1")
    product = made.json()["id"]
    httpx.post(f"{three}/reviews/", json={"product_id": product, "rating": 5,
                                          "body": "From Node 3"}, timeout=10)
    httpx.post(f"{three}/users/", json={"name": "Ada"}, timeout=10)
    for url in (one, two):
        wait_for(lambda u=url: "From Node 3" in _names(u, "reviews")  # type: ignore[misc]
                 and "Ada" in _names(u, "users"), 20, "the review and user everywhere")
    assert httpx.delete(f"{two}/products/{product}", timeout=10).status_code == 200
    for url in (one, three):
        wait_for(lambda u=url: "Test Product" not in _names(u, "products"),  # type: ignore[misc]
                 20, "the delete everywhere")
    status = httpx.get(f"{one}/p2p/status", timeout=10).json()
    assert status["active_peers"] == 2
    assert {"users", "categories", "products", "reviews"} <= set(status["tables"])
    assert httpx.post(f"{one}/products/", json={"description": "no name"},
                      timeout=10).status_code == 422
