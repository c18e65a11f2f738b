"""The RPC transport of a running IPFS daemon (kubo's ``/api/v0``, js-ipfs's too).

Every request is a ``POST`` on a kept-alive :mod:`http.client` connection of the calling thread
(streamed reads get a connection of their own). Every failure is mapped to the package's errors
in one place: :meth:`RPC.error_response` for the daemon's answers, :meth:`RPC.failure` for the
connection's; the mapped error is chained from the cause.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from rubix_integration.errors import (
    ConfigError,
    ContentNotFoundError,
    InvalidCIDError,
    IPFSError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.ipfs.base import IPFSContext

__all__ = ["CLIENT_GRACE", "RPC", "ApiAddress", "DaemonAnswer", "parse_api_address",
           "probe_version", "resolve_address"]

CLIENT_GRACE = 1.0
"""Extra seconds the client waits past the daemon-side timeout, so the daemon's answer wins."""

_READ_CHUNK = 64 * 1024


# --- addresses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiAddress:
    """A daemon RPC address in both notations, and where it came from."""

    multiaddr: str
    url: str
    source: str


def parse_api_address(text: str, source: str = "ipfs_api setting") -> ApiAddress:
    """Parse a multiaddr (``/ip4/H/tcp/P[/http|/https]``, ``/ip6``, ``/dns*``) or an HTTP(S) URL.

    Raises ``ValueError`` naming what is wrong.
    """
    text = text.strip()
    if text.startswith("/"):
        parts = text.strip("/").split("/")
        if len(parts) < 4 or parts[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") \
                or parts[2] != "tcp":
            raise ValueError(f"{text!r} is not a /ip4|ip6|dns/HOST/tcp/PORT multiaddr")
        host, port_text = parts[1], parts[3]
        rest = parts[4:]
        if rest not in ([], ["http"], ["https"]):
            raise ValueError(f"{text!r}: only /http or /https may follow the port")
        scheme = rest[0] if rest else "http"
        port = _port(port_text, text)
        url_host = f"[{host}]" if parts[0] == "ip6" else host
        multiaddr = f"/{parts[0]}/{host}/tcp/{port}/{scheme}"
        return ApiAddress(multiaddr, f"{scheme}://{url_host}:{port}", source)
    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"{text!r} is neither a multiaddr nor an http(s) URL")
    try:
        port = split.port or (443 if split.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    host = split.hostname
    try:
        proto = "ip6" if ipaddress.ip_address(host).version == 6 else "ip4"
    except ValueError:
        proto = "dns"
    url_host = f"[{host}]" if proto == "ip6" else host
    return ApiAddress(f"/{proto}/{host}/tcp/{port}/{split.scheme}",
                      f"{split.scheme}://{url_host}:{port}", source)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: {text!r} is not a TCP port")
    return int(text)


def resolve_address(context: IPFSContext) -> ApiAddress | str:
    """The daemon address for ``context``, or a one-line reason why there is none."""
    configured = context.settings.ipfs_api
    if configured:
        try:
            return parse_api_address(configured)
        except ValueError as exc:
            raise ConfigError(f"ipfs_api: {exc}", name="ipfs_api", value=configured) from exc
    if context.ipfs_path is None:
        return "no ipfs_api setting and no IPFS repo path"
    api_file = context.ipfs_path / "api"
    try:
        text = api_file.read_text().strip()
    except FileNotFoundError:
        return f"no ipfs_api setting and no api file at {api_file} (no daemon running)"
    except OSError as exc:
        return f"cannot read {api_file}: {exc}"
    try:
        return parse_api_address(text, source=f"api file {api_file}")
    except ValueError as exc:
        return f"{api_file}: {exc}"


def probe_version(address: ApiAddress, timeout: float) -> dict[str, Any]:
    """POST ``/api/v0/version`` with the standard library; raise ``OSError`` on any failure."""
    split = urlsplit(address.url)
    conn: http.client.HTTPConnection
    if split.scheme == "https":
        conn = http.client.HTTPSConnection(split.hostname or "", split.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=timeout)
    try:
        conn.request("POST", "/api/v0/version")
        response = conn.getresponse()
        body = response.read(65536)
        if response.status != 200:
            raise OSError(f"HTTP {response.status}: {body[:200]!r}")
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise OSError(f"not an IPFS RPC API (answer {body[:80]!r})") from exc
        if not isinstance(value, dict) or "Version" not in value:
            raise OSError(f"not an IPFS RPC API (answer {body[:80]!r})")
        return value
    except http.client.HTTPException as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()


# --- error translation ---------------------------------------------------------------------------

_TIMEOUT_WORDS = ("timed out", "timeout", "deadline exceeded", "context canceled")
_DIRECTORY_WORDS = ("is a directory", "not a file", "dag node is a directory",
                    "unsupported unixfs type", "not unixfs")
_INVALID_WORDS = ("invalid cid", "invalid request query input", "invalid path", "invalid ipfs path",
                  "selected encoding not supported", "non-base58", "unknown codec",
                  "illegal base", "invalid multihash", "cid too short")
_NOT_FOUND_WORDS = ("not found", "does not exist", "no link named", "no such", "could not find",
                    "not pinned", "enoent")


def _classify_message(message: str) -> type[IPFSError]:
    text = message.lower()
    if any(w in text for w in _TIMEOUT_WORDS):
        return IPFSTimeoutError
    if any(w in text for w in _DIRECTORY_WORDS):
        return NotAFileError
    if any(w in text for w in _INVALID_WORDS):
        return InvalidCIDError
    if any(w in text for w in _NOT_FOUND_WORDS):
        return ContentNotFoundError
    return IPFSError


class DaemonAnswer(Exception):
    """A daemon's answer other than ``200``: the cause the mapped error is chained from."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"HTTP {status} {reason}: {body[:200]!r}")
        self.status = status
        self.body = body


# --- the transport -------------------------------------------------------------------------------


class RPC:
    """A daemon's RPC API over kept-alive connections, for the backend named ``backend``.

    The address comes from the context (see :func:`resolve_address`); a daemon that starts later
    is found on the first request after it wrote its ``api`` file. :meth:`close` closes every
    connection; threads that keep running open new ones.
    """

    def __init__(self, context: IPFSContext, backend: str) -> None:
        self.context = context
        self.backend = backend
        resolved = resolve_address(context)
        self._address: ApiAddress | None = resolved if isinstance(resolved, ApiAddress) else None
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> ApiAddress | None:
        """The daemon address in use (``None`` when none could be found yet)."""
        return self._address

    def addr(self, cid: str | None = None) -> ApiAddress:
        """The daemon address, looked up again while none is known."""
        if self._address is None:
            # a daemon started after this backend was built writes the api file late
            resolved = resolve_address(self.context)
            if isinstance(resolved, str):
                raise IPFSUnavailableError(f"http: {resolved}", cid=cid, backend=self.backend)
            self._address = resolved
        return self._address

    def _new_connection(self, cid: str | None) -> http.client.HTTPConnection:
        split = urlsplit(self.addr(cid).url)
        factory = (http.client.HTTPSConnection if split.scheme == "https"
                   else http.client.HTTPConnection)
        conn = factory(split.hostname or "", split.port)
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connection(self, cid: str | None) -> http.client.HTTPConnection:
        """This thread's kept-alive connection."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if conn is None:
            conn = self._local.connection = self._new_connection(cid)
        return conn

    def drop(self, conn: http.client.HTTPConnection) -> None:
        """Close ``conn`` and forget it (the thread opens a new one on its next request)."""
        if getattr(self._local, "connection", None) is conn:
            self._local.connection = None
        with self._lock, contextlib.suppress(ValueError):
            self._connections.remove(conn)
        conn.close()

    def request(
        self,
        endpoint: str,
        args: Sequence[str] = (),
        opts: Mapping[str, str] | None = None,
        *,
        limit: float,
        what: str,
        cid: str | None = None,
        path: str | None = None,
        body: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``POST /api/v0/<endpoint>`` with the daemon-side ``timeout`` of ``limit`` seconds (the
        client waits :data:`CLIENT_GRACE` longer); return the connection and the ``200``
        response, its body unread. Any other answer or failure raises the mapped error.

        ``stream`` uses a connection of its own, closed by :meth:`stream`; other requests use
        the thread's, retried once on a fresh one when the daemon closed it while idle.
        """
        query = [*(("arg", a) for a in args), ("timeout", f"{max(1, int(limit * 1000))}ms"),
                 *(opts or {}).items()]
        target = f"/api/v0/{endpoint}?{urlencode(query)}"
        # a streamed body cannot be sent twice: it goes out on a fresh connection
        once = stream or not (body is None or isinstance(body, bytes))
        for attempt in (1, 2):
            conn = self._new_connection(cid) if once else self._connection(cid)
            reused = conn.sock is not None
            conn.timeout = limit + CLIENT_GRACE
            if conn.sock is not None:
                conn.sock.settimeout(limit + CLIENT_GRACE)
            try:
                conn.request("POST", target, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                if response.status != 200:
                    answer = response.read(65536)
                    self.drop(conn)  # errors are rare: no need to keep the connection tidy
                    raise self.error_response(response.status, answer, what, cid, path) \
                        from DaemonAnswer(response.status, response.reason, answer)
                return conn, response
            except IPFSError:
                raise
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self.drop(conn)
                if reused and attempt == 1:
                    continue  # the daemon closed an idle kept-alive connection: once more
                raise self.failure(exc, what, cid, path) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.drop(conn)
                raise self.failure(exc, what, cid, path) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
              what: str, cid: str | None = None, path: str | None = None,
              max_size: int | None = None) -> bytes:
        """The whole body (at most ``max_size + 1`` bytes); the connection stays kept alive."""
        try:
            data = response.read() if max_size is None else response.read(max_size + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.drop(conn)
            raise self.failure(exc, what, cid, path) from exc
        if max_size is not None and len(data) > max_size:
            self.drop(conn)  # the rest of the body is never read
        elif response.will_close:
            self.drop(conn)
        return data

    def call(self, endpoint: str, args: Sequence[str] = (), opts: Mapping[str, str] | None = None,
              *, limit: float, what: str, cid: str | None = None, path: str | None = None,
              body: bytes | Iterable[bytes] | None = None,
              headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The JSON objects the daemon answers (one, or one per line for streamed answers)."""
        conn, response = self.request(endpoint, args, opts, limit=limit, what=what, cid=cid,
                                       path=path, body=body, headers=headers)
        text = self.read(conn, response, what, cid, path).decode("utf-8", "replace")
        decoder = json.JSONDecoder()
        objects: list[dict[str, Any]] = []
        at = 0
        try:
            while (at := _skip_space(text, at)) < len(text):
                value, at = decoder.raw_decode(text, at)
                objects.extend(v for v in (value if isinstance(value, list) else [value])
                               if isinstance(v, dict))
        except ValueError as exc:
            raise IPFSError(f"http: {what}: the daemon's answer is not JSON ({text[:80]!r})",
                            cid=cid, path=path, backend=self.backend) from exc
        return objects

    def stream(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                what: str, cid: str, deadline: float, length: int | None) -> Iterator[bytes]:
        """The body in chunks (at most ``length`` bytes), read by ``deadline``; the
        connection is closed at the end."""
        received = 0
        try:
            while True:
                want = _READ_CHUNK if length is None else min(_READ_CHUNK, length - received)
                chunk = response.read1(want)
                if not chunk:
                    return
                received += len(chunk)
                yield chunk
                if length is not None and received >= length:
                    return
                if time.monotonic() > deadline:
                    raise IPFSTimeoutError(f"http: {what} {cid}: did not finish in time",
                                           cid=cid, backend=self.backend)
        except (OSError, http.client.HTTPException) as exc:
            raise self.failure(exc, what, cid, None) from exc
        finally:
            self.drop(conn)

    def error_response(self, status: int, body: bytes, what: str, cid: str | None,
                        path: str | None) -> IPFSError:
        """The error for a daemon's answer other than ``200``."""
        try:
            message = str(json.loads(body).get("Message") or "")
        except (ValueError, AttributeError):
            message = ""
        message = message or body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        cls = _classify_message(message)
        if cls is InvalidCIDError and cid is None:
            cls = IPFSError
        if cls is IPFSError and status in (404, 405, 501):
            return UnsupportedOperationError(
                f"http: the daemon at {self.addr().url} does not offer {what} (HTTP {status})",
                cid=cid, path=path, backend=self.backend)
        subject = f" {cid}" if cid else (f" {path}" if path else "")
        return cls(f"http: {what}{subject}: {message}", cid=cid, path=path, backend=self.backend)

    def failure(self, exc: BaseException, what: str, cid: str | None,
                 path: str | None) -> IPFSError:
        """The error for a connection that failed, timed out or was dropped."""
        where = self._address.url if self._address else "?"
        subject = f" {cid}" if cid else (f" {path}" if path else "")
        if isinstance(exc, TimeoutError):
            return IPFSTimeoutError(f"http: {what}{subject}: no answer from {where} in time",
                                    cid=cid, path=path, backend=self.backend)
        return IPFSUnavailableError(
            f"http: {what}{subject}: the daemon at {where} cannot be reached or dropped the "
            f"connection ({type(exc).__name__}: {exc})", cid=cid, path=path, backend=self.backend)

    def close(self) -> None:
        """Close every connection (best effort)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
