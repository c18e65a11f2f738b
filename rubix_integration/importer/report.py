"""What an import did, per table and in sum; progress events while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["ImportReport", "Progress", "ProgressCallback", "TableReport"]

#: ``imported``, ``unchanged`` (skipped: nothing changed since the last import), ``failed`` (rolled
#: back), ``skipped`` (depends on a failed table) or ``planned`` (dry run).
TableStatus = Literal["imported", "unchanged", "failed", "skipped", "planned"]


@dataclass
class TableReport:
    """One target table: rows read and how they compared with the target."""

    table: str
    status: TableStatus = "imported"
    total: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    created: bool = False
    cleared: bool = False
    ddl: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed_keys: list[Any] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def imported(self) -> int:
        """Rows written (new plus changed)."""
        return self.new + self.changed

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        out = asdict(self)
        out["imported"] = self.imported
        out["failed_keys"] = [list(k) if isinstance(k, tuple) else k for k in self.failed_keys]
        return out


@dataclass
class ImportReport:
    """A whole import: the tables in load order, cycles found, what a source reports."""

    source: str
    store: str
    dry_run: bool
    mode: str
    tables: list[TableReport] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    self_references: list[str] = field(default_factory=list)
    source_stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No table failed or was skipped."""
        return all(t.status not in ("failed", "skipped") for t in self.tables)

    def table(self, name: str) -> TableReport:
        """The report of table ``name``."""
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON, with totals."""
        return {
            "source": self.source,
            "store": self.store,
            "dry_run": self.dry_run,
            "mode": self.mode,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "cycles": self.cycles,
            "self_references": self.self_references,
            "source_stats": self.source_stats,
            "totals": {k: sum(getattr(t, k) for t in self.tables)
                       for k in ("total", "new", "changed", "unchanged", "imported")},
            "tables": [t.as_dict() for t in self.tables],
        }


@dataclass(frozen=True)
class Progress:
    """A step of one table: ``start`` (``total`` known), ``rows`` (``done`` so far), ``end``."""

    table: str
    phase: Literal["start", "rows", "end"]
    total: int
    done: int
    report: TableReport | None = None


ProgressCallback = Callable[[Progress], None]
