"""Shared helpers of the replication tests (no tests here): writing rows the way a node's own
code does, reading a store's rows for comparison, and running real node processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from rubix_integration.stores.base import Store
from rubix_integration.workflow.models import TASK_TABLE

T = TASK_TABLE


def task_row(key: str, state: str = "pending", **data: Any) -> dict[str, Any]:
    """The values of one workflow task (the replicated table the tests write)."""
    return {"task_id": key, "task_type": "demo", "state": state, "priority": 0,
            "data": data, "tags": [], "required_caps": [], "preferred_caps": [],
            "attempts": 0, "max_attempts": 3, "created_at_us": 1, "updated_at_us": 1,
            "due_at_us": None, "worker_id": None, "lease_token": None,
            "lease_expires_at_us": None, "result": None, "error": None, "finished_at_us": None,
            "deleted_at": None}


def put(store: Store, key: str, state: str = "pending", **data: Any) -> int:
    """Insert or update one row, stamped by ``store``; its version."""
    with store.transaction() as conn:
        stamped = store.stamp(T, [task_row(key, state, **data)], connection=conn)
        store.upsert(T, stamped, connection=conn)
    return int(stamped[0]["change_version"])


def delete(store: Store, key: str) -> int:
    """Tombstone one row, stamped by ``store``; its version."""
    with store.transaction() as conn:
        stamped = store.stamp(T, [{"deleted_at": dt.datetime.now(dt.timezone.utc)}],
                              connection=conn)[0]
        conn.execute(sa.update(T).where(T.c.task_id == key).values(stamped))
    return int(stamped["change_version"])


def rows(store: Store, table: sa.Table = T) -> dict[Any, dict[str, Any]]:
    """Every row of ``table`` (tombstones included) by primary key."""
    key = [c.name for c in table.primary_key.columns]
    with store.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    out: dict[Any, dict[str, Any]] = {}
    for r in found:
        if r.get("deleted_at") is not None:
            # the two stores keep the instant; compare it in UTC, to the microsecond
            value = r["deleted_at"]
            r["deleted_at"] = (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
                               ).astimezone(dt.timezone.utc)
        out[tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]] = r
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             every: float = 0.1) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Node:
    """One ``rubix-integration serve`` process on a loopback port with its own store."""

    def __init__(self, name: str, store_url: str, port: int, log_dir: Path, *,
                 args: Iterable[str] = (), env: dict[str, str] | None = None) -> None:
        self.name = name
        self.store_url = store_url
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.args = list(args)
        self.env = dict(env or {})
        self.peers: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, env: dict[str, str] | None = None) -> Node:
        """Start the process and wait until it answers."""
        cmd = [sys.executable, "-m", "rubix_integration", "serve", "--store", self.store_url,
               "--port", str(self.port), "--node-id", self.name, *self.args]
        for peer in self.peers:
            cmd += ["--peer", peer]
        environ = {**os.environ, **self.env, **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=environ)
        wait_for(self._answers, 60, f"node {self.name} to answer")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"node {self.name} exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/p2p/status", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGKILL with ``kill``) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON answer."""
        resp = httpx.get(self.url + path, params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: object = None) -> Any:
        """POST JSON, return the JSON answer."""
        resp = httpx.post(self.url + path, json=body or {}, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def notify(self) -> None:
        """Tell this node its store changed (so its peers pull at once)."""
        self.post("/p2p/notify-changes", {})
