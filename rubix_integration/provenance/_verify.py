"""Chain verification: recompute each record's CID, compare its columns with its block, and
follow the links between blocks to find what was altered, removed or reordered."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rubix_integration.provenance import dagjson
from rubix_integration.provenance._query import to_us
from rubix_integration.provenance.logger import ChainProblem, VerifyReport

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


def _check_row(row: Any, problems: list[ChainProblem]) -> tuple[int, _Seen] | None:
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
        "data": (data, block.get("data")),
    }
    differ = [name for name, (stored, hashed) in expected.items() if stored != hashed]
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


def verify_rows(rows: Iterable[Any]) -> VerifyReport:
    """Verify rows ordered by chain then stored position."""
    problems: list[ChainProblem] = []
    records = 0
    chains = 0
    current: str | None = None
    seen: dict[int, _Seen] = {}
    for row in rows:
        records += 1
        if row.chain != current:
            if current is not None:
                _check_links(current, seen, problems)
            current, seen = str(row.chain), {}
            chains += 1
        checked = _check_row(row, problems)
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
        _check_links(current, seen, problems)
    return VerifyReport(records=records, chains=chains, problems=tuple(problems))
