"""The ``http`` backend: a running IPFS daemon's RPC API (kubo's ``/api/v0``, js-ipfs's too).

The address comes from the ``ipfs_api`` setting (a multiaddr such as ``/ip4/127.0.0.1/tcp/5001``
or a URL such as ``http://127.0.0.1:5001``), else from the repo's ``api`` file, which a daemon
writes when it starts. Requests go through :class:`ipfshttpclient.Client`, built directly (its
``connect()`` refuses every daemon newer than 0.7), one per thread with a kept-alive session.

Every request carries the daemon-side ``timeout`` argument and a slightly longer client-side
timeout, so that a CID held by no one ends with the daemon's own "timed out" answer rather than a
hang; streamed reads also stop at an overall deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlencode, urlsplit

from rubix_integration.codecs import CID, import_directory, parse_cid, verify_block
from rubix_integration.errors import (
    ConfigError,
    ContentNotFoundError,
    ContentTooLargeError,
    CorruptBlockError,
    InvalidCIDError,
    IPFSError,
    IPFSTimeoutError,
    IPFSUnavailableError,
    NotAFileError,
    UnsupportedOperationError,
)
from rubix_integration.hookspecs import hookimpl
from rubix_integration.ipfs._writeout import DirOut, FileOut, LinkOut, write_tree
from rubix_integration.ipfs.base import (
    AddedEntry,
    AddResult,
    DirEntry,
    Health,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
)

if TYPE_CHECKING:
    import ipfshttpclient

__all__ = ["ApiAddress", "HTTPBackend", "parse_api_address"]

PROBE_TIMEOUT = 1.0
"""Seconds :meth:`HTTPBackend.detect` and :meth:`HTTPBackend.health` wait for ``/version``."""

HAS_PROBE_TIMEOUT = 0.5
"""Longest wait of :meth:`HTTPBackend.has` for a block the daemon does not hold."""

CLIENT_GRACE = 1.0
"""Extra seconds the client waits past the daemon-side timeout, so the daemon's answer wins."""

_ADD_OPTS = {
    # kubo's defaults, spelled out: the CIDs must match what `ipfs add` gives everywhere
    "cid-version": "0",
    "chunker": "size-262144",
    "raw-leaves": "false",
    "progress": "false",
    "wrap-with-directory": "false",
}

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


def _resolve_address(context: IPFSContext) -> ApiAddress | str:
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


def _probe_version(address: ApiAddress, timeout: float) -> dict[str, Any]:
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


# --- the backend ---------------------------------------------------------------------------------


