"""Chain verification: recompute each record's CID, compare its columns with its block, and
follow the links between blocks to find what was altered, removed or reordered.

The stored ``data`` column is compared with the block's data as canonical JSON text (sorted keys,
no whitespace, every value written as its type writes it), never with Python's ``==``, for which
``1 == True == 1.0``: a change of JSON type changes what readers get back, so it is a change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rubix_integration.codecs import dagjson
from rubix_integration.provenance._query import to_us
from rubix_integration.provenance.records import ChainProblem, VerifyReport

if TYPE_CHECKING:
    from rubix_integration.provenance.checkpoints import Checkpoint

__all__ = ["verify_rows"]


@dataclass
class _Seen:
    stored_cid: str
    actual_cid: str
    link: str | None
    row_seq: int


def _link_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("/"), str):
        return str(value["/"])
    return "<not a link>"


_canonical: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, allow_nan=True, sort_keys=True, separators=(",", ":")).encode


def _same_as_numeric(stored: Any, hashed: Any) -> bool:
    """Whether ``stored`` is ``hashed`` as PostgreSQL's JSONB may give it back.

    JSONB keeps a JSON number as ``numeric``; an integral float written in exponent form
    (``1e+16``: how Python writes large ones, and DAG-JSON those from ``1e21`` on) has no fraction
    digits to keep, so it reads back as an integer. Every other difference counts.
    """
    if isinstance(hashed, float) and type(stored) is int:
        return (abs(hashed) >= 1e16 and hashed.is_integer()
                and stored == int(Decimal(repr(hashed))))
    if isinstance(hashed, dict) and isinstance(stored, dict):
        return stored.keys() == hashed.keys() and all(
            _same_as_numeric(stored[k], v) for k, v in hashed.items())
    if isinstance(hashed, list) and isinstance(stored, list):
        return len(stored) == len(hashed) and all(
            _same_as_numeric(a, b) for a, b in zip(stored, hashed, strict=True))
    return type(stored) is type(hashed) and _canonical(stored) == _canonical(hashed)


def _same_data(stored: Any, hashed: Any, numeric: bool) -> bool:
    """Whether the stored data column holds exactly the block's data, JSON types included."""
    try:
        if _canonical(stored) == _canonical(hashed):
            return True
        return numeric and _same_as_numeric(stored, hashed)
    except (TypeError, ValueError, RecursionError):
        return False


def _check_row(row: Any, problems: list[ChainProblem],
               numeric: bool = False) -> tuple[int, _Seen] | None:
    block_text = str(row.block)
    actual = str(dagjson.cid_for_block(block_text.encode("utf-8")))
    try:
        block = json.loads(block_text)
        block_seq = int(block["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(ChainProblem("altered", row.chain, int(row.seq), row.cid,
                                     f"its block is not a readable record: {exc}"))
        return None
    if actual != row.cid:
        problems.append(ChainProblem(
            "altered", row.chain, int(row.seq), row.cid,
            f"its block hashes to {actual}, not to its stored CID"))
    link = _link_text(block.get("prev"))
    data = row.data if not isinstance(row.data, str) else json.loads(row.data)
    try:
        block_time: int | None = to_us(str(block.get("time")))
    except ValueError:
        block_time = None
    expected = {
        "chain": (row.chain, block.get("chain")),
        "type": (row.type, block.get("type")),
        "origin_node": (row.origin_node, block.get("node")),
        "prev": (row.prev, link),
        "timestamp": (int(row.timestamp_us), block_time),
    }
    differ = [name for name, (stored, hashed) in expected.items() if stored != hashed]
    if not _same_data(data, block.get("data"), numeric):
        differ.append("data")
    if differ:
        problems.append(ChainProblem(
            "altered", row.chain, int(row.seq), row.cid,
            f"stored {', '.join(differ)} differ from what its block (hence its CID) says"))
    if block_seq != int(row.seq):
        problems.append(ChainProblem(
            "reordered", row.chain, int(row.seq), row.cid,
            f"stored at position {row.seq} but its block is record {block_seq} of the chain"))
    return block_seq, _Seen(str(row.cid), actual, link, int(row.seq))


