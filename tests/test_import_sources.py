"""The built-in live sources against local servers (Strapi, Nominatim) and a fake MongoDB
driver, on every store."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import ImportSourceError, Manager
from rubix_integration.importer import import_source
from rubix_integration.importer.sources.geo import Geocoder
from rubix_integration.importer.sources.mongo import MongoNodes, node_pipeline
from tests.fixtures.import_data import run_cli, target_rows
from tests.fixtures.import_services import GPU_CLASSES, FakeMongoClient, FakeService


def _strapi_env(tmp_path: Path, url: str) -> Path:
    env = tmp_path / ".env"
    env.write_text(f"STRAPIURL={url}/api\nSTRAPIID=reader\nSTRAPIPW='s3cret-pw'  # cms\n")
    return env


def test_strapi_gpu_classes_with_reauth_paging_and_429(tmp_path: Path, store_url: str,
                                                       strapi_server: FakeService) -> None:
    env = _strapi_env(tmp_path, strapi_server.url)
    strapi_server.faults.expire_after = 2  # the token dies after two pages
    strapi_server.faults.status = [429]  # the first request is refused once
    with Manager(store_url=store_url) as m:
        report = m.import_source("strapi", env_file=env,
                                 options={"page_size": "2", "backoff": "0.01"})
    assert report.ok and report.tables[0].new == 5
    assert report.source_stats["logins"] == 2 and report.source_stats["gpu_classes"] == 5
    rows = target_rows(store_url, "gpu_classes")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == sorted(
        (g["uuid"], g["name"], float(str(g["vram_gb"])), g["compute_capability"])
        for g in GPU_CLASSES)
    pages = [p for p, _, _ in strapi_server.requests if p.startswith("/api/gpu-classes")]
    # page 3 met the expired token (401), then was asked again after logging in anew
    assert len([p for p in pages if "pagination%5Bpage%5D=3" in p]) == 2
    logins = [p for p, _, _ in strapi_server.requests if p == "/api/auth/local"]
    assert len(logins) == 3  # refused once (429) and retried; again when the token expired
    assert all(h.get("User-Agent", "").startswith("rubix-integration/")
               for _, h, _ in strapi_server.requests)


def test_strapi_cli_never_prints_credentials(tmp_path: Path, store_url: str,
                                             strapi_server: FakeService) -> None:
    env = _strapi_env(tmp_path, strapi_server.url)
    out = run_cli("import", "source", "strapi", "--env-file", str(env), "--store", store_url)
    assert out.returncode == 0, out.stderr
    assert "gpu_classes: imported 5 rows" in out.stdout
    assert "s3cret-pw" not in out.stdout + out.stderr
    strapi_server.faults.malformed = True
    bad = run_cli("import", "source", "strapi", "--env-file", str(env), "--store", store_url)
    assert bad.returncode == 1
    assert "answered malformed JSON" in bad.stderr and "s3cret-pw" not in bad.stderr


def test_strapi_faults(tmp_path: Path, strapi_server: FakeService) -> None:
    from rubix_integration.importer.sources.strapi import StrapiGpuClasses

    config = {"STRAPIURL": f"{strapi_server.url}/api", "STRAPIID": "reader",
              "STRAPIPW": "wrong", "backoff": "0.01", "timeout": "0.5"}
    with pytest.raises(ImportSourceError, match="login refused") as caught:
        list(StrapiGpuClasses(config).rows())
    assert "wrong" not in str(caught.value)
    config["STRAPIPW"] = "s3cret-pw"
    strapi_server.faults.slow_s = 1.5  # longer than the timeout: retried
    source = StrapiGpuClasses(config)
    assert len(list(source.rows())) == 5
    strapi_server.faults.status = [503, 503, 503, 503]
    with pytest.raises(ImportSourceError, match="HTTP 503 after 4 attempts"):
        list(StrapiGpuClasses(config).rows())
    with pytest.raises(ImportSourceError, match="set STRAPIURL"):
        StrapiGpuClasses({})
    assert "s3cret" not in repr(source)


def test_nominatim_cache_rate_limit_and_retry(tmp_path: Path, store_url: str,
                                              nominatim_server: FakeService) -> None:
    cache = tmp_path / "cache" / "city_geocode_cache.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"osaka|jp": [34.69, 135.5]}))
    cities = tmp_path / "cities.json"
    cities.write_text(json.dumps([{"city": "Berlin", "country": "DE", "node_count": 40},
                                  {"city": "Lyon", "country": "FR", "node_count": 3},
                                  {"city": "Osaka", "country": "JP", "node_count": 7},
                                  {"city": "Atlantis", "country": "XX", "node_count": 1}]))
    nominatim_server.faults.status = [429, 503]
    options = {"cities": str(cities), "NOMINATIM_URL": nominatim_server.url,
               "geocode_cache": str(cache), "backoff": "0.05"}
    with Manager(store_url=store_url) as m:
        report = m.import_source("nominatim", options=options)
        assert report.ok and report.tables[0].new == 4
        assert report.source_stats == {"cache_hit_rate": "25.0%", "geocoding_requests": 5}
        times = [t for p, _, t in nominatim_server.requests]
        # at most one request a second, the retries of the refused ones included
        assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))
        agents = {h.get("User-Agent", "") for _, h, _ in nominatim_server.requests}
        assert all(a.startswith("rubix-integration/") for a in agents)
        rows = {r[0]: r for r in target_rows(store_url, "city_snapshots")}
        assert rows["Berlin"][2:5] == (40, 52.5170365, 13.3888599)
        assert rows["Atlantis"][3] is None and rows["Osaka"][3] == 34.69
        saved = json.loads(cache.read_text())
        assert saved["berlin|de"] == [52.5170365, 13.3888599] and saved["atlantis|xx"] is None
        # a second snapshot replaces the first, from the cache alone
        cities.write_text(json.dumps([{"city": "Lyon", "country": "FR", "node_count": 5}]))
        again = m.import_source("nominatim", options=options)
        assert again.source_stats == {"cache_hit_rate": "100.0%", "geocoding_requests": 0}
    assert [r[:3] for r in target_rows(store_url, "city_snapshots")] == [("Lyon", "FR", 5)]


def test_nominatim_malformed_answer(tmp_path: Path, nominatim_server: FakeService) -> None:
    nominatim_server.faults.malformed = True
    geocoder = Geocoder(base_url=nominatim_server.url, cache_path=tmp_path / "c.json",
                        backoff=0.01)
    with pytest.raises(ImportSourceError, match="malformed JSON"):
        geocoder.lookup("Berlin", "DE")


NOW = datetime.now(timezone.utc)


def _nodes() -> list[dict[str, Any]]:
    def node(city: str, country: str, *, hours: float = 1, sel: int = 2_004_100,
             status: str = "running", workload: str | None = "wl", org: str = "Salad"
             ) -> dict[str, Any]:
        return {"last_seen": NOW - timedelta(hours=hours), "selector_version": sel,
                "status": status, "workload": workload, "organization": org,
                "location": {"city": city, "country": country}}
    return [node("Berlin", "DE"), node("Berlin", "DE", status="idle"),
            node("Berlin", "DE", workload=None), node("Lyon", "FR", org="Other & Co"),
            node("Lyon", "FR", hours=30), node("Osaka", "JP", sel=2_003_999),
            node("Osaka", "JP")]


@pytest.mark.parametrize(("options", "expected"), [
    ({}, {("Berlin", "DE"): 3, ("Lyon", "FR"): 1, ("Osaka", "JP"): 1}),
    ({"running": "true"}, {("Berlin", "DE"): 2, ("Lyon", "FR"): 1, ("Osaka", "JP"): 1}),
    ({"running": "true", "workload": "yes"}, {("Berlin", "DE"): 1, ("Lyon", "FR"): 1,
                                             ("Osaka", "JP"): 1}),
    ({"org": "Other & Co"}, {("Lyon", "FR"): 1}),
])
def test_mongo_node_query_and_aggregation(options: dict[str, str],
                                          expected: dict[tuple[str, str], int],
                                          tmp_path: Path) -> None:
    client = FakeMongoClient(_nodes())
    source = MongoNodes({"MIN_SEL": "2004000 minimum node selector version", "DBNAME": "salad",
                         "geocode_cache": str(tmp_path / "c.json"), **options}, client=client)
    found = {(c["city"], c["country"]): c["node_count"] for c in source.cities()}
    assert found == expected
    assert client.names == [("salad", "nodes")]


@pytest.mark.parametrize("org", ['{"$ne": null}', "$where", "a\nb", "x" * 101, ""])
def test_mongo_filters_cannot_inject_operators(org: str) -> None:
    if not org:
        assert node_pipeline({"org": org})[0]["$match"].get("organization") is None
        return
    with pytest.raises(ImportSourceError, match="not an organisation name"):
        node_pipeline({"org": org})
    with pytest.raises(ImportSourceError, match="is not true or false"):
        node_pipeline({"running": "$exists"})
    with pytest.raises(ImportSourceError, match="MIN_SEL"):
        node_pipeline({"MIN_SEL": "{'$gt': 0}"})


def test_mongo_and_nominatim_city_snapshot(tmp_path: Path, store_url: str,
                                           nominatim_server: FakeService) -> None:
    client = FakeMongoClient(_nodes())
    source = MongoNodes({"MIN_SEL": "2004000", "DBNAME": "salad",
                         "NOMINATIM_URL": nominatim_server.url,
                         "geocode_cache": str(tmp_path / "cache.json")}, client=client)
    with Manager(store_url=store_url) as m:
        report = import_source(m.store, source)
        assert report.ok and report.tables[0].cleared
    assert report.source_stats["nodes"] == 5
    assert report.source_stats["geocoding_requests"] == 3
    assert client.closed
    rows = {r[0]: r for r in target_rows(store_url, "city_snapshots")}
    assert rows["Berlin"][2:5] == (3, 52.5170365, 13.3888599)
    with Manager(store_url=store_url) as m, pytest.raises(ImportSourceError,
                                                          match="set MONGO_URL and DBNAME"):
        m.import_source("mongo", env_file=tmp_path / "none.env")


def test_builtin_sources_are_registered(tmp_path: Path) -> None:
    from rubix_integration.importer import Source

    with Manager(store_url=f"sqlite:///{tmp_path / 's.db'}") as m:
        found = m.backends("source")
    assert {"placeholder-transactions", "strapi", "nominatim", "mongo"} <= set(found)
    assert all(issubclass(found[n], Source) for n in ("strapi", "nominatim", "mongo"))
    help_text = run_cli("import", "--help").stdout
    assert all(word in help_text for word in ("sqlite", "json", "source"))
