"""The ``/p2p`` endpoints served by uvicorn on loopback: authentication (bearer, HMAC, roles),
HTTPS with a throwaway CA, payload limits, secrets kept out of answers, and discovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from rubix_integration import Manager
from rubix_integration.errors import ReplicationAuthError
from rubix_integration.replication import Credential, SyncConfig
from rubix_integration.replication.auth import Authenticator, sign
from rubix_integration.replication.discovery import Discovery, parse_service, service_info
from tests.test_replication_support import Node, T, free_port, put, rows, task_row, wait_for

pytestmark = pytest.mark.timeout(120)

ADMIN = "admin-token-1f6c"
READER = "reader-token-77aa"


class Served:
    """A Manager's replication app under uvicorn in a thread."""

    def __init__(self, tmp: Path, name: str, *, credentials: Sequence[Credential] = (),
                 peers: Sequence[dict[str, Any]] = (), config: SyncConfig | None = None,
                 tls: Any = None) -> None:
        import uvicorn

        self.manager = Manager(store_url=f"sqlite:///{tmp / f'{name}.sqlite'}",
                               data_dir=tmp / name)
        self.manager.replication.set_node_id(name)
        self.manager.replication.configure(
            name=name, credentials=list(credentials), peers=list(peers),
            config=config or SyncConfig(interval_s=30, timeout_s=5, max_retries=1,
                                        backoff_s=0.05))
        self.port = free_port()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
        self.server = uvicorn.Server(uvicorn.Config(
            self.manager.replication.app(), host="127.0.0.1", port=self.port,
            log_level="warning", **ssl))
        self.thread = threading.Thread(target=self.server.run)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, f"{name} to start")

    @property
    def store(self) -> Any:
        return self.manager.store

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.manager.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    made: list[Served] = []

    def make(name: str, **kwargs: Any) -> Served:
        node = Served(tmp_path, name, **kwargs)
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        node.close()


def test_bearer_tokens_and_roles_guard_every_endpoint(served: Any) -> None:
    node = served("node-a", credentials=[Credential("ops", "admin", token=ADMIN),
                                         Credential("viewer", "read-only", token=READER)])
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reader = {"Authorization": f"Bearer {READER}"}
    with httpx.Client(base_url=node.url, timeout=10) as client:
        assert client.get("/p2p/status").status_code == 401
        assert client.get("/p2p/status", headers={"Authorization": "Bearer nope"}
                          ).status_code == 401
        assert client.get("/p2p/status", headers=reader).json()["node_id"] == "node-a"
        assert client.get("/p2p/table/workflow_tasks/changes", headers=reader,
                          params={"since": "2020-01-01T00:00:00Z"}).status_code == 200
        assert client.post("/p2p/notify-changes", json={}, headers=reader).status_code == 403
        refused = client.post("/p2p/peers", json={"url": "http://127.0.0.1:9"},
                              headers=reader)
        assert refused.status_code == 403 and "read-only" in refused.text
        added = client.post("/p2p/peers", headers=admin, json={
            "url": "http://127.0.0.1:9", "peer_id": "far", "token": "peer-secret-token-9"})
        assert added.status_code == 201 and added.json()["authenticated"] is True
        listing = client.get("/p2p/peers", headers=reader)
        assert "peer-secret-token-9" not in listing.text and ADMIN not in listing.text
        assert [p["peer_id"] for p in listing.json()["peers"]] == ["far"]
        assert client.delete("/p2p/peers/far", headers=reader).status_code == 403
        assert client.delete("/p2p/peers/far", headers=admin).status_code == 200
        assert client.delete("/p2p/peers/far", headers=admin).status_code == 404
        # the feed's errors: unknown table, bad cursor, bad limit
        assert client.get("/p2p/table/nope/changes", headers=reader).status_code == 404
        assert client.get("/p2p/table/workflow_tasks/changes", headers=reader,
                          params={"cursor": "zzz"}).status_code == 422
        assert client.get("/p2p/table/workflow_tasks/changes", headers=reader,
                          params={"limit": "x"}).status_code == 422
    peer = node.manager.replication.service.peers
    assert "peer-secret" not in repr(peer) and ADMIN not in repr(Credential("x", token=ADMIN))