def _check_links(chain: str, seen: dict[int, _Seen], problems: list[ChainProblem]) -> None:
    for seq in sorted(seen):
        item = seen[seq]
        if seq == 0:
            if item.link is not None:
                problems.append(ChainProblem(
                    "altered", chain, item.row_seq, item.stored_cid,
                    f"record 0 of the chain links {item.link}"))
            continue
        before = seen.get(seq - 1)
        if before is None:
            problems.append(ChainProblem(
                "removed", chain, item.row_seq, item.stored_cid,
                f"the record before it (number {seq - 1}, CID {item.link}) is missing"))
        elif item.link not in (before.stored_cid, before.actual_cid):
            problems.append(ChainProblem(
                "altered", chain, before.row_seq, before.stored_cid,
                f"the next record links {item.link}, but this record is now "
                f"{before.actual_cid}"))


def _check_anchors(chain: str, seen: dict[int, _Seen], anchors: Sequence[Checkpoint],
                   problems: list[ChainProblem]) -> None:
    """Whether the chain still holds the head each valid checkpoint signed, at its place."""
    last = max(seen) if seen else -1
    for checkpoint in anchors:
        item = seen.get(checkpoint.seq)
        signed = (f"checkpoint {checkpoint.cid} signed record {checkpoint.seq} as "
                  f"{checkpoint.head}")
        if item is None and checkpoint.seq > last:
            problems.append(ChainProblem(
                "truncated", chain, checkpoint.seq, checkpoint.head,
                f"{signed}, but the chain "
                + (f"ends at record {last}" if seen else "has no records left")))
        elif item is None:
            problems.append(ChainProblem(
                "removed", chain, checkpoint.seq, checkpoint.head,
                f"{signed}, but the chain no longer holds that record"))
        elif item.actual_cid != checkpoint.head:
            problems.append(ChainProblem(
                "rewritten", chain, checkpoint.seq, checkpoint.head,
                f"{signed}, but the chain now holds {item.actual_cid} there"))


def verify_rows(rows: Iterable[Any], *, numeric: bool = False,
                anchors: Mapping[str, Sequence[Checkpoint]] | None = None) -> VerifyReport:
    """Verify rows ordered by chain then stored position.

    ``numeric``: the store keeps JSON numbers as SQL ``numeric`` (PostgreSQL's JSONB), so large
    integral floats come back as integers; only that difference is accepted. ``anchors``: the
    checkpoints, already checked as trusted and well signed, by chain.
    """
    anchors = anchors or {}
    problems: list[ChainProblem] = []
    unanchored: list[str] = []
    records = 0
    chains = 0
    current: str | None = None
    seen: dict[int, _Seen] = {}

    def close(chain: str) -> None:
        _check_links(chain, seen, problems)
        if chain in anchors:
            _check_anchors(chain, seen, anchors[chain], problems)
        else:
            unanchored.append(chain)

    done: set[str] = set()
    for row in rows:
        records += 1
        if row.chain != current:
            if current is not None:
                close(current)
                done.add(current)
            current, seen = str(row.chain), {}
            chains += 1
        checked = _check_row(row, problems, numeric)
        if checked is None:
            continue
        block_seq, item = checked
        if block_seq in seen:
            problems.append(ChainProblem(
                "altered", str(row.chain), item.row_seq, item.stored_cid,
                f"a second record claims to be number {block_seq} of the chain"))
            continue
        seen[block_seq] = item
    if current is not None:
        close(current)
        done.add(current)
    seen = {}
    for chain in sorted(set(anchors) - done):  # chains of which no record is left
        _check_anchors(chain, seen, anchors[chain], problems)
    return VerifyReport(records=records, chains=chains, problems=tuple(problems),
                        unanchored=tuple(unanchored))
