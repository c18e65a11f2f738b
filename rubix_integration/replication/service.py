"""The sync loop: peers, notify-then-pull, periodic sync, history and events.

A :class:`ReplicationService` runs its own event loop on a background thread, so a host app
mounts the routes in any ASGI server (or none) and a plain script can drive it. For each peer a
worker waits for a notification (the peer changed something) or the periodic interval, then
pulls every replicated table from that peer's feed since the checkpoint, in batches, each batch
applied in one transaction together with its checkpoint. Requests time out, and are retried with
exponential backoff.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from rubix_integration.errors import (
    ChangeRejectedError,
    PeerUnavailableError,
    ReplicationAuthError,
    ReplicationError,
)
from rubix_integration.replication import _json
from rubix_integration.replication.auth import sign
from rubix_integration.replication.engine import Replicator, decode_cursor, encode_cursor
from rubix_integration.replication.models import PEER_TABLE

if TYPE_CHECKING:
    import httpx

__all__ = ["Peer", "ReplicationService", "SyncConfig"]

log = logging.getLogger("rubix_integration.replication")
T = TypeVar("T")


@dataclass(frozen=True)
class SyncConfig:
    """How often, how much and how patiently a node syncs (the P2P database sync API's defaults)."""

    interval_s: float = 30.0
    batch_size: int = 100
    #: While a feed has more pages, each next page asks for eight times as many rows, up to
    #: this many (a catch-up after a long absence); a small pull stays one ``batch_size`` page.
    max_batch_size: int = 5000
    max_retries: int = 3
    timeout_s: float = 30.0
    backoff_s: float = 0.25
    #: The largest response or request body accepted (bytes).
    max_payload: int = 32 * 1024 * 1024
    #: Peers silent for longer than this are not counted active (seconds; default 3 intervals).
    active_window_s: float | None = None
    #: CA bundle (path) or ``False`` to verify remote certificates against; ``True``: system's.
    verify: bool | str = True


@dataclass
class Peer:
    """A peer this node pulls from. ``token``/``secret`` authenticate us to it (never shown)."""

    peer_id: str
    url: str
    role: str = "peer"
    priority: int = 0
    node_id: str | None = None
    token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    last_seen: float | None = None
    last_error: str | None = None
    wake: asyncio.Event | None = field(default=None, repr=False)
    lock: asyncio.Lock | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Tables a notification named since the last pull (``None``: every table).
    pending: set[str] | None = field(default=None, repr=False)

    def as_dict(self, active_window_s: float) -> dict[str, Any]:
        """The public view (no secrets)."""
        active = self.last_seen is not None and time.time() - self.last_seen <= active_window_s
        return {"peer_id": self.peer_id, "url": self.url, "node_id": self.node_id,
                "role": self.role, "priority": self.priority, "active": active,
                "last_seen": _iso(self.last_seen), "last_error": self.last_error,
                "authenticated": bool(self.token or self.secret)}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class ReplicationService:
    """Peers and the sync loop of one node, around a :class:`Replicator`.

    ``name`` is how this node introduces itself to peers (HMAC ``X-Rubix-Peer``).
    """

    def __init__(self, replicator: Replicator, *, name: str | None = None,
                 config: SyncConfig | None = None) -> None:
        self.replicator = replicator
        self.config = config or SyncConfig()
        self.name = name or replicator.node_id
        self.peers: dict[str, Peer] = {}
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=500)
        self.last_sync: float | None = None
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._sub_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._running = False
        self._gc_task: asyncio.Task[None] | None = None
        self._defer_workers = False
        replicator.on_event = self._on_engine_event

    # --- lifetime ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop runs."""
        return self._running

    def start(self, *, workers: bool = True) -> None:
        """Start the background loop and a worker per known peer (with ``workers=False``: once
        :meth:`start_workers` is called); idempotent."""
        if self._running:
            return
        self._defer_workers = not workers
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="rubix-replication", daemon=True)
        self._thread.start()
        ready.wait(10)
        self._running = True
        self.call(self._astart())

    def stop(self) -> None:
        """Stop the workers and the loop; idempotent."""
        if not self._running or self._loop is None:
            return
        try:
            self.call(self._astop(), timeout=15)
        finally:
            self._running = False
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(15)
            self._loop = None
            self._thread = None

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the service's loop from another thread and wait for its result."""
        if self._loop is None:
            coro.close()
            raise ReplicationError("the replication service is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Schedule ``coro`` on the service's loop without waiting."""
        if self._loop is None:
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _astart(self) -> None:
        import httpx

        verify: bool | ssl.SSLContext = True
        if isinstance(self.config.verify, str):
            verify = ssl.create_default_context(cafile=self.config.verify)
        else:
            verify = self.config.verify
        self._client = httpx.AsyncClient(timeout=self.config.timeout_s, verify=verify,
                                         trust_env=False)
        for peer in await asyncio.to_thread(self._load_peers):
            self.peers.setdefault(peer.peer_id, peer)
        if self._defer_workers:
            self._defer_workers = False
        else:
            for peer in self.peers.values():
                self._start_worker(peer)
        self._gc_task = asyncio.create_task(self._gc_loop())

    async def _astop(self) -> None:
        tasks = [p.task for p in self.peers.values() if p.task is not None]
        if self._gc_task is not None:
            tasks.append(self._gc_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in self.peers.values():
            peer.task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- events --------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener`` with every event (from the service's thread); returns an
        unsubscribe function."""
        with self._sub_lock:
            self._subscribers.append(listener)

        def unsubscribe() -> None:
            with self._sub_lock:
                if listener in self._subscribers:
                    self._subscribers.remove(listener)

        return unsubscribe

    def publish(self, event: str, data: Mapping[str, Any]) -> None:
        """Send an event to every subscriber."""
        message = {"event": event, "node_id": self.replicator.node_id,
                   "at": _iso(time.time()), **data}
        with self._sub_lock:
            listeners = list(self._subscribers)
        for listener in listeners:
            try:
                listener(message)
            except Exception:
                log.exception("replication event subscriber failed")

    def _on_engine_event(self, event: str, data: dict[str, Any]) -> None:
        self.publish(event, data)

    # --- peers ---------------------------------------------------------------------------------

    def _load_peers(self) -> list[Peer]:
        with self.replicator.store.connect() as conn:
            rows = conn.execute(sa.select(PEER_TABLE)).all()
        return [Peer(r.peer_id, r.url, r.role, r.priority, r.node_id) for r in rows]

    def _save_peer(self, peer: Peer) -> None:
        self.replicator.store.upsert(PEER_TABLE, [{
            "peer_id": peer.peer_id, "url": peer.url, "node_id": peer.node_id,
            "role": peer.role, "priority": peer.priority,
            "added_at": dt.datetime.now(dt.timezone.utc)}],
            update=["url", "node_id", "role", "priority"])

    def _delete_peer(self, peer_id: str) -> None:
        with self.replicator.store.transaction() as conn:
            conn.execute(sa.delete(PEER_TABLE).where(PEER_TABLE.c.peer_id == peer_id))

    async def add_peer(self, url: str, *, peer_id: str | None = None, role: str = "peer",
                       priority: int = 0, token: str | None = None,
                       secret: str | None = None, pull: bool = True) -> Peer:
        """Add (or update) a peer and pull from it at once (with ``pull=False``: once
        :meth:`start_workers` is called)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ChangeRejectedError(f"a peer URL must be http(s)://host:port, not {url!r}")
        url = url.rstrip("/")
        peer_id = peer_id or parsed.netloc
        if role not in ("peer", "read-only"):
            raise ChangeRejectedError(f"a peer's role is 'peer' or 'read-only', not {role!r}")
        peer = self.peers.get(peer_id)
        if peer is None:
            peer = Peer(peer_id, url, role, priority, token=token, secret=secret)
            self.peers[peer_id] = peer
        else:
            peer.url, peer.role, peer.priority = url, role, priority
            peer.token, peer.secret = token or peer.token, secret or peer.secret
        await asyncio.to_thread(self._save_peer, peer)
        if pull:
            self._start_worker(peer)
        self.publish("peer_added", {"peer": peer.as_dict(self._active_window)})
        return peer

    async def start_workers(self) -> None:
        """Start the worker (a first pull) of every peer that has none running."""
        for peer in self.peers.values():
            self._start_worker(peer)

    async def remove_peer(self, peer_id: str) -> bool:
        """Forget a peer; whether it was known."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        if peer.task is not None:
            peer.task.cancel()
        await asyncio.to_thread(self._delete_peer, peer_id)
        self.publish("peer_removed", {"peer_id": peer_id})
        return True

    def _start_worker(self, peer: Peer) -> None:
        if not self._running or (peer.task is not None and not peer.task.done()):
            return
        peer.wake = asyncio.Event()
        peer.lock = asyncio.Lock()
        peer.task = asyncio.create_task(self._worker(peer))
        peer.wake.set()  # a first pull as soon as the peer is known

    @property
    def _active_window(self) -> float:
        return self.config.active_window_s or 3 * self.config.interval_s + 5

    def peer_list(self) -> list[dict[str, Any]]:
        """Every peer, public view."""
        return [p.as_dict(self._active_window) for p in self.peers.values()]

    def find_peer(self, ident: str) -> Peer | None:
        """The peer with this peer id, node id or URL."""
        for peer in self.peers.values():
            if ident in (peer.peer_id, peer.node_id, peer.url, peer.url.rstrip("/")):
                return peer
        return None

    # --- requests ------------------------------------------------------------------------------

    async def request(self, peer: Peer, method: str, path: str, *,
                      params: Mapping[str, Any] | None = None,
                      body: object = None) -> tuple[int, Any]:
        """One authenticated request to ``peer``, retried with backoff; ``(status, JSON)``."""
        import httpx

        if self._client is None:
            raise ReplicationError("the replication service is not running", peer=peer.peer_id)
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items()
                                        if v is not None})
        target = path + (f"?{query}" if query else "")
        content = b"" if body is None else json.dumps(body).encode()
        last: Exception | None = None
        for attempt in range(self.config.max_retries + 1):
            headers = {"X-Rubix-Node": self.replicator.node_id,
                       "Content-Type": "application/json",
                       **sign(peer_id=self.name, token=peer.token, secret=peer.secret,
                              method=method, target=target, body=content)}
            try:
                resp = await self._client.request(method, peer.url + target, content=content,
                                                  headers=headers)
            except httpx.HTTPError as exc:
                last = exc
                if attempt < self.config.max_retries:
                    await asyncio.sleep(self.config.backoff_s * 2 ** attempt)
                continue
            if len(resp.content) > self.config.max_payload:
                raise ChangeRejectedError(
                    f"peer {peer.peer_id!r} answered {len(resp.content)} bytes, over the "
                    f"{self.config.max_payload}-byte limit", peer=peer.peer_id)
            if resp.status_code >= 500 and attempt < self.config.max_retries:
                last = PeerUnavailableError(f"HTTP {resp.status_code}", peer=peer.peer_id)
                await asyncio.sleep(self.config.backoff_s * 2 ** attempt)
                continue
            peer.last_seen = time.time()
            try:
                data = _json.loads(resp.content) if resp.content else None
            except ValueError:
                data = None
            if resp.status_code in (401, 403):
                raise ReplicationAuthError(
                    f"peer {peer.peer_id!r} refused us: HTTP {resp.status_code}",
                    peer=peer.peer_id)
            return resp.status_code, data
        raise PeerUnavailableError(
            f"peer {peer.peer_id!r} at {peer.url} did not answer after "
            f"{self.config.max_retries + 1} attempts: {type(last).__name__}: {last}",
            peer=peer.peer_id) from last

    # --- sync ----------------------------------------------------------------------------------

    async def _worker(self, peer: Peer) -> None:
        assert peer.wake is not None
        while True:
            try:
                await asyncio.wait_for(peer.wake.wait(), self.config.interval_s)
                reason = "notified"
            except TimeoutError:
                reason = "periodic"
            peer.wake.clear()
            tables, peer.pending = peer.pending, None
            if reason == "periodic":
                tables = None
            try:
                await self.sync_peer(peer, reason=reason, tables=tables)
            except asyncio.CancelledError:
                raise
            except Exception:  # recorded in the history; the loop goes on
                log.debug("sync with %s failed", peer.peer_id, exc_info=True)

    def wake(self, ident: str | None = None, tables: Iterable[str] | None = None) -> int:
        """Ask the worker of one peer (by id, node id or URL), or of every peer, to pull now
        (only ``tables`` when given); returns how many were woken. Thread-safe."""
        peers = list(self.peers.values()) if ident is None else [
            p for p in [self.find_peer(ident)] if p is not None]
        if not peers and ident is not None:
            # the sender may be a peer not identified yet (it was down when we first tried)
            peers = [p for p in self.peers.values() if p.node_id is None]
        names = None if tables is None else {str(t) for t in tables}
        loop = self._loop
        woken = 0
        for peer in peers:
            if peer.wake is None or loop is None:
                continue

            def mark(peer: Peer = peer) -> None:
                wake = peer.wake
                assert wake is not None
                if names is None or (wake.is_set() and peer.pending is None):
                    peer.pending = None  # every table
                elif wake.is_set():
                    peer.pending = (peer.pending or set()) | names
                else:
                    peer.pending = set(names)
                wake.set()

            loop.call_soon_threadsafe(mark)
            woken += 1
        return woken

    async def sync_all(self, *, reason: str = "manual",
                       tables: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Pull from every peer now; one history record per peer."""
        wanted = list(tables) if tables is not None else None
        return list(await asyncio.gather(*(self.sync_peer(p, reason=reason, tables=wanted)
                                           for p in list(self.peers.values()))))

    async def sync_peer(self, peer: Peer, *, reason: str = "manual",
                        tables: Iterable[str] | None = None) -> dict[str, Any]:
        """Pull every replicated table (or ``tables``) from ``peer``; the history record."""
        if peer.lock is None:
            peer.lock = asyncio.Lock()
        async with peer.lock:
            return await self._sync_peer(peer, reason, tables)

    async def _sync_peer(self, peer: Peer, reason: str,
                         tables: Iterable[str] | None) -> dict[str, Any]:
        started = time.time()
        record: dict[str, Any] = {"peer_id": peer.peer_id, "url": peer.url, "reason": reason,
                                  "started_at": _iso(started), "tables": {},
                                  "rows_applied": 0, "conflicts": 0, "refused": 0,
                                  "ok": True, "error": None}
        self.publish("sync_started", {"peer_id": peer.peer_id, "reason": reason})
        try:
            if peer.role == "read-only":
                raise ReplicationAuthError(
                    f"peer {peer.peer_id!r} is read-only: its changes are not applied here",
                    peer=peer.peer_id)
            if peer.node_id is None:
                await self._identify(peer)
            names = self.replicator.tables.names()
            wanted = [n for n in (list(tables) if tables is not None else names) if n in names]
            # the tables are pulled side by side: one slow table does not hold up the others
            summaries = await asyncio.gather(*(self._pull_table(peer, n) for n in wanted),
                                             return_exceptions=True)
            failed = [s for s in summaries if isinstance(s, BaseException)]
            for name, summary in zip(wanted, summaries, strict=True):
                if summary is not None and not isinstance(summary, BaseException):
                    record["tables"][name] = summary
                    record["rows_applied"] += summary["applied"]
                    record["conflicts"] += summary["conflicts"]
                    record["refused"] += summary["refused"]
            if failed:
                raise failed[0]
            peer.last_error = None
        except (ReplicationError, OSError, ValueError) as exc:
            record["ok"] = False
            record["error"] = f"{type(exc).__name__}: {exc}"
            peer.last_error = record["error"]
        record["finished_at"] = _iso(time.time())
        record["duration_ms"] = round((time.time() - started) * 1000, 1)
        self.history.append(record)
        if record["ok"]:
            self.last_sync = time.time()
        self.publish("sync_completed" if record["ok"] else "sync_failed", record)
        if record["rows_applied"]:
            self.publish("changes_applied", {"peer_id": peer.peer_id,
                                             "rows": record["rows_applied"],
                                             "tables": sorted(record["tables"])})
        return record

    async def _identify(self, peer: Peer) -> None:
        status, data = await self.request(peer, "GET", "/p2p/status")
        if status != 200 or not isinstance(data, dict) or not data.get("node_id"):
            raise PeerUnavailableError(f"peer {peer.peer_id!r} gave no node id (HTTP {status})",
                                       peer=peer.peer_id)
        peer.node_id = str(data["node_id"])
        if peer.node_id == self.replicator.node_id:
            raise ReplicationError(f"peer {peer.peer_id!r} is this node itself",
                                   peer=peer.peer_id)
        self.replicator.priorities[peer.node_id] = int(data.get("priority", peer.priority) or 0)
        await asyncio.to_thread(self._save_peer, peer)

    async def _pull_table(self, peer: Peer, table: str) -> dict[str, int] | None:
        assert peer.node_id is not None
        node = peer.node_id
        rep = self.replicator
        cursor = await asyncio.to_thread(rep.checkpoint, node, table)
        full = False
        seen: set[tuple[Any, ...]] = set()
        horizon = 0
        total = {"applied": 0, "conflicts": 0, "refused": 0, "pages": 0}

        size = self.config.batch_size
        ceiling = max(size, self.config.max_batch_size)

        def fetch(after: int) -> asyncio.Task[tuple[int, Any]]:
            params = {"cursor": encode_cursor(after), "limit": size,
                      "origin": None if full else rep.node_id}
            return asyncio.ensure_future(self.request(
                peer, "GET", f"/p2p/table/{table}/changes", params=params))

        def merge(changes: list[Any], nxt: int) -> tuple[list[dict[str, Any]], Any]:
            rows = rep.decode(table, changes, peer=node, copy=False)
            return rows, rep.apply(table, rows, peer=node, cursor=nxt)

        pending = fetch(cursor)
        try:
            while True:
                status, data = await pending
                if status == 404:
                    return None  # the peer does not replicate this table
                if status == 410 and not full:
                    # tombstones we never saw were collected there: start over from nothing
                    horizon = int((data or {}).get("horizon", 0))
                    self.publish("resync", {"peer_id": peer.peer_id, "table": table,
                                            "horizon": horizon})
                    await asyncio.to_thread(rep.reset_checkpoint, node, table)
                    full, cursor = True, 0
                    pending = fetch(cursor)
                    continue
                if status != 200 or not isinstance(data, dict):
                    raise PeerUnavailableError(
                        f"peer {peer.peer_id!r}: feed of {table!r} answered HTTP {status}: "
                        f"{str(data)[:200]}", peer=peer.peer_id)
                nxt = decode_cursor(str(data.get("cursor", "")))
                more = bool(data.get("has_more"))
                if more:
                    # a backlog: larger pages; the next one travels while this one is applied
                    size = min(size * 8, ceiling)
                    pending = fetch(nxt)
                rows, result = await asyncio.to_thread(merge, data.get("changes", []), nxt)
                if full:
                    key = rep.tables.codec(table).key
                    seen.update(tuple(r[k] for k in key) for r in rows)
                total["applied"] += result.applied
                total["conflicts"] += len(result.conflicts)
                total["refused"] += len(result.refused)
                total["pages"] += 1
                if result.refused or not more:
                    break
        finally:
            if not pending.done():
                pending.cancel()
        if full:
            pruned = await asyncio.to_thread(rep.prune_unseen, table, seen, horizon)
            total["pruned"] = pruned
        return total

    async def notify_peers(self, tables: Iterable[str] | None = None) -> dict[str, Any]:
        """Tell every peer that this node changed (so they pull at once)."""
        body = {"node_id": self.replicator.node_id, "peer_id": self.name,
                "tables": list(tables) if tables is not None else None}

        async def one(peer: Peer) -> tuple[str, str]:
            try:
                status, _ = await self.request(peer, "POST", "/p2p/notify-changes", body=body)
            except ReplicationError as exc:
                return peer.peer_id, f"{type(exc).__name__}: {exc}"
            return peer.peer_id, "ok" if status == 200 else f"HTTP {status}"

        results = dict(await asyncio.gather(*(one(p) for p in list(self.peers.values()))))
        self.publish("changes_notified", {"peers": results})
        return results

    def local_change(self, tables: Iterable[str] | None = None) -> None:
        """Thread-safe: this node's store changed; notify every peer without waiting."""
        self.submit(self.notify_peers(tables))

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.config.interval_s, 1.0))
            try:
                removed = await asyncio.to_thread(self.replicator.collect_tombstones)
            except Exception:
                log.exception("tombstone collection failed")
                continue
            if any(removed.values()):
                self.publish("tombstones_collected", {"removed": removed})

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The P2P database sync API's status fields, and a few more."""
        stats = self.replicator.stats()
        window = self._active_window
        return {
            "node_id": self.replicator.node_id,
            "name": self.name,
            "priority": self.replicator.priority,
            "active_peers": sum(1 for p in self.peers.values()
                                if p.last_seen is not None and time.time() - p.last_seen
                                <= window),
            "peers": len(self.peers),
            "last_sync": _iso(self.last_sync),
            "sync_running": self._running,
            "conflicts_resolved": stats["conflicts_resolved"],
            "rows_applied": stats["rows_applied"],
            "rows_refused": stats["rows_refused"],
            "tables_synced": len(self.replicator.tables.names()),
            "tables": self.replicator.tables.names(),
            "syncs": len(self.history),
        }
