"""Fetching a token's content by CID and recording the outcome as data."""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

from rubix_integration.errors import IPFSError
from rubix_integration.ipfs.base import IPFSBackend

__all__ = ["DEFAULT_MAX_SIZE", "Content", "fetch_content", "parse_parts"]

#: Content larger than this is not stored (``ipfs_error = "too_large"``); token contents are tiny.
DEFAULT_MAX_SIZE = 1024 * 1024

_PARTS = re.compile(r"^\s*(\S+)\s+(\d+)\s+(\S+)\s*$")


class Content(NamedTuple):
    """The outcome of one fetch, ready for the ``ipfs_*`` and ``content_*`` columns.

    ``encoding`` is ``"utf-8"`` when ``data`` is the content as text, ``"base64"`` when the
    content was not text (not valid UTF-8, or holding NUL characters, which PostgreSQL text cannot
    store) and ``data`` is its base64 form. ``error`` is a short kind: ``empty_token_id``,
    ``no_ipfs_path``, ``invalid_cid``, ``not_found``, ``timeout``, ``unavailable``, ``corrupt``,
    ``not_a_file``, ``too_large`` or ``unexpected``.
    """

    data: str | None
    encoding: str | None
    size: int | None
    fetched: bool
    error: str | None
    name: str | None = None
    number: str | None = None
    creator: str | None = None


def parse_parts(text: str) -> tuple[str, str, str] | None:
    """Split content of the shape ``NAME NUMBER CREATOR_DID`` (``TRI 0 bafyb…``)."""
    m = _PARTS.match(text)
    if m is None:
        return None
    return m.group(1), m.group(2), m.group(3)


def failed(kind: str) -> Content:
    return Content(None, None, None, False, kind)


def decode(raw: bytes) -> Content:
    """Turn fetched bytes into a :class:`Content` (text when possible, losslessly otherwise)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return Content(base64.b64encode(raw).decode("ascii"), "base64", len(raw), True, None)
    parts = parse_parts(text)
    if parts is None:
        return Content(text, "utf-8", len(raw), True, None)
    return Content(text, "utf-8", len(raw), True, None, *parts)


def fetch_content(
    backend: IPFSBackend | None,
    token_id: str | None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    timeout: float | None = None,
) -> Content:
    """Fetch ``token_id``'s content through ``backend``; never raises for IPFS failures."""
    if not token_id:
        return failed("empty_token_id")
    if backend is None:
        return failed("no_ipfs_path")
    try:
        raw = backend.cat(token_id.strip(), max_size=max_size, timeout=timeout)
    except IPFSError as exc:
        return failed(exc.kind)
    except Exception:  # a plugin backend breaking its contract must not stop a sync
        return failed("unexpected")
    return decode(raw)
