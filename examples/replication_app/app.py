"""A product-review host app whose four tables replicate between nodes.

Each node runs this app with its own store; the ``/p2p`` routes of ``Manager.replication`` are
mounted next to the app's own. Start three nodes and create data on any of them::

    python examples/replication_app/app.py --port 8001 --node-id node1 \\
        --store sqlite:///node1.db --peer http://127.0.0.1:8002 --peer http://127.0.0.1:8003
    python examples/replication_app/app.py --port 8002 --node-id node2 \\
        --store postgresql+psycopg://postgres@127.0.0.1/node2 --peer http://127.0.0.1:8001 ...
    curl -X POST http://127.0.0.1:8001/products/ -H 'Content-Type: application/json' \\
        -d '{"name": "Test Product", "description": "From Node 1"}'
    curl http://127.0.0.1:8002/products/

A table replicates when it carries the columns of ``ReplicatedMixin`` (who wrote the row, its
hybrid-clock version, its tombstone) under a stable primary key; the app registers each one with
``manager.replication.register_table`` and calls ``manager.replication.changed()`` after a write
so that the peers pull at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rubix_integration import Manager
from rubix_integration.stores.replicated import ReplicatedMixin, live


def _key() -> str:
    return str(uuid.uuid4())


class User(ReplicatedMixin, table=True):
    """A user account."""

    __tablename__ = "users"
    id: str = Field(default_factory=_key, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=200)


class Category(ReplicatedMixin, table=True):
    """A product category."""

    __tablename__ = "categories"
    id: str = Field(default_factory=_key, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, sa_type=sa.Text)


class Product(ReplicatedMixin, table=True):
    """A product."""

    __tablename__ = "products"
    id: str = Field(default_factory=_key, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, sa_type=sa.Text)
    category_id: str | None = Field(default=None, max_length=36)


class Review(ReplicatedMixin, table=True):
    """A review of a product."""

    __tablename__ = "reviews"
    id: str = Field(default_factory=_key, primary_key=True, max_length=36)
    product_id: str = Field(max_length=36)
    user_id: str | None = Field(default=None, max_length=36)
    rating: int = 0
    body: str | None = Field(default=None, sa_type=sa.Text)


MODELS: dict[str, type[SQLModel]] = {"users": User, "categories": Category,
                                     "products": Product, "reviews": Review}
# PostgreSQL stamps each replicated table from a sequence of its own
for _name in MODELS:
    sa.Sequence(f"{_name}_change_version_seq", metadata=SQLModel.metadata)


def build(manager: Manager) -> Starlette:
    """The app: CRUD routes for the four tables plus the ``/p2p`` routes."""
    for model in MODELS.values():
        manager.replication.register_table(model)

    def create(table: sa.Table, body: dict[str, Any]) -> dict[str, Any]:
        store = manager.store
        allowed = {c.name for c in table.c} - {"id", "origin_node", "change_version",
                                               "deleted_at"}
        values = {k: v for k, v in body.items() if k in allowed}
        values["id"] = _key()
        with store.transaction() as conn:
            stamped = store.stamp(table, [values], connection=conn)[0]
            conn.execute(sa.insert(table).values(stamped))
        manager.replication.changed([table.name])
        return stamped

    def listing(table: sa.Table) -> list[dict[str, Any]]:
        with manager.store.connect() as conn:
            found = conn.execute(sa.select(table).where(live(table))
                                 .order_by(table.c.change_version)).all()
        return [{k: v for k, v in r._mapping.items() if k != "deleted_at"} for r in found]

    def remove(table: sa.Table, key: str) -> bool:
        store = manager.store
        with store.transaction() as conn:
            stamped = store.stamp(table, [{"deleted_at": dt.datetime.now(dt.timezone.utc)}],
                                  connection=conn)[0]
            done = conn.execute(sa.update(table).where(table.c.id == key, live(table))
                                .values(stamped)).rowcount
        manager.replication.changed([table.name])
        return bool(done)

    def routes_for(name: str, model: type[SQLModel]) -> list[Route]:
        table: sa.Table = model.__table__  # type: ignore[attr-defined]

        async def collection(request: Request) -> Response:
            if request.method == "POST":
                body = await request.json()
                if not isinstance(body, dict):
                    return JSONResponse({"error": "expected an object"}, status_code=422)
                try:
                    row = await run_in_threadpool(create, table, body)
                except sa.exc.IntegrityError:
                    return JSONResponse({"error": "missing a required field"},
                                        status_code=422)
                return JSONResponse(row, status_code=201)
            return JSONResponse(await run_in_threadpool(listing, table))

        async def item(request: Request) -> Response:
            if await run_in_threadpool(remove, table, request.path_params["key"]):
                return JSONResponse({"deleted": request.path_params["key"]})
            return JSONResponse({"error": "not found"}, status_code=404)

        return [Route(f"/{name}/", collection, methods=["GET", "POST"]),
                Route(f"/{name}/{{key}}", item, methods=["DELETE"])]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(manager.replication.start)
        try:
            yield
        finally:
            await run_in_threadpool(manager.replication.stop)

    routes = [r for name, model in MODELS.items() for r in routes_for(name, model)]
    return Starlette(routes=[*routes, *manager.replication.routes()], lifespan=lifespan)


def main() -> None:
    """Run one node of the example."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--node-id", default=None)
    parser.add_argument("--store", required=True, help="the node's own store URL")
    parser.add_argument("--peer", action="append", default=[], help="a peer's base URL")
    parser.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args()
    from rubix_integration.replication import SyncConfig

    manager = Manager(store_url=args.store)
    if args.node_id:
        manager.replication.set_node_id(args.node_id)
    manager.replication.configure(name=args.node_id, peers=args.peer,
                                  config=SyncConfig(interval_s=args.interval))
    uvicorn.run(build(manager), host=args.host, port=args.port, log_level="warning")
    manager.close()


if __name__ == "__main__":
    main()