def test_hmac_signed_peers_sync_and_a_bad_signature_is_refused(served: Any) -> None:
    secret = "shared-secret-between-a-and-b"
    b = served("node-b", credentials=[Credential("node-a", "peer", secret=secret)])
    put(b.store, "from-b", "pending")
    a = served("node-a", peers=[{"url": b.url, "peer_id": "node-b", "secret": secret}])
    a.manager.replication.start()
    records = a.manager.replication.sync_now(timeout=30)
    assert records[0]["ok"], records
    assert "from-b" in rows(a.store)
    target = "/p2p/status"
    good = sign(peer_id="node-a", token=None, secret=secret, method="GET", target=target)
    assert httpx.get(b.url + target, headers=good, timeout=5).status_code == 200
    forged = {**good, "X-Rubix-Signature": "0" * 64}
    assert httpx.get(b.url + target, headers=forged, timeout=5).status_code == 401
    other = sign(peer_id="node-a", token=None, secret="wrong", method="GET", target=target)
    assert httpx.get(b.url + target, headers=other, timeout=5).status_code == 401
    # a signature for another path does not open this one
    moved = sign(peer_id="node-a", token=None, secret=secret, method="GET",
                 target="/p2p/peers")
    assert httpx.get(b.url + target, headers=moved, timeout=5).status_code == 401


def test_signatures_expire_and_roles_order() -> None:
    auth = Authenticator([Credential("p", "peer", secret="s"),
                          Credential("r", "read-only", token="t")])
    old = sign(peer_id="p", token=None, secret="s", method="GET", target="/x",
               now=time.time() - 3600)
    with pytest.raises(ReplicationAuthError, match="window"):
        auth.check("GET", "/x", {k.lower(): v for k, v in old.items()}, b"", "read-only")
    fresh = sign(peer_id="p", token=None, secret="s", method="POST", target="/x", body=b"{}")
    headers = {k.lower(): v for k, v in fresh.items()}
    assert auth.check("POST", "/x", headers, b"{}", "peer") is not None
    with pytest.raises(ReplicationAuthError, match="bad signature"):
        auth.check("POST", "/x", headers, b"{\"tampered\": 1}", "peer")
    with pytest.raises(ReplicationAuthError, match="needs 'admin'"):
        auth.check("POST", "/x", headers, b"{}", "admin")
    with pytest.raises(ReplicationAuthError, match="needs 'peer'"):
        auth.check("GET", "/x", {"authorization": "Bearer t"}, b"", "peer")
    assert Authenticator().check("GET", "/x", {}, b"", "admin") is None  # an open node
    with pytest.raises(ValueError, match="neither a token nor a secret"):
        Credential("x")


