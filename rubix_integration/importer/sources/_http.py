"""A small JSON-over-HTTP client for sources: timeouts, retries with backoff, clear errors."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from rubix_integration.errors import ImportSourceError

__all__ = ["HTTPStatusError", "JSONClient", "user_agent"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def user_agent() -> str:
    """``rubix-integration/<version>``, as services such as Nominatim require."""
    from rubix_integration import __version__

    return f"rubix-integration/{__version__} (+https://github.com/rubixchain)"


class HTTPStatusError(Exception):
    """A response with an error status that retrying did not cure."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}")
        self.status = status
        self.url = url


class JSONClient:
    """GET/POST JSON with a timeout per request and up to ``retries`` retries on timeouts,
    connection errors, 429 and 5xx (waiting ``Retry-After`` or ``backoff`` doubling); a request
    starts at least ``min_interval`` seconds after the previous one ended, retries included."""

    def __init__(self, source: str, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 1.0, min_interval: float = 0.0) -> None:
        self.source = source
        self.min_interval = min_interval
        self._last = float("-inf")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.requests = 0

    def request(self, method: str, url: str, *, body: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer; :class:`HTTPStatusError` for a 4xx other than 429."""
        data = json.dumps(body).encode() if body is not None else None
        wanted = {"User-Agent": user_agent(), "Accept": "application/json", **(headers or {})}
        if data is not None:
            wanted["Content-Type"] = "application/json"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            req = urllib.request.Request(url, data=data, method=method, headers=wanted)
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            self.requests += 1
            try:
                try:
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        raw = resp.read()
                finally:
                    # the interval runs from the end of an exchange: the service sees requests
                    # at least ``min_interval`` apart however late each one reached it
                    self._last = time.monotonic()
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUSES:
                    raise HTTPStatusError(exc.code, _safe(url)) from None
                if last:
                    raise ImportSourceError(f"{self.source}: {_safe(url)} answered HTTP "
                                            f"{exc.code} after {attempt + 1} attempts",
                                            source=self.source, kind="service") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                time.sleep(_wait(retry_after, delay))
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if last:
                    reason = getattr(exc, "reason", exc)
                    raise ImportSourceError(f"{self.source}: {_safe(url)} did not answer "
                                            f"({reason}) after {attempt + 1} attempts",
                                            source=self.source, kind="service") from None
                time.sleep(delay)
            else:
                try:
                    return json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ImportSourceError(f"{self.source}: {_safe(url)} answered malformed "
                                            "JSON", source=self.source,
                                            kind="service") from None
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _wait(retry_after: str | None, delay: float) -> float:
    try:
        return min(max(float(retry_after), 0.0), 60.0) if retry_after else delay
    except ValueError:
        return delay


def _safe(url: str) -> str:
    """``url`` without its query (which may carry credentials or personal data)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
