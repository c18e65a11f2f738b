"""``mongo``: live node data from MongoDB, aggregated to cities and geocoded, as
``city_snapshots``.

The query: nodes seen in the last 24 hours with a selector version of at least ``MIN_SEL``, and
optionally only running ones (``running=true``), only those with a workload (``workload=true``)
and only one organisation (``org=NAME``). Filter values are checked and only ever used as
values, so a filter cannot carry a query operator. Needs ``pip install pymongo`` (the ``mongo``
extra); a ``client`` object with pymongo's interface can be given instead.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from rubix_integration.errors import ImportSourceError
from rubix_integration.importer.sources.base import Source
from rubix_integration.importer.sources.geo import CITY_COLUMNS, geocoder_from, snapshot_rows

__all__ = ["MongoNodes", "node_pipeline"]

_ORG = re.compile(r"^[\w][\w .,'&()\-]{0,99}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(config: Mapping[str, str], key: str) -> bool:
    value = str(config.get(key, "")).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImportSourceError(f"mongo: {key}={config.get(key)!r} is not true or false",
                            source="mongo", kind="config")


def node_pipeline(config: Mapping[str, str], now: datetime | None = None) -> list[dict[str, Any]]:
    """The aggregation: the node filter, then a count per (city, country)."""
    try:
        min_sel = int(str(config.get("MIN_SEL", "0")).split()[0] or 0)
    except (ValueError, IndexError):
        raise ImportSourceError(f"mongo: MIN_SEL={config.get('MIN_SEL')!r} is not a number",
                                source="mongo", kind="config") from None
    since = (now or datetime.now(timezone.utc)) - timedelta(hours=24)
    match: dict[str, Any] = {"last_seen": {"$gte": since}, "selector_version": {"$gte": min_sel}}
    if _flag(config, "running"):
        match["status"] = {"$eq": "running"}
    if _flag(config, "workload"):
        match["workload"] = {"$exists": True, "$nin": [None, ""]}
    org = config.get("org")
    if org:
        if not isinstance(org, str) or not _ORG.match(org):
            raise ImportSourceError(f"mongo: org={org!r} is not an organisation name (letters, "
                                    "digits, spaces and .,'&()- only)", source="mongo",
                                    kind="config")
        match["organization"] = {"$eq": org}  # $eq: the value is never read as an operator
    return [
        {"$match": match},
        {"$group": {"_id": {"city": "$location.city", "country": "$location.country"},
                    "node_count": {"$sum": 1}}},
        {"$sort": {"node_count": -1}},
    ]


class MongoNodes(Source):
    """Live nodes from MongoDB (``MONGO_URL``, ``MONGOUSER``, ``MONGOPASS``, ``DBNAME``;
    ``collection``, default ``nodes``), counted per city, geocoded."""

    name: ClassVar[str] = "mongo"
    table: ClassVar[str] = "city_snapshots"
    key: ClassVar[tuple[str, ...]] = ("city", "country")
    columns: ClassVar[Mapping[str, str] | None] = CITY_COLUMNS
    settings: ClassVar[tuple[str, ...]] = (
        "MONGO_URL", "MONGOUSER", "MONGOPASS", "DBNAME", "MIN_SEL", "collection", "running",
        "workload", "org", "NOMINATIM_URL", "geocode_cache", "timeout", "backoff")
    secrets: ClassVar[tuple[str, ...]] = ("MONGOPASS", "MONGO_URL")
    snapshot: ClassVar[bool] = True

    def __init__(self, config: Mapping[str, str] | None = None, *, client: Any = None) -> None:
        super().__init__(config)
        self.pipeline = node_pipeline(self.config)  # a bad filter fails before connecting
        self._client = client
        self.geocoder = geocoder_from(self.config)
        self.nodes = 0

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        url = self.config.get("MONGO_URL")
        if not url or not self.config.get("DBNAME"):
            raise ImportSourceError("mongo: set MONGO_URL and DBNAME (environment, .env or "
                                    "[plugins.mongo])", source=self.name, kind="config")
        try:
            import pymongo
        except ImportError as exc:
            raise ImportError("the mongo source needs pymongo: pip install "
                              "'rubix-integration[mongo]'") from exc
        if "://" not in url:
            user = urllib.parse.quote_plus(self.config.get("MONGOUSER", ""))
            password = urllib.parse.quote_plus(self.config.get("MONGOPASS", ""))
            url = f"mongodb+srv://{user}:{password}@{url}"
        self._client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)
        return self._client

    def cities(self) -> list[dict[str, Any]]:
        """The node counts per city."""
        database = self.config.get("DBNAME", "nodes")
        collection = self._connect()[database][self.config.get("collection", "nodes")]
        try:
            groups = list(collection.aggregate(self.pipeline))
        except Exception as exc:  # the driver's errors, translated here
            raise ImportSourceError(f"mongo: the node query failed: {type(exc).__name__}",
                                    source=self.name, kind="service") from exc
        out = []
        for group in groups:
            where = group.get("_id") or {}
            self.nodes += int(group.get("node_count") or 0)
            out.append({"city": where.get("city"), "country": where.get("country"),
                        "node_count": group.get("node_count")})
        return out

    def rows(self) -> Iterator[Mapping[str, Any]]:
        """The cities with their node counts and coordinates."""
        yield from snapshot_rows(self.cities(), self.geocoder)

    def stats(self) -> dict[str, Any]:
        """Nodes processed, the cache hit rate and requests made."""
        return {"nodes": self.nodes, **self.geocoder.stats()}

    def close(self) -> None:
        """Close the driver's connections."""
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()