def test_https_peers_are_verified_against_the_given_ca(served: Any, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / "cert.pem", tmp_path / "key.pem",
                                    tmp_path / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    b = served("node-b", tls=(str(cert_file), str(key_file)))
    put(b.store, "over-tls", "pending")
    quick = SyncConfig(interval_s=30, timeout_s=5, max_retries=0)
    trusting = served("node-a", peers=[{"url": b.url, "peer_id": "node-b"}],
                      config=SyncConfig(interval_s=30, timeout_s=5, max_retries=0,
                                        verify=str(ca_file)))
    doubting = served("node-c", peers=[{"url": b.url, "peer_id": "node-b"}], config=quick)
    for node in (trusting, doubting):
        node.manager.replication.start()
    assert trusting.manager.replication.sync_now(timeout=30)[0]["ok"]
    assert "over-tls" in rows(trusting.store)
    failed = doubting.manager.replication.sync_now(timeout=30)[0]
    assert not failed["ok"] and "CERTIFICATE_VERIFY_FAILED" in failed["error"]
    assert "over-tls" not in rows(doubting.store)


def test_payload_limits_and_pushed_rows_are_checked(served: Any) -> None:
    node = served("node-a", config=SyncConfig(interval_s=30, max_payload=20_000))
    with httpx.Client(base_url=node.url, timeout=10) as client:
        huge = {"padding": "x" * (1024 * 1024 + 10)}
        assert client.post("/p2p/notify-changes", json=huge).status_code == 413
        rows_ = [{"task_id": f"k{i}"} for i in range(2000)]
        assert client.post("/p2p/sync/bidirectional",
                           json={"table": "workflow_tasks", "changes": rows_}
                           ).status_code == 413
        bad = client.post("/p2p/sync/bidirectional", json={
            "node_id": "node-x", "table": "workflow_tasks",
            "changes": [{"task_id": "k", "evil_column": 1}]})
        assert bad.status_code == 422 and "unknown column" in bad.text
        assert client.post("/p2p/sync/bidirectional", json={
            "table": "secrets", "changes": [{"a": 1}]}).status_code == 404
        assert client.post("/p2p/notify-changes", content=b"{not json").status_code == 400
    assert rows(node.store) == {}


def test_a_read_only_peer_is_read_but_never_applied(served: Any) -> None:
    b = served("node-b")
    put(b.store, "from-b", "pending")
    a = served("node-a", peers=[{"url": b.url, "peer_id": "node-b", "role": "read-only"}])
    a.manager.replication.start()
    record = a.manager.replication.sync_now(timeout=30)[0]
    assert not record["ok"] and "read-only" in record["error"]
    assert rows(a.store) == {}
    # the read-only peer may still read this node's feed
    put(a.store, "from-a", "pending")
    feed = httpx.get(a.url + "/p2p/table/workflow_tasks/changes", timeout=5).json()
    assert [r["task_id"] for r in feed["changes"]] == ["from-a"]


def test_service_announcement_round_trips() -> None:
    info = service_info("node-a", "127.0.0.1", 8001, scheme="https")
    found = parse_service(info.parsed_addresses(), info.port, info.properties)
    assert found is not None and found.node_id == "node-a"
    assert found.url == "https://127.0.0.1:8001"
    assert parse_service(["127.0.0.1"], 8001, {b"other": b"x"}) is None
    assert parse_service(["127.0.0.1"], 8001, {b"node_id": b"n", b"scheme": b"ftp"}) is None


def test_nodes_find_each_other_by_mdns_on_loopback_and_sync(tmp_path: Path) -> None:
    from rubix_integration._settings import resolve_settings
    from tests.fixtures.stores import open_store

    # first: the announcements themselves, bound to 127.0.0.1 only
    found: list[Any] = []
    probes = [Discovery(n, "127.0.0.1", free_port(), found.append, interfaces=["127.0.0.1"])
              for n in ("probe-a", "probe-b")]
    for p in probes:
        p.start()
    try:
        wait_for(lambda: {f.node_id for f in found} >= {"probe-a", "probe-b"}, 10,
                 "the two announcements")
    finally:
        for p in probes:
            p.stop()
    # then two served nodes with no peer given
    nodes = [Node(n, f"sqlite:///{tmp_path / f'{n}.sqlite'}", free_port(), tmp_path,
                  args=["--discovery", "mdns", "--interval", "30"]) for n in ("md-a", "md-b")]
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: all(n.get("/p2p/status")["peers"] == 1 for n in nodes), 20,
                 "the nodes to discover each other")
        url = nodes[0].store_url
        with open_store(url, resolve_settings(store_url=url, data_dir=tmp_path / "w")) as s:
            put(s, "found-by-mdns", "pending")
        nodes[0].notify()
        other = nodes[1].store_url
        with open_store(other, resolve_settings(store_url=other,
                                                data_dir=tmp_path / "w2")) as s:
            wait_for(lambda: "found-by-mdns" in rows(s), 20, "the row on the other node")
    finally:
        for node in nodes:
            node.stop()


