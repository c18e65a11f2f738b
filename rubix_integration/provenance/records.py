"""What the provenance log hands out: records, and the findings of a verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rubix_integration.codecs import dagjson
from rubix_integration.codecs.clock import EPOCH, format_time

__all__ = ["MAX_RECORD_BYTES", "ChainProblem", "ProvenanceRecord", "VerifyReport"]

#: Largest encoded record accepted (the DAG-JSON block, data included): 1 MiB.
MAX_RECORD_BYTES = 1024 * 1024

@dataclass(frozen=True)
class ProvenanceRecord:
    """One record: its CID, its place in its chain, and what it says.

    ``data`` holds links as :class:`~rubix_integration.codecs.CID` and bytes as :class:`bytes`,
    exactly as the block encodes them. :meth:`as_dict` gives plain JSON values.
    """

    cid: str
    prev: str | None
    chain: str
    seq: int
    type: str
    timestamp_us: int
    origin_node: str
    data: Any
    published: bool = False

    @property
    def timestamp(self) -> datetime:
        """When the record was made (UTC)."""
        return EPOCH + timedelta(microseconds=self.timestamp_us)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values: links and bytes in their DAG-JSON ``{"/": …}`` form."""
        return {
            "cid": self.cid,
            "prev": self.prev,
            "chain": self.chain,
            "seq": self.seq,
            "type": self.type,
            "timestamp": format_time(self.timestamp_us),
            "origin_node": self.origin_node,
            "data": dagjson.to_json_form(self.data),
            "published": self.published,
        }


@dataclass(frozen=True)
class ChainProblem:
    """One defect :meth:`ProvenanceLogger.verify` found.

    ``kind`` is ``"altered"`` (the record's bytes or columns no longer match its CID, or its CID
    no longer matches the link the next record holds), ``"removed"`` (records are missing before
    this one: its link or its sequence number points past a gap) or ``"reordered"`` (the record
    is intact but stored at another position than the one its block states). Against signed
    checkpoints: ``"truncated"`` (the chain ends before the head a checkpoint signed),
    ``"rewritten"`` (another record stands where a checkpoint signed its head) and
    ``"checkpoint"`` (the checkpoint itself is unreadable, forged, or signed by a key that is not
    trusted). For those, ``seq`` and ``cid`` are the signed head's (the checkpoint's CID for
    ``"checkpoint"``), and ``detail`` names the checkpoint.
    """

    kind: str
    chain: str
    seq: int
    cid: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`ProvenanceLogger.verify` checked and found.

    ``checkpoints`` is how many checkpoints were checked; ``unanchored`` names the chains that no
    valid checkpoint anchors: for those, a cut-off end or a rewritten suffix cannot be told.
    """

    records: int
    chains: int
    problems: tuple[ChainProblem, ...] = field(default_factory=tuple)
    checkpoints: int = 0
    unanchored: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "chains": self.chains,
            "checkpoints": self.checkpoints,
            "unanchored": list(self.unanchored),
            "problems": [p.__dict__ for p in self.problems],
        }