class HTTPBackend(IPFSBackend):
    """Serve content through a daemon's RPC API (kubo or js-ipfs)."""

    name = "http"
    priority = 20
    read_only = False

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        resolved = _resolve_address(context)
        self._address: ApiAddress | None = resolved if isinstance(resolved, ApiAddress) else None
        self._no_address_reason = resolved if isinstance(resolved, str) else ""
        self._local = threading.local()
        self._clients: list[ipfshttpclient.Client] = []
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # --- detection -------------------------------------------------------------------------------

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        try:
            resolved = _resolve_address(context)
        except ConfigError as exc:
            return IPFSDetection(False, str(exc))
        if isinstance(resolved, str):
            return IPFSDetection(False, resolved)
        timeout = min(PROBE_TIMEOUT, context.timeout)
        try:
            version = _probe_version(resolved, timeout)
        except OSError as exc:
            return IPFSDetection(
                False, f"no IPFS daemon answers at {resolved.url} (from {resolved.source}): "
                f"{exc or type(exc).__name__}")
        return IPFSDetection(True, f"daemon {version.get('Version', '?')} answers at "
                             f"{resolved.url} (from {resolved.source})")

    @property
    def address(self) -> ApiAddress | None:
        """The daemon address in use (``None`` when none could be found)."""
        return self._address

    # --- plumbing --------------------------------------------------------------------------------

    def _addr(self, cid: str | None = None) -> ApiAddress:
        if self._address is None:
            # a daemon started after this backend was built writes the api file late
            resolved = _resolve_address(self.context)
            if isinstance(resolved, str):
                raise IPFSUnavailableError(f"http: {resolved}", cid=cid, backend=self.name)
            self._address = resolved
        return self._address

    def _client(self, cid: str | None = None) -> ipfshttpclient.Client:
        client: ipfshttpclient.Client | None = getattr(self._local, "client", None)
        if client is None:
            address = self._addr(cid)
            try:
                import ipfshttpclient
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise IPFSUnavailableError(
                    "http: the ipfshttpclient package is not installed "
                    "(pip install 'ipfshttpclient>=0.7,<0.8')", backend=self.name) from exc
            try:
                client = ipfshttpclient.Client(address.multiaddr, session=True)
            except ipfshttpclient.exceptions.AddressError as exc:
                raise IPFSUnavailableError(f"http: bad daemon address {address.multiaddr}",
                                           backend=self.name) from exc
            if _is_loopback(address.url):
                # requests re-reads every proxy variable of the environment on each request
                # (a third of the time of a small cat); no proxy serves a loopback daemon anyway
                session = getattr(getattr(client, "_client", None), "_session", None)
                if session is not None:
                    session.trust_env = False
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _timeout(self, timeout: float | None) -> float:
        value = self.context.timeout if timeout is None else timeout
        if value <= 0:
            raise ValueError(f"timeout must be positive, got {value}")
        return value

    def _kwargs(self, timeout: float, opts: dict[str, str] | None = None) -> dict[str, Any]:
        """The per-request arguments: daemon-side and client-side timeouts."""
        all_opts = {"timeout": f"{max(1, int(timeout * 1000))}ms"}
        if opts:
            all_opts.update(opts)
        return {"opts": all_opts,
                "timeout": (min(timeout, 5.0), timeout + CLIENT_GRACE)}

    def _fail(self, exc: BaseException, *, cid: str | None = None, path: str | None = None,
              what: str = "request") -> NoReturn:
        """Raise the classified error for ``exc`` (from ipfshttpclient, requests or urllib3)."""
        raise self._translate(exc, cid=cid, path=path, what=what) from exc

    def _translate(self, exc: BaseException, *, cid: str | None, path: str | None,
                   what: str) -> IPFSError:
        import ipfshttpclient.exceptions as ipfs_exc
        import requests

        where = self._address.url if self._address else "?"
        subject = f" {cid}" if cid else (f" {path}" if path else "")
        if isinstance(exc, IPFSError):
            return exc
        if isinstance(exc, ipfs_exc.ErrorResponse):
            message = str(exc.args[0]) if exc.args else str(exc)
            cls = _classify_message(message)
            if cls is InvalidCIDError and cid is None:
                cls = IPFSError
            return cls(f"http: {what}{subject}: {message}", cid=cid, path=path, backend=self.name)
        if isinstance(exc, (ipfs_exc.TimeoutError, requests.exceptions.Timeout, TimeoutError)):
            return IPFSTimeoutError(f"http: {what}{subject}: no answer from {where} in time",
                                    cid=cid, path=path, backend=self.name)
        if isinstance(exc, (ipfs_exc.ConnectionError, ipfs_exc.ProtocolError,
                            requests.exceptions.ConnectionError,
                            requests.exceptions.ChunkedEncodingError, ConnectionError)):
            return IPFSUnavailableError(
                f"http: {what}{subject}: the daemon at {where} cannot be reached or dropped the "
                f"connection ({type(exc).__name__})", cid=cid, path=path, backend=self.name)
        if isinstance(exc, ipfs_exc.StatusError):
            status = getattr(getattr(exc.original, "response", None), "status_code", None)
            if status in (404, 405, 501):
                return UnsupportedOperationError(
                    f"http: the daemon at {where} does not offer {what} (HTTP {status})",
                    cid=cid, path=path, backend=self.name)
            return IPFSError(f"http: {what}{subject}: {exc}", cid=cid, path=path,
                             backend=self.name)
        return IPFSError(f"http: {what}{subject}: {type(exc).__name__}: {exc}", cid=cid,
                         path=path, backend=self.name)

    def _catchable(self) -> tuple[type[BaseException], ...]:
        import ipfshttpclient.exceptions as ipfs_exc
        import requests
        import urllib3.exceptions

        return (ipfs_exc.Error, requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError, OSError)

    # --- reading ---------------------------------------------------------------------------------

    def cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> bytes:
        _check_range(offset, length)
        if length == 0 and max_size is None:
            # the daemon rejects length=0; an empty slice needs no request
            parse_cid(cid)
            return b""
        if max_size is None or (offset == 0 and length is None):
            # one request; with a limit, read at most one byte past it instead of asking the size
            text = str(parse_cid(cid))
            return self._fast_cat(text, _range_opts(offset, length), self._timeout(timeout),
                                  max_size)
        return b"".join(self.iter_cat(cid, offset=offset, length=length, max_size=max_size,
                                      timeout=timeout))

    def iter_cat(
        self,
        cid: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        _check_range(offset, length)
        if max_size is not None:
            kind, size = self._stat(cid, timeout)
            if kind != "file":
                raise NotAFileError(f"http: {cid} is a {kind}, not a file", cid=str(cid),
                                    backend=self.name)
            if size > max_size:
                raise ContentTooLargeError(
                    f"http: {cid} holds {size} bytes, more than the limit of {max_size}",
                    cid=str(cid), backend=self.name)
        if length == 0:
            parse_cid(cid)
            return iter(())
        return self._stream_cat(cid, offset, length, timeout)

    # --- the hot read: one keep-alive connection per thread -------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if conn is None:
            split = urlsplit(self._addr().url)
            factory = (http.client.HTTPSConnection if split.scheme == "https"
                       else http.client.HTTPConnection)
            conn = factory(split.hostname or "", split.port)
            self._local.connection = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "connection", None)
        self._local.connection = None
        if conn is not None:
            conn.close()

    def _fast_cat(self, text: str, opts: dict[str, str], limit: float,
                  max_size: int | None) -> bytes:
        """``cat`` over a bare keep-alive connection (ipfshttpclient and requests spend more
        time per small object than the daemon does). Same timeouts, same error classes."""
        query = urlencode({"arg": text, "timeout": f"{max(1, int(limit * 1000))}ms", **opts})
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            conn.timeout = limit + CLIENT_GRACE
            if conn.sock is not None:
                conn.sock.settimeout(limit + CLIENT_GRACE)
            try:
                conn.request("POST", f"/api/v0/cat?{query}")
                response = conn.getresponse()
                if response.status != 200:
                    body = response.read(65536)
                    self._drop_connection()  # errors are rare: no need to keep it tidy
                    raise self._error_response(response.status, body, text)
                data = response.read() if max_size is None else response.read(max_size + 1)
                if max_size is not None and len(data) > max_size:
                    self._drop_connection()  # the rest of the body is never read
                    raise ContentTooLargeError(
                        f"http: {text} holds more than the limit of {max_size} bytes",
                        cid=text, backend=self.name)
                if response.will_close:
                    self._drop_connection()
                return data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if reused and attempt == 1:
                    continue  # the daemon closed an idle kept-alive connection: once more, fresh
                raise IPFSUnavailableError(
                    f"http: cat {text}: the daemon at {self._addr().url} dropped the connection "
                    f"({type(exc).__name__})", cid=text, backend=self.name) from exc
            except TimeoutError as exc:
                self._drop_connection()
                raise IPFSTimeoutError(f"http: cat {text}: no answer from {self._addr().url} "
                                       "in time", cid=text, backend=self.name) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise IPFSUnavailableError(
                    f"http: cat {text}: the daemon at {self._addr().url} cannot be reached "
                    f"({type(exc).__name__}: {exc})", cid=text, backend=self.name) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _error_response(self, status: int, body: bytes, cid: str) -> IPFSError:
        try:
            message = str(json.loads(body).get("Message") or "")
        except (ValueError, AttributeError):
            message = ""
        message = message or body[:200].decode("utf-8", "replace") or f"HTTP {status}"
        cls = _classify_message(message)
        if cls is IPFSError and status in (404, 405, 501):
            return UnsupportedOperationError(
                f"http: the daemon at {self._addr().url} does not offer cat (HTTP {status})",
                cid=cid, backend=self.name)
        return cls(f"http: cat {cid}: {message}", cid=cid, backend=self.name)

    def _stream_cat(self, cid: str, offset: int, length: int | None,
                    timeout: float | None) -> Iterator[bytes]:
        """Open the stream now (errors surface at the call) and yield its chunks lazily."""
        text = str(parse_cid(cid))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit + CLIENT_GRACE
        try:
            stream = self._client(text).cat(
                text, stream=True, **self._kwargs(limit, _range_opts(offset, length)))
        except self._catchable() as exc:
            self._fail(exc, cid=text, what="cat")
        return self._drain(stream, text, deadline, length)

    def _drain(self, stream: Any, cid: str, deadline: float,
               length: int | None) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in stream:
                if not chunk:
                    continue
                if length is not None and received + len(chunk) > length:
                    chunk = chunk[:length - received]
                received += len(chunk)
                yield chunk
                if length is not None and received >= length:
                    return
                if time.monotonic() > deadline:
                    raise IPFSTimeoutError(f"http: cat {cid}: did not finish in time", cid=cid,
                                           backend=self.name)
        except self._catchable() as exc:
            self._fail(exc, cid=cid, what="cat")
        finally:
            stream.close()

    def _stat(self, cid: str, timeout: float | None) -> tuple[str, int]:
        """``("file"|"directory"|..., content size)`` of ``cid`` from ``files/stat``."""
        text = str(parse_cid(cid))
        try:
            stat = self._client(text).files.stat(f"/ipfs/{text}",
                                                 **self._kwargs(self._timeout(timeout)))
        except self._catchable() as exc:
            self._fail(exc, cid=text, what="stat")
        return str(stat.get("Type", "other")), int(stat.get("Size", 0) or 0)

    def ls(self, cid: str, *, timeout: float | None = None) -> list[DirEntry]:
        text = str(parse_cid(cid))
        try:
            answer = self._client(text).ls(text, **self._kwargs(self._timeout(timeout)))
        except self._catchable() as exc:
            self._fail(exc, cid=text, what="ls")
        entries: list[DirEntry] = []
        for obj in answer.get("Objects") or []:
            for link in obj.get("Links") or []:
                kind = _LINK_TYPES.get(int(link.get("Type", -1)), "other")
                size = int(link.get("Size", 0) or 0) if kind == "file" else 0
                entries.append(DirEntry(str(link.get("Name", "")), str(link["Hash"]), size, kind))
        return entries

    def get(self, cid: str, dest: Path, *, timeout: float | None = None) -> Path:
        """Write the file or tree to ``dest`` (``dest`` becomes the file or directory itself).

        Walks the tree with ``ls`` and ``cat`` rather than ``/get``'s tar stream: names are checked
        before anything is written and one deadline covers the whole tree.
        """
        root = str(parse_cid(cid))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        dest = Path(dest)
        kind, _ = self._stat(root, limit)
        self._write(root, kind, dest, deadline)
        return dest

    def _remaining(self, deadline: float, cid: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise IPFSTimeoutError(f"http: get {cid}: did not finish in time", cid=cid,
                                   backend=self.name)
        return left

    def _write(self, cid: str, kind: str, dest: Path, deadline: float) -> None:
        # the same writer as the block-reading backends: names checked, no link followed, a
        # repeated name refused, nesting bounded
        def resolve(item: tuple[str, str]) -> FileOut | LinkOut | DirOut[tuple[str, str]]:
            at, what = item
            if what == "file":
                return FileOut(self._stream_cat(at, 0, None, self._remaining(deadline, at)))
            if what == "directory":
                entries = self.ls(at, timeout=self._remaining(deadline, at))
                return DirOut([(e.name, (e.cid, e.type)) for e in entries])
            raise NotAFileError(f"http: {at} is neither a file nor a directory", cid=at,
                                backend=self.name, path=str(dest))

        write_tree((cid, kind), dest, resolve, describe=lambda item: item[0],
                   backend=self.name)

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Ask ``block/stat`` with ``offline=true`` and a short limit.

        kubo answers at once for a block it lacks; js-ipfs ignores ``offline`` and waits, so a
        missing block costs up to :data:`HAS_PROBE_TIMEOUT` there (and, the daemon being offline,
        nothing is fetched).
        """
        text = str(parse_cid(cid))
        limit = min(self._timeout(timeout), HAS_PROBE_TIMEOUT)
        try:
            self._client(text).block.stat(text, **self._kwargs(limit, {"offline": "true"}))
        except self._catchable() as exc:
            error = self._translate(exc, cid=text, path=None, what="has")
            if isinstance(error, (ContentNotFoundError, IPFSTimeoutError)):
                return False
            raise error from exc
        return True

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        parsed = parse_cid(cid)
        text = str(parsed)
        try:
            data: bytes = self._client(text).block.get(text,
                                                        **self._kwargs(self._timeout(timeout)))
        except self._catchable() as exc:
            self._fail(exc, cid=text, what="block get")
        verify_block(parsed, data)
        return data

    # --- writing ---------------------------------------------------------------------------------

    def put_block(self, data: bytes, *, cid: str, timeout: float | None = None) -> None:
        expected = parse_cid(cid)
        verify_block(expected, data)
        from rubix_integration.codecs._cid import HASH_NAMES

        opts = {"format": expected.codec_name, "mhtype": HASH_NAMES.get(expected.hash_code, ""),
                "version": str(expected.version)}
        import io

        try:
            answer = self._client(str(expected)).block.put(
                io.BytesIO(data), **self._kwargs(self._timeout(timeout), opts))
        except self._catchable() as exc:
            self._fail(exc, cid=str(expected), what="block put")
        got = parse_cid(str(answer.get("Key", "")))
        if got.multihash != expected.multihash or got.codec != expected.codec:
            raise CorruptBlockError(
                f"http: the daemon stored the block as {got}, expected {expected}",
                cid=str(expected), backend=self.name)

    def add_bytes(self, data: bytes, *, pin: bool = True, timeout: float | None = None) -> str:
        rows = self._add([("bytes", data)], pin=pin, timeout=timeout, path=None)
        return str(rows[-1]["Hash"])

    def add_file(self, path: Path, *, pin: bool = True, timeout: float | None = None) -> str:
        path = Path(path)
        if not path.is_file():
            raise NotAFileError(f"http: {path} is not a regular file", path=str(path),
                                backend=self.name)
        rows = self._add([(path.name or "file", path)], pin=pin, timeout=timeout, path=str(path))
        return str(rows[-1]["Hash"])

    def add_directory(
        self,
        path: Path,
        *,
        recursive: bool = True,
        pin: bool = True,
        timeout: float | None = None,
    ) -> AddResult:
        """Add a tree the way ``ipfs add -r`` does: hidden names skipped, empty folders kept.

        Symbolic links raise :class:`UnsupportedOperationError`.
        """
        path = Path(path)
        if not path.is_dir():
            raise NotAFileError(f"http: {path} is not a directory", path=str(path),
                                backend=self.name)
        files, dirs = _scan(path, recursive, self.name)
        root = "root"
        if not files:
            # the daemon cannot take a body made only of folders; their blocks are computed here
            return self._add_empty_tree(dirs, pin=pin, timeout=timeout)
        parts: list[tuple[str, bytes | Path | None]] = [
            (f"{root}/{rel}", path / rel) for rel in files
        ]
        # Only folders with nothing under them get a part of their own: js-ipfs rejects a body
        # that starts with a folder part and empties a folder whose part follows its files.
        parents = {p.rpartition("/")[0] for p in (*files, *dirs) if p}
        parts.extend((f"{root}/{rel}", None) for rel in dirs if rel and rel not in parents)
        rows = self._add(parts, pin=pin, timeout=timeout, path=str(path))
        entries: dict[str, AddedEntry] = {}
        for row in rows:
            name = str(row.get("Name", ""))
            rel = "" if name == root else name[len(root) + 1:] if name.startswith(root + "/") \
                else name
            is_dir = rel == "" or rel in dirs
            entries[rel] = AddedEntry(rel, str(row["Hash"]), int(row.get("Size", 0) or 0), is_dir)
        if "" not in entries:
            raise IPFSError(f"http: add of {path} returned no root", path=str(path),
                            backend=self.name)
        # js-ipfs does not report folders that end up empty; their CID is fixed
        empty = import_directory([], lambda _c, _b: None)
        for rel in dirs:
            if rel not in entries:
                entries[rel] = AddedEntry(rel, str(empty.cid), empty.tsize, True)
        ordered = sorted(entries.values(), key=lambda e: (e.path != "", e.path))
        return AddResult(entries[""].cid, tuple(ordered))

    def _add_empty_tree(self, dirs: list[str], *, pin: bool,
                        timeout: float | None) -> AddResult:
        blocks: list[tuple[CID, bytes]] = []
        children: dict[str, list[str]] = {rel: [] for rel in dirs}
        for rel in dirs:
            if rel:
                children[rel.rpartition("/")[0]].append(rel)
        built: dict[str, Any] = {}
        for rel in sorted(dirs, key=lambda r: -r.count("/") if r else 1):
            items = [(c.rpartition("/")[2], built[c]) for c in children[rel]]
            built[rel] = import_directory(items, lambda c, b: blocks.append((c, b)))
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        for block_cid, block in blocks:
            self.put_block(block, cid=str(block_cid), timeout=self._remaining(deadline, "add"))
        root_cid = str(built[""].cid)
        if pin:
            self.pin(root_cid, timeout=self._remaining(deadline, root_cid))
        entries = tuple(AddedEntry(rel, str(built[rel].cid), built[rel].tsize, True)
                        for rel in sorted(dirs))
        return AddResult(root_cid, entries)

    def _add(self, parts: list[tuple[str, bytes | Path | None]], *, pin: bool,
             timeout: float | None, path: str | None) -> list[dict[str, Any]]:
        boundary = uuid.uuid4().hex
        body = _multipart(parts, boundary)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        opts = dict(_ADD_OPTS, pin="true" if pin else "false")
        try:
            # ipfshttpclient's own directory upload sends folder parts first, which js-ipfs
            # rejects; its low-level request takes our body as is
            client = self._client()
            rows = client._client.request("/add", decoder="json", data=body, headers=headers,
                                          **self._kwargs(self._timeout(timeout), opts))
        except self._catchable() as exc:
            self._fail(exc, path=path, what="add")
        result = [dict(r) for r in rows if isinstance(r, dict) and "Hash" in r]
        if not result:
            raise IPFSError(f"http: add returned nothing ({rows!r:.200})", path=path,
                            backend=self.name)
        return result

    def pin(self, cid: str, *, timeout: float | None = None) -> None:
        text = str(parse_cid(cid))
        try:
            self._client(text).pin.add(text, **self._kwargs(self._timeout(timeout),
                                                             {"recursive": "true"}))
        except self._catchable() as exc:
            self._fail(exc, cid=text, what="pin")

    def unpin(self, cid: str, *, timeout: float | None = None) -> None:
        """Remove the recursive pin; a CID that is not pinned is left as it is."""
        text = str(parse_cid(cid))
        try:
            self._client(text).pin.rm(text, **self._kwargs(self._timeout(timeout),
                                                            {"recursive": "true"}))
        except self._catchable() as exc:
            error = self._translate(exc, cid=text, path=None, what="unpin")
            if isinstance(error, ContentNotFoundError) and "not pinned" in str(error).lower():
                return
            raise error from exc

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        try:
            address = self._addr()
        except IPFSError as exc:
            return Health(False, str(exc))
        try:
            version = _probe_version(address, min(PROBE_TIMEOUT, self.context.timeout))
        except OSError as exc:
            return Health(False, f"no IPFS daemon answers at {address.url}: "
                          f"{exc or type(exc).__name__}")
        return Health(True, f"daemon {version.get('Version', '?')} at {address.url}")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.close()
        for client in clients:
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()
        # threads that keep running get a new client on their next call
        self._local = threading.local()


_LINK_TYPES: dict[int, Any] = {1: "directory", 5: "directory", 2: "file", 0: "file"}


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    if length is not None and length < 0:
        raise ValueError(f"length must not be negative, got {length}")


def _range_opts(offset: int, length: int | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if offset:
        opts["offset"] = str(offset)
    if length is not None:
        opts["length"] = str(length)
    return opts


def _scan(root: Path, recursive: bool, backend: str) -> tuple[list[str], list[str]]:
    """Relative paths of the files and folders (root ``""`` included) ``ipfs add -r`` would take."""
    files: list[str] = []
    dirs: list[str] = [""]
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        with os.scandir(folder) as it:
            names = sorted(it, key=lambda e: e.name)
        for entry in names:
            if entry.name.startswith("."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                raise UnsupportedOperationError(
                    f"{backend}: cannot add the symbolic link {root / child}",
                    backend=backend, path=str(root / child))
            if entry.is_dir():
                if recursive:
                    dirs.append(child)
                    stack.append(child)
            elif entry.is_file():
                files.append(child)
    return files, dirs


def _multipart(parts: Iterable[tuple[str, bytes | Path | None]],
               boundary: str) -> Iterator[bytes]:
    """Stream a multipart/form-data body: bytes and files as content, ``None`` as a folder."""
    for name, content in parts:
        kind = "application/x-directory" if content is None else "application/octet-stream"
        yield (f"--{boundary}\r\n"
               f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
               f"Content-Type: {kind}\r\n\r\n").encode()
        if isinstance(content, bytes):
            yield content
        elif isinstance(content, Path):
            with content.open("rb") as fh:
                while chunk := fh.read(_READ_CHUNK * 4):
                    yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


@hookimpl
def register_ipfs_backends() -> list[type[IPFSBackend]]:
    return [HTTPBackend]


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