def test_the_host_mounts_the_routes_once_it_uses_replication_and_close_stops_it(
    tmp_path: Path,
) -> None:
    manager = Manager(store_url=f"sqlite:///{tmp_path / 'h.sqlite'}", data_dir=tmp_path)
    try:
        assert not [r for r in manager.plugins.routes(manager)
                    if getattr(r, "path", "").startswith("/p2p")]
        replication = manager.replication
        paths = {getattr(r, "path", "") for r in manager.plugins.routes(manager)}
        assert {"/p2p/status", "/p2p/peers", "/p2p/ws", "/p2p/notify-changes",
                "/p2p/table/{table}/changes"} <= paths
        replication.start()
        assert replication.running and replication.status()["sync_running"] is True
    finally:
        manager.close()  # the shutdown hook stops the sync loop before the store closes
    assert not replication.running


def test_a_peer_away_past_the_retention_is_told_to_resync_and_drops_deleted_rows(
    served: Any,
) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from rubix_integration.replication.models import CHECKPOINT_TABLE
    from tests.test_replication_support import delete

    b = served("node-b")
    for i in range(6):
        put(b.store, f"k{i}")
    a = served("node-a", peers=[{"url": b.url, "peer_id": "node-b"}])
    a.manager.replication.start()
    assert a.manager.replication.sync_now(timeout=30)[0]["ok"]
    assert len(rows(a.store)) == 6
    a.manager.replication.stop()  # node-a goes away
    for i in range(3):
        delete(b.store, f"k{i}")
    put(b.store, "k9")
    # node-a stays silent past the retention: node-b collects the tombstones without it
    with b.store.transaction() as conn:
        conn.execute(sa.update(CHECKPOINT_TABLE).values(
            acked_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)))
    rep_b = b.manager.replication.replicator
    rep_b.retention_s = 86400
    assert rep_b.collect_tombstones()["workflow_tasks"] == 3
    events: list[dict[str, Any]] = []
    a.manager.replication.service.subscribe(events.append)
    a.manager.replication.start()  # pulls from its peers at once
    wait_for(lambda: sorted(rows(a.store)) == ["k3", "k4", "k5", "k9"], 20,
             "node-a to drop the rows deleted while it was away")
    assert sorted(rows(b.store)) == ["k3", "k4", "k5", "k9"]
    history = list(a.manager.replication.service.history)
    assert any(h["tables"].get("workflow_tasks", {}).get("pruned") == 3 for h in history)
    assert any(e["event"] == "resync" and e["table"] == "workflow_tasks" for e in events)


def test_pages_grow_while_a_backlog_lasts_and_pulls_wait_for_start_workers(
        served: Any) -> None:
    a = served("node-a")
    with a.store.transaction() as conn:
        batch = a.store.stamp(T, [task_row(f"g{i:03d}") for i in range(300)], connection=conn)
        a.store.upsert(T, batch, connection=conn)
    b = served("node-b", config=SyncConfig(interval_s=30, timeout_s=5, max_retries=1,
                                           backoff_s=0.05, batch_size=10, max_batch_size=80))
    svc = b.manager.replication.service
    # recorded, not pulled yet
    svc.call(svc.add_peer(a.url, peer_id="node-a", pull=False), timeout=30)
    time.sleep(0.5)
    assert rows(b.store) == {} and not [h for h in svc.history if h["peer_id"] == "node-a"]
    svc.call(svc.start_workers(), timeout=30)
    wait_for(lambda: len(rows(b.store)) == 300, 30, "the rows to arrive")
    record = next(h for h in svc.history if h["peer_id"] == "node-a" and h["rows_applied"])
    # pages of 10, 80, 80, 80, 50: five pages where batches of 10 would take thirty
    assert record["tables"]["workflow_tasks"]["pages"] == 5
    assert record["rows_applied"] == 300
