"""What a sync reports: per database, in total, and as it goes (the observer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rubix_integration.tokens.discover import NodeDatabase

__all__ = ["DatabaseResult", "SyncObserver", "SyncSummary"]


@dataclass
class DatabaseResult:
    """What happened to one node database."""

    db_path: str
    node_name: str
    status: str  # "processed", "skipped" or "failed"
    record_count: int = 0
    ipfs_success_count: int = 0
    ipfs_fail_count: int = 0
    bad_timestamp_count: int = 0
    bad_value_count: int = 0
    ipfs_mode: str | None = None
    error: str | None = None
    error_kind: str | None = None
    duration_s: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncSummary:
    """The outcome of a sync, like the reference script's final report."""

    databases_found: int = 0
    databases_processed: int = 0
    databases_skipped: int = 0
    databases_failed: int = 0
    records: int = 0
    ipfs_success: int = 0
    ipfs_failed: int = 0
    bad_timestamps: int = 0
    bad_values: int = 0
    duration_s: float = 0.0
    interrupted: bool = False
    workers: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    discovery_problems: list[str] = field(default_factory=list)
    databases: list[DatabaseResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No database failed, nothing was unreadable, the run was not interrupted."""
        return not (self.databases_failed or self.discovery_problems or self.interrupted)

    @property
    def ipfs_success_rate(self) -> float:
        total = self.ipfs_success + self.ipfs_failed
        return 100.0 * self.ipfs_success / total if total else 0.0

    def _rates(self, decimals: int) -> tuple[float, float]:
        """Success and failure percentages rounded so that neither reads 100 or 0 while the
        other kind happened: success rounded down, failure up."""
        total = self.ipfs_success + self.ipfs_failed
        if not total:
            return 0.0, 0.0
        scale = 10**decimals
        # exact integer arithmetic: a float product could cross a rounding boundary
        ok = self.ipfs_success * 100 * scale // total
        return ok / scale, (100 * scale - ok) / scale

    @property
    def tokens_per_second(self) -> float:
        return self.records / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["ipfs_success_rate"] = self._rates(2)[0]
        data["tokens_per_second"] = round(self.tokens_per_second, 1)
        return data

    def __str__(self) -> str:
        ok_rate, fail_rate = self._rates(1)
        lines = [
            "Sync summary" + (" (interrupted)" if self.interrupted else ""),
            f"  databases found:     {self.databases_found}",
            f"  processed:           {self.databases_processed}",
            f"  skipped (unchanged): {self.databases_skipped}",
            f"  failed:              {self.databases_failed}",
            f"  records:             {self.records}",
            f"  IPFS success:        {self.ipfs_success} ({ok_rate:.1f}%)",
            f"  IPFS failed:         {self.ipfs_failed} ({fail_rate:.1f}%)",
            f"  duration:            {self.duration_s:.2f} s"
            f" ({self.tokens_per_second:,.0f} tokens/s, {self.workers})",
        ]
        if self.errors_by_kind:
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.errors_by_kind.items()))
            lines.append(f"  IPFS errors:         {kinds}")
        if self.bad_timestamps:
            lines.append(f"  unparsable timestamps (stored as NULL): {self.bad_timestamps}")
        if self.bad_values:
            lines.append(f"  values the store cannot hold (stored as NULL, or NUL replaced "
                         f"by U+FFFD): {self.bad_values}")
        for result in self.databases:
            if result.status == "failed":
                lines.append(f"  FAILED {result.error}")
        lines.extend(f"  UNREADABLE {p}" for p in self.discovery_problems)
        return "\n".join(lines)


class SyncObserver:
    """Receives progress on the calling thread; override what you need (all are no-ops)."""

    def discovered(self, databases: int, to_process: int) -> None:
        """After discovery: how many databases were found and how many will be processed."""

    def database_started(self, node: NodeDatabase, tokens: int) -> None:
        """A database's snapshot is open and holds ``tokens`` tokens."""

    def tokens_fetched(self, count: int, ok: int, failed: int) -> None:
        """A batch of ``count`` tokens was read and fetched (``ok`` fetched, ``failed`` not)."""

    def database_finished(self, result: DatabaseResult) -> None:
        """A database was processed (its rows committed), skipped or failed."""
