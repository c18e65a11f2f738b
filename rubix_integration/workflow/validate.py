"""Checks of the workflow's arguments, run before any SQL, alike on every store.

Ids and other text are 1 to 255 characters without NUL or lone surrogates; numbers are integers
in the range the stores keep; payloads are DAG-JSON of at most :data:`MAX_PAYLOAD_BYTES` without
NUL in text. Anything else raises :class:`~rubix_integration.errors.InvalidDataError` (or
:class:`~rubix_integration.errors.PayloadTooLargeError`). Free text that reports a failure is
kept instead, made storable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from rubix_integration.codecs import dagjson
from rubix_integration.errors import InvalidDataError, PayloadTooLargeError
from rubix_integration.workflow.matching import parse_tags, storable_text

__all__ = [
    "INT32",
    "MAX_BATCH",
    "MAX_ERROR",
    "MAX_PAYLOAD_BYTES",
    "MAX_ROWS",
    "Result",
    "check_batch",
    "encoded_payload",
    "integer",
    "lease_token",
    "message",
    "new_row",
    "new_rows",
    "payload",
    "payloads",
    "result_item",
    "shown",
    "task_id",
    "text",
    "worker_id",
]

#: Largest ``data`` or ``result`` accepted, encoded as DAG-JSON: 1 MiB.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Most tasks one ``get_next_tasks`` or ``complete_tasks`` call handles.
MAX_BATCH = 1000
MAX_ERROR = 4000
INT32 = (-(2**31), 2**31 - 1)
MAX_ROWS = 2**63 - 1  # the largest LIMIT or OFFSET both stores take
# a NUL character as the JSON encoder writes it, not preceded by an escaping backslash
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def encoded_payload(value: Any, what: str) -> bytes:
    """``value`` as DAG-JSON, or InvalidDataError / PayloadTooLargeError."""
    encoded = dagjson.encode(value)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"task {what} is {len(encoded)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} "
            "bytes (store large content in IPFS and pass its CID)",
            size=len(encoded), limit=MAX_PAYLOAD_BYTES, path=what)
    # PostgreSQL's JSON cannot hold U+0000; refuse it on every store alike
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise InvalidDataError(
            f"task {what} holds text with a NUL character (U+0000), which the store cannot keep; "
            "pass binary content as bytes", path=what)
    return encoded


def payload(value: Any, what: str) -> Any:
    """``value`` in its stored JSON form (checked as :func:`encoded_payload` checks it)."""
    return json.loads(encoded_payload(value, what))


def payloads(values: list[Any], what: str) -> list[tuple[str, Any]]:
    """Each of ``values`` as :func:`payload` checks it: its DAG-JSON text and its stored JSON
    form, checked together (one encoding and one reading back for the lot when every value is
    plain JSON, as bulk submits mostly are; else one by one, with the same errors)."""
    try:
        texts = [dagjson._c_encode(v) for v in values]
        joined = "[" + ",".join(texts) + "]"
        # the checks encode_plain makes, on all the texts at once
        if not (dagjson._exponent_in(joined) or "-0.0" in joined or '"/"' in joined
                or "\\u0000" in joined):
            plain = dagjson._read_back(joined)
            if (plain == values
                    and all(len(t) * 4 <= MAX_PAYLOAD_BYTES
                            or len(t.encode("utf-8")) <= MAX_PAYLOAD_BYTES for t in texts)
                    and all(t.count("{") + t.count("[") <= dagjson.MAX_DEPTH
                            or dagjson._within_depth(p) for t, p in zip(texts, plain,
                                                                        strict=True))):
                return list(zip(texts, plain, strict=True))
    except (TypeError, ValueError, RecursionError):  # not plain JSON: one by one below
        pass
    out = []
    for value in values:
        encoded = encoded_payload(value, what)
        out.append((encoded.decode("utf-8"), json.loads(encoded)))
    return out


def shown(value: object) -> str:
    """``value`` for an error message: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def text(value: object, path: str, max_length: int) -> str:
    """``value`` when it is 1 to ``max_length`` characters of text every store keeps, else
    InvalidDataError naming ``path``."""
    if (not isinstance(value, str) or not value or len(value) > max_length
            or not storable_text(value)):
        raise InvalidDataError(
            f"{path} must be 1 to {max_length} characters of text without NUL, not "
            f"{shown(value)}", path=path)
    return value


