"""The P2P database sync API's ``/p2p/...`` endpoints as Starlette routes around a
:class:`ReplicationService`.

=========================================  ===========  ==========================================
endpoint                                   role         what it does
=========================================  ===========  ==========================================
``GET /p2p/status``                        read-only    active_peers, last_sync, sync_running,
                                                        conflicts_resolved, tables_synced, …
``GET /p2p/peers``                         read-only    the peers (never their secrets)
``POST /p2p/peers``                        admin        add a peer ``{"url", "peer_id", …}``
``DELETE /p2p/peers/{peer_id}``            admin        forget a peer
``POST /p2p/sync/manual``                  admin        pull from every peer (or ``peer_id``) now
``GET /p2p/sync/history``                  read-only    the last sync records
``WS /p2p/ws``                             read-only    sync events as JSON
``POST /p2p/notify-changes``               peer         from a peer: pull from it now; from the
                                                        local app: tell every peer
``POST /p2p/sync/bidirectional``           peer         apply pushed ``changes``, answer ours
``GET /p2p/table/{table}/changes``         read-only    the feed: ``since=<ISO time>`` or
                                                        ``cursor=…&limit=…``
=========================================  ===========  ==========================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from rubix_integration.errors import (
    ChangeRejectedError,
    ReplicationAuthError,
    ReplicationError,
    ResyncRequiredError,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.websockets import WebSocket

    from rubix_integration.replication.auth import Authenticator, Credential
    from rubix_integration.replication.service import ReplicationService

__all__ = ["MAX_REQUEST_BYTES", "build_routes"]

#: The largest control request body accepted (bytes); pushed changes may use the sync limit.
MAX_REQUEST_BYTES = 1024 * 1024
T = TypeVar("T")


def build_routes(service: Callable[[], ReplicationService],
                 auth: Callable[[], Authenticator]) -> list[BaseRoute]:
    """The ``/p2p`` routes; ``service`` and ``auth`` are looked up on each request."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.responses import Response as BodyResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    async def on_loop(coro: Coroutine[Any, Any, T]) -> T:
        svc = service()
        if svc._loop is None:
            coro.close()
            raise ReplicationError("the replication service is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, svc._loop))

    async def guarded(request: Request, role: str, limit: int,
                      handle: Callable[[Credential | None, Any], Awaitable[Response]]
                      ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error(413, f"request body over the {limit}-byte limit")
        body = await request.body()
        if len(body) > limit:
            return error(413, f"request body over the {limit}-byte limit")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            cred = auth().check(request.method, target, request.headers, body, role)
        except ReplicationAuthError as exc:
            known = "role" in str(exc)
            return error(403 if known else 401, str(exc) if known else "not authenticated")
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                return error(400, "the body is not JSON")
        try:
            return await handle(cred, data)
        except ResyncRequiredError as exc:
            return error(410, str(exc), resync=True,
                         horizon=await run_in_threadpool(
                             service().replicator.horizon, request.path_params.get("table", "")))
        except ChangeRejectedError as exc:
            status = 404 if "does not replicate" in str(exc) else 422
            return error(status, str(exc))
        except ReplicationError as exc:
            return error(503, str(exc))

    async def status(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            return JSONResponse(service().status())
        return await guarded(request, "read-only", MAX_REQUEST_BYTES, handle)

    async def peers(request: Request) -> Response:
        async def list_(cred: Credential | None, data: Any) -> Response:
            return JSONResponse({"peers": service().peer_list()})

        async def add(cred: Credential | None, data: Any) -> Response:
            if not isinstance(data, dict) or not isinstance(data.get("url"), str):
                return error(422, "expected {\"url\": ..., \"peer_id\": ...}")
            svc = service()
            peer = await on_loop(svc.add_peer(
                data["url"], peer_id=data.get("peer_id"), role=data.get("role", "peer"),
                priority=int(data.get("priority", 0)), token=data.get("token"),
                secret=data.get("secret")))
            return JSONResponse(peer.as_dict(svc._active_window), status_code=201)

        if request.method == "GET":
            return await guarded(request, "read-only", MAX_REQUEST_BYTES, list_)
        return await guarded(request, "admin", MAX_REQUEST_BYTES, add)

    async def remove_peer(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            peer_id = request.path_params["peer_id"]
            if not await on_loop(service().remove_peer(peer_id)):
                return error(404, f"no peer {peer_id!r}")
            return JSONResponse({"removed": peer_id})
        return await guarded(request, "admin", MAX_REQUEST_BYTES, handle)

    async def manual(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            svc = service()
            data = data if isinstance(data, dict) else {}
            tables = data.get("tables")
            if data.get("peer_id"):
                peer = svc.find_peer(str(data["peer_id"]))
                if peer is None:
                    return error(404, f"no peer {data['peer_id']!r}")
                records = [await on_loop(svc.sync_peer(peer, reason="manual", tables=tables))]
            else:
                records = await on_loop(svc.sync_all(reason="manual", tables=tables))
            return JSONResponse({"synced": records,
                                 "ok": all(r["ok"] for r in records)})
        return await guarded(request, "admin", MAX_REQUEST_BYTES, handle)

    async def history(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            limit = int(request.query_params.get("limit", "50") or 50)
            items = list(service().history)[-max(1, min(limit, 500)):]
            return JSONResponse({"history": items[::-1]})
        return await guarded(request, "read-only", MAX_REQUEST_BYTES, handle)

    async def notify(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            svc = service()
            data = data if isinstance(data, dict) else {}
            sender = data.get("node_id") or data.get("peer_id")
            tables = data.get("tables")
            if tables is not None and (not isinstance(tables, list)
                                       or not all(isinstance(t, str) for t in tables)):
                return error(422, "tables must be a list of table names")
            if sender:
                woken = svc.wake(str(sender), tables)
                if not woken and data.get("peer_id"):
                    woken = svc.wake(str(data["peer_id"]), tables)
                return JSONResponse({"pulling": woken})
            # the local app changed something: tell every peer
            results = await on_loop(svc.notify_peers(tables))
            return JSONResponse({"notified": results})
        return await guarded(request, "peer", MAX_REQUEST_BYTES, handle)

    async def bidirectional(request: Request) -> Response:
        svc = service()

        async def handle(cred: Credential | None, data: Any) -> Response:
            data = data if isinstance(data, dict) else {}
            sender = str(data.get("node_id") or request.headers.get("x-rubix-node") or "")
            rep = svc.replicator
            out: dict[str, Any] = {"node_id": rep.node_id}
            table = data.get("table")
            if table is not None:
                table = str(table)
                changes = data.get("changes") or []
                if not isinstance(changes, list):
                    return error(422, "changes must be a list")
                if changes:
                    rows = await run_in_threadpool(rep.decode, table, changes,
                                                   peer=sender or None)
                    result = await run_in_threadpool(rep.apply, table, rows,
                                                     peer=sender or None)
                    out["applied"] = result.as_dict()
                feed = await run_in_threadpool(
                    rep.changes, table, cursor=data.get("cursor") or None,
                    limit=int(data.get("limit", svc.config.batch_size)),
                    exclude_origin=sender or None, reader=sender or None)
                out["feed"] = feed.as_dict()
                return JSONResponse(out)
            peer = svc.find_peer(sender) if sender else None
            if peer is None and not sender:
                out["synced"] = await on_loop(svc.sync_all(reason="bidirectional"))
                out["notified"] = await on_loop(svc.notify_peers())
            elif peer is None:
                return error(404, f"{sender!r} is not a peer of this node")
            else:
                out["synced"] = [await on_loop(svc.sync_peer(peer, reason="bidirectional"))]
            return JSONResponse(out)
        return await guarded(request, "peer", svc.config.max_payload, handle)

    async def changes(request: Request) -> Response:
        async def handle(cred: Credential | None, data: Any) -> Response:
            q = request.query_params
            try:
                limit = int(q.get("limit", "100") or 100)
            except ValueError:
                return error(422, "limit must be an integer")
            body = await run_in_threadpool(
                service().replicator.changes_json, request.path_params["table"],
                cursor=q.get("cursor") or None, since=q.get("since") or None, limit=limit,
                exclude_origin=q.get("origin") or None,
                reader=request.headers.get("x-rubix-node") or None)
            return BodyResponse(body, media_type="application/json")
        return await guarded(request, "read-only", MAX_REQUEST_BYTES, handle)

    async def websocket(ws: WebSocket) -> None:
        target = ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")
        try:
            auth().check("GET", target, ws.headers, b"", "read-only")
        except ReplicationAuthError:
            await ws.close(code=4401)
            return
        await ws.accept()
        svc = service()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

        def listener(message: dict[str, Any]) -> None:
            def put() -> None:
                if not queue.full():
                    queue.put_nowait(message)
            loop.call_soon_threadsafe(put)

        unsubscribe = svc.subscribe(listener)
        try:
            await ws.send_json({"event": "hello", **svc.status()})
            receiver = asyncio.ensure_future(ws.receive())
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, receiver},
                                             return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    getter.cancel()
                    if receiver.result().get("type") == "websocket.disconnect":
                        break
                    receiver = asyncio.ensure_future(ws.receive())
                    continue
                await ws.send_text(json.dumps(getter.result(), default=str))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            unsubscribe()

    return [
        Route("/p2p/status", status, methods=["GET"]),
        Route("/p2p/peers", peers, methods=["GET", "POST"]),
        Route("/p2p/peers/{peer_id}", remove_peer, methods=["DELETE"]),
        Route("/p2p/sync/manual", manual, methods=["POST"]),
        Route("/p2p/sync/history", history, methods=["GET"]),
        Route("/p2p/notify-changes", notify, methods=["POST"]),
        Route("/p2p/sync/bidirectional", bidirectional, methods=["POST"]),
        Route("/p2p/table/{table}/changes", changes, methods=["GET"]),
        WebSocketRoute("/p2p/ws", websocket),
    ]
