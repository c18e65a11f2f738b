"""``placeholder-transactions``: synthetic transactions for trying a dashboard without real data.

103 transactions by default over a 31-day window ending at ``end`` (default: today, midnight
UTC), paid by 10 requesters to 300 providers, on 6 GPU types; the same ``seed`` gives the same
rows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from rubix_integration.errors import ImportSourceError
from rubix_integration.importer.sources.base import Source

__all__ = ["GPU_TYPES", "PlaceholderTransactions"]

GPU_TYPES: tuple[str, ...] = ("RTX 4090", "RTX 4080", "RTX 3090", "RTX 3080", "A100 80GB",
                              "L40S")


class PlaceholderTransactions(Source):
    """Deterministic fake transactions (``seed``, ``count``, ``days``, ``providers``,
    ``requesters``, ``end`` as ISO date)."""

    name: ClassVar[str] = "placeholder-transactions"
    table: ClassVar[str] = "transactions"
    key: ClassVar[tuple[str, ...]] = ("tx_hash",)
    columns: ClassVar[Mapping[str, str] | None] = {
        "tx_hash": "text", "provider": "text", "requester": "text", "gpu": "text",
        "started_at": "text", "duration_s": "integer", "fee": "real",
    }
    settings: ClassVar[tuple[str, ...]] = ("seed", "count", "days", "providers", "requesters",
                                           "end")

    def _int(self, key: str, default: int) -> int:
        value = self.config.get(key)
        if value in (None, ""):
            return default
        try:
            number = int(str(value))
        except ValueError:
            raise ImportSourceError(f"placeholder-transactions: {key}={value!r} is not a "
                                    "whole number", source=self.name, kind="config") from None
        if number < 1:
            raise ImportSourceError(f"placeholder-transactions: {key} must be at least 1",
                                    source=self.name, kind="config")
        return number

    def rows(self) -> Iterator[Mapping[str, Any]]:
        """Yield the transactions."""
        rng = random.Random(self._int("seed", 42))
        count = self._int("count", 103)
        days = self._int("days", 31)
        end_text = self.config.get("end")
        end = (datetime.fromisoformat(end_text).replace(tzinfo=timezone.utc) if end_text else
               datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0))

        def address() -> str:
            return "0x" + f"{rng.getrandbits(160):040x}"

        providers = [address() for _ in range(self._int("providers", 300))]
        requesters = [address() for _ in range(self._int("requesters", 10))]
        window = days * 86400
        for n in range(count):
            started = end - timedelta(seconds=rng.randrange(window))
            provider = rng.choice(providers)
            tx = hashlib.sha256(f"{n}:{provider}:{started.isoformat()}".encode()).hexdigest()
            yield {
                "tx_hash": "0x" + tx,
                "provider": provider,
                "requester": rng.choice(requesters),
                "gpu": rng.choice(GPU_TYPES),
                "started_at": started.isoformat(),
                "duration_s": rng.randint(60, 6 * 3600),
                "fee": round(rng.uniform(0.01, 25.0), 6),
            }