def integer(value: object, path: str, low: int, high: int) -> int:
    """``value`` when it is an integer (not a bool) from ``low`` to ``high``, else
    InvalidDataError naming ``path``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidDataError(f"{path} must be an integer from {low} to {high}, not "
                               f"{shown(value)}", path=path)
    return value


def task_id(value: object) -> str:
    """A checked task id."""
    return text(value, "task_id", 255)


def worker_id(value: object) -> str | None:
    """A checked worker id, or ``None``."""
    return None if value is None else text(value, "worker_id", 255)


def lease_token(value: object) -> str | None:
    """A checked lease token, or ``None``."""
    return None if value is None else text(value, "lease_token", 64)


def message(value: object, default: str) -> str:
    """Free text (an error, a reason) as every store keeps it: NUL and lone surrogates are
    replaced, not refused, so that a failure is never lost over its message."""
    out = str(value) if value is not None else default
    if not storable_text(out):
        out = out.replace("\x00", "\ufffd")
        out = out.encode("utf-8", "replace").decode("utf-8")
    return out[:MAX_ERROR]


def check_batch(value: int, name: str = "limit") -> int:
    """``value`` when it is an integer from 1 to :data:`MAX_BATCH`, else ``InvalidDataError``."""
    return integer(value, name, 1, MAX_BATCH)


class Result(NamedTuple):
    """A result to accept: its task, fencing token and DAG-JSON text, and its CID."""

    task_id: str
    lease_token: str | None
    text: str
    cid: str


def result_item(task_id: str, result: Any, lease_token: str | None) -> Result:
    """A result ready to store: its DAG-JSON text and CID (or InvalidDataError)."""
    encoded = encoded_payload(result, "result")
    return Result(task_id, lease_token, encoded.decode("utf-8"),
                  dagjson.cid_text_for_block(encoded))


def new_row(task_id_: str, task_type: str, data: Any, priority: int,
            tags: Iterable[str] | None, max_attempts: int | None, default_attempts: int,
            now: int) -> dict[str, Any]:
    """The stored row of a new pending task, its arguments checked."""
    return _row(task_id_, task_type, payload(data, "data"), priority, tags, max_attempts,
                default_attempts, now)


def _row(task_id_: str, task_type: str, plain_data: Any, priority: int,
         tags: Iterable[str] | None, max_attempts: int | None, default_attempts: int,
         now: int) -> dict[str, Any]:
    task_id(task_id_)
    text(task_type, "task_type", 200)
    integer(priority, "priority", *INT32)
    attempts = (default_attempts if max_attempts is None
                else integer(max_attempts, "max_attempts", 1, INT32[1]))
    try:
        tagset = parse_tags(tags)
    except ValueError as exc:
        raise InvalidDataError(str(exc), path="tags") from exc
    return {
        "task_id": task_id_, "task_type": task_type, "state": "pending",
        "priority": priority, "data": plain_data, "tags": list(tagset.tags),
        "required_caps": list(tagset.required), "preferred_caps": list(tagset.preferred),
        "attempts": 0, "max_attempts": attempts, "created_at_us": now,
        "updated_at_us": now, "due_at_us": now,
    }


def due_time(run_at: Any, delay: Any, now: int) -> int:
    """When a new task becomes claimable (microseconds): ``run_at`` (an aware ``datetime``, or
    seconds since the epoch), ``delay`` seconds from ``now``, or ``now``."""
    import math
    from datetime import datetime

    if run_at is not None and delay is not None:
        raise InvalidDataError("give run_at or delay, not both", path="run_at")
    if delay is not None:
        if (isinstance(delay, bool) or not isinstance(delay, (int, float))
                or not math.isfinite(delay) or not 0 <= delay <= 10 * 365 * 86400):
            raise InvalidDataError(f"delay must be seconds from 0 to ten years, not "
                                   f"{shown(delay)}", path="delay")
        return now + int(delay * 1_000_000)
    if run_at is None:
        return now
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise InvalidDataError("run_at must be an aware datetime (with a time zone)",
                                   path="run_at")
        seconds = run_at.timestamp()
    elif (isinstance(run_at, (int, float)) and not isinstance(run_at, bool)
          and math.isfinite(run_at)):
        seconds = float(run_at)
    else:
        raise InvalidDataError(f"run_at must be a datetime or seconds since the epoch, not "
                               f"{shown(run_at)}", path="run_at")
    if not 0 <= seconds < 2 ** 62 / 1_000_000:
        raise InvalidDataError(f"run_at out of range: {shown(run_at)}", path="run_at")
    return int(seconds * 1_000_000)


def new_rows(tasks: Iterable[Any], default_attempts: int,
             now: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The stored rows of new pending tasks (mappings with :meth:`submit_task`'s arguments as
    keys), each checked as :func:`new_row` and :func:`due_time` check it, and the DAG-JSON text
    of each row's ``data`` (the payloads checked together, see :func:`payloads`)."""
    from collections.abc import Mapping

    rows: list[dict[str, Any]] = []
    datas: list[Any] = []
    for t in tasks:
        if not isinstance(t, Mapping):
            raise InvalidDataError(f"each task must be a mapping, not {shown(t)}",
                                   path="tasks")
        row = _row(t["task_id"], t["task_type"], None, t.get("priority", 0), t.get("tags"),
                   t.get("max_attempts"), default_attempts, now)
        row["due_at_us"] = due_time(t.get("run_at"), t.get("delay"), now)
        rows.append(row)
        datas.append(t.get("data"))
    texts = []
    for row, (data_text, plain) in zip(rows, payloads(datas, "data"), strict=True):
        row["data"] = plain
        texts.append(data_text)
    return rows, texts
