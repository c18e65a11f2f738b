"""Geocoding through Nominatim with a persistent cache, and the ``nominatim`` source.

:class:`Geocoder` asks ``{NOMINATIM_URL}/search`` (default the OpenStreetMap instance) at most once
a second, with this package's User-Agent, retrying 429 and 5xx with backoff; answers (found or
not) are kept in a JSON cache file so a city is asked once. The ``nominatim`` source geocodes the
cities of a JSON file (``cities=PATH``: objects with ``city``, ``country``, ``node_count``) into
``city_snapshots``; the ``mongo`` source uses the same geocoder for live node data.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from rubix_integration.errors import ImportSourceError
from rubix_integration.importer.sources._http import HTTPStatusError, JSONClient
from rubix_integration.importer.sources.base import Source

__all__ = ["CITY_COLUMNS", "CitySnapshots", "Geocoder", "snapshot_rows"]

DEFAULT_URL = "https://nominatim.openstreetmap.org"
#: Nominatim's usage policy: an absolute maximum of one request per second.
MIN_INTERVAL_S = 1.0

CITY_COLUMNS: dict[str, str] = {
    "city": "text", "country": "text", "node_count": "integer", "latitude": "real",
    "longitude": "real", "snapshot_at": "text",
}


class Geocoder:
    """City → (latitude, longitude), cached in ``cache_path``; counts requests and hits."""

    def __init__(self, *, base_url: str = DEFAULT_URL, cache_path: Path | None = None,
                 timeout: float = 10.0, backoff: float = 2.0, retries: int = 3) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_path = cache_path
        self.client = JSONClient("nominatim", timeout=timeout, retries=retries,
                                 backoff=backoff, min_interval=MIN_INTERVAL_S)
        self.cache: dict[str, list[float] | None] = self._load()
        self.hits = 0
        self.lookups = 0
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[float] | None]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged cache is rebuilt, not trusted
        return {str(k): v for k, v in data.items()
                if v is None or (isinstance(v, list) and len(v) == 2)} if isinstance(
                    data, dict) else {}

    def save(self) -> None:
        """Write the cache (atomically: a crash leaves the old one)."""
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.cache, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.cache_path)

    def lookup(self, city: str, country: str) -> tuple[float, float] | None:
        """The coordinates of ``city`` in ``country`` (``None`` when Nominatim knows none)."""
        key = f"{city.strip().lower()}|{country.strip().lower()}"
        self.lookups += 1
        if key in self.cache:
            self.hits += 1
            found = self.cache[key]
            return (found[0], found[1]) if found else None
        query = urllib.parse.urlencode({"city": city, "country": country, "format": "json",
                                        "limit": 1})
        with self._lock:  # one request at a time: the interval holds across threads
            try:
                answer = self.client.request("GET", f"{self.base_url}/search?{query}")
            except HTTPStatusError as exc:
                raise ImportSourceError(f"nominatim: {exc}", source="nominatim",
                                        kind="service") from None
        coords: list[float] | None = None
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):
            try:
                coords = [float(answer[0]["lat"]), float(answer[0]["lon"])]
            except (KeyError, TypeError, ValueError):
                coords = None
        elif not isinstance(answer, list):
            raise ImportSourceError("nominatim: the answer is not a list of places",
                                    source="nominatim", kind="service")
        self.cache[key] = coords
        return (coords[0], coords[1]) if coords else None

    def stats(self) -> dict[str, Any]:
        """Cache hit rate and requests made, as the dashboard's data collection scripts report."""
        rate = 100.0 * self.hits / self.lookups if self.lookups else 0.0
        return {"cache_hit_rate": f"{rate:.1f}%", "geocoding_requests": self.client.requests}


def geocoder_from(config: Mapping[str, str]) -> Geocoder:
    """A :class:`Geocoder` from a source's config (``NOMINATIM_URL``, ``geocode_cache``)."""
    cache = config.get("geocode_cache")
    if cache is None:
        from platformdirs import user_cache_dir

        cache = str(Path(user_cache_dir("rubix-integration")) / "city_geocode_cache.json")
    return Geocoder(base_url=config.get("NOMINATIM_URL") or DEFAULT_URL,
                    cache_path=Path(cache), timeout=float(config.get("timeout", 10)),
                    backoff=float(config.get("backoff", 2.0)))


def snapshot_rows(cities: Iterable[Mapping[str, Any]],
                  geocoder: Geocoder) -> Iterator[dict[str, Any]]:
    """``city_snapshots`` rows: each city with its node count and coordinates."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    try:
        for item in cities:
            city, country = str(item.get("city") or ""), str(item.get("country") or "")
            if not city:
                continue
            coords = geocoder.lookup(city, country)
            yield {"city": city, "country": country, "node_count": int(item.get("node_count")
                                                                       or 0),
                   "latitude": coords[0] if coords else None,
                   "longitude": coords[1] if coords else None, "snapshot_at": now}
    finally:
        geocoder.save()


class CitySnapshots(Source):
    """Cities (``cities=PATH``, a JSON list) geocoded into ``city_snapshots``."""

    name: ClassVar[str] = "nominatim"
    table: ClassVar[str] = "city_snapshots"
    key: ClassVar[tuple[str, ...]] = ("city", "country")
    columns: ClassVar[Mapping[str, str] | None] = CITY_COLUMNS
    settings: ClassVar[tuple[str, ...]] = ("cities", "NOMINATIM_URL", "geocode_cache",
                                           "timeout", "backoff")
    snapshot: ClassVar[bool] = True

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self.geocoder = geocoder_from(self.config)

    def rows(self) -> Iterator[Mapping[str, Any]]:
        """The cities of the ``cities`` file, geocoded."""
        path = self.config.get("cities")
        if not path:
            raise ImportSourceError("nominatim: give the cities to geocode: -o cities=FILE",
                                    source=self.name, kind="config")
        try:
            cities = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ImportSourceError(f"nominatim: cannot read {path}: {exc}",
                                    source=self.name, kind="config") from None
        if isinstance(cities, dict):
            cities = cities.get("data", [])
        yield from snapshot_rows([c for c in cities if isinstance(c, dict)], self.geocoder)

    def stats(self) -> dict[str, Any]:
        """Cache hit rate and requests made."""
        return self.geocoder.stats()
