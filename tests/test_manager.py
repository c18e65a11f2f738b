from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import rubix_integration
from rubix_integration import (
    ConfigError,
    IPFSDetection,
    Manager,
    StoreUnavailableError,
    UnknownStoreError,
    hookimpl,
)


def test_import_is_light() -> None:
    code = ("import sys, rubix_integration; "
            "print(sorted(m for m in ('sqlalchemy', 'sqlmodel', 'duckdb', 'ipfshttpclient', "
            "'psycopg', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_manager_imports_no_database_library_until_the_store_is_used(tmp_path: Path) -> None:
    code = ("import sys\nfrom rubix_integration import Manager\n"
            f"m = Manager(data_dir={str(tmp_path)!r}, ipfs_mode='local')\n"
            "m.plugins.infos()\nm.choose_ipfs()\n"
            "print(sorted(n for n in ('sqlalchemy', 'sqlmodel', 'duckdb') if n in sys.modules))\n"
            "m.store\n"
            "print(sorted(n for n in ('sqlalchemy', 'sqlmodel', 'duckdb') if n in sys.modules))\n"
            "m.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.splitlines() == ["[]", "['sqlalchemy', 'sqlmodel']"]


def test_construction_does_no_work(tmp_path: Path) -> None:
    manager = Manager(data_dir=tmp_path / "never", ipfs_mode="no such mode!")
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError):
        _ = manager.settings


def test_disabled_integration_uses_only_the_embedded_store(tmp_path: Path) -> None:
    with Manager(enabled="0", data_dir=tmp_path, ipfs_path=tmp_path / "none") as manager:
        report = manager.status()
    assert report.ipfs_mode == "local"
    chosen = next(c for c in report.ipfs if c.chosen)
    assert "RUBIX_INTEGRATION_ENABLED=0" in chosen.reason
    others = [c for c in report.ipfs if not c.chosen]
    assert others and all("not tried" in c.reason for c in others)
    assert report.ipfs_available is False


def test_auto_with_nothing_around_falls_back_and_says_why(tmp_path: Path) -> None:
    with Manager(data_dir=tmp_path, ipfs_path=tmp_path / "no-repo",
                 ipfs_bin=str(tmp_path / "nobin"), load_plugins=()) as manager:
        report = manager.status()
        assert manager.is_ipfs_available() is False
    assert report.ipfs_mode == "local"
    reasons = {c.name: c.reason for c in report.ipfs}
    assert "no other backend can serve" in reasons["local"]
    for name in ("repo", "http", "cli"):
        assert reasons[name], name


def test_required_integration_warns_loudly_when_missing(tmp_path: Path) -> None:
    manager = Manager(enabled="1", data_dir=tmp_path, ipfs_path=tmp_path / "no-repo",
                      ipfs_bin=str(tmp_path / "nobin"))
    with pytest.warns(RuntimeWarning, match="RUBIX_INTEGRATION_ENABLED=1"):
        report = manager.status()
    assert any("RUBIX_INTEGRATION_ENABLED=1" in w for w in report.warnings)


def test_unknown_ipfs_mode_names_variable_and_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUBIX_IPFS", "gateway")
    with pytest.raises(ConfigError) as info:
        Manager(data_dir=tmp_path).choose_ipfs()
    assert "RUBIX_IPFS" in str(info.value)
    assert info.value.allowed is not None and "local" in info.value.allowed


def test_explicit_mode_that_cannot_serve_is_kept_and_reported(tmp_path: Path) -> None:
    manager = Manager(ipfs_mode="http", ipfs_api="/ip4/127.0.0.1/tcp/1", data_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="unavailable"):
        choice = manager.choose_ipfs()
    assert choice.name == "http"
    assert "unavailable" in choice.reason


class PreferCLI:
    @hookimpl
    def choose_ipfs_backend(self, settings: object, ipfs_path: Path | None,
                            candidates: Mapping[str, IPFSDetection]) -> str | None:
        return "local" if "local" in candidates else None


def test_choose_hook_of_a_plugin_wins(tmp_path: Path) -> None:
    manager = Manager(plugins=[PreferCLI()], data_dir=tmp_path, ipfs_path=tmp_path)
    assert manager.choose_ipfs().name == "local"


def test_unknown_store_scheme(tmp_path: Path) -> None:
    manager = Manager(store_url="mongodb://h/db", data_dir=tmp_path)
    with pytest.raises(UnknownStoreError) as info:
        _ = manager.store
    assert "mongodb" in str(info.value)
    assert "sqlite" in str(info.value) and "postgresql" in str(info.value)
    with pytest.raises(UnknownStoreError, match="mongodb"):
        manager.status()


def test_unreachable_postgresql_is_reported_not_raised_by_status(tmp_path: Path) -> None:
    url = "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nothing"
    manager = Manager(store_url=url, data_dir=tmp_path)
    report = manager.status()
    chosen = next(c for c in report.stores if c.chosen)
    assert chosen.name == "postgresql" and chosen.available is False
    assert "hunter2" not in report.to_json()
    with pytest.raises(StoreUnavailableError) as info:
        _ = manager.store
    assert "127.0.0.1:1" in str(info.value) and "hunter2" not in str(info.value)


def test_unwritable_data_dir_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    manager = Manager(data_dir=blocker / "data")
    with pytest.raises(StoreUnavailableError) as info:
        _ = manager.store
    assert str(blocker) in str(info.value)


def test_store_is_opened_with_schema(store_url: str, tmp_path: Path) -> None:
    with Manager(store_url=store_url, data_dir=tmp_path) as manager:
        store = manager.store
        assert store is manager.store
        report = manager.status()
    chosen = next(c for c in report.stores if c.chosen)
    assert chosen.available, chosen.reason
    assert chosen.name == store.name


def test_status_is_json_and_text(tmp_path: Path) -> None:
    report = rubix_integration.status(data_dir=tmp_path, enabled="0")
    data = json.loads(report.to_json())
    assert data["version"] == rubix_integration.__version__
    assert data["ipfs_mode"] == "local"
    assert data["store"] == "sqlite"
    assert {p["name"] for p in data["plugins"]} >= {"rubix_integration.ipfs.local"}
    assert "IPFS access:" in str(report) and "stores:" in str(report)


def test_example_plugin_backend_serves_and_verifies(tmp_path: Path) -> None:
    pytest.importorskip("rubix_integration_cidfolder",
                        reason="pip install -e examples/rubix-integration-example-plugin")
    from rubix_integration.codecs import file_cid

    folder = tmp_path / "repo" / "cid-cache"
    folder.mkdir(parents=True)
    payload = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
    cid = str(file_cid(payload))
    (folder / cid).write_bytes(payload)
    bad = str(file_cid(b"other"))
    (folder / bad).write_bytes(b"tampered")
    with Manager(load_plugins=["cidfolder"], ipfs_path=tmp_path / "repo", data_dir=tmp_path,
                 ipfs_bin=str(tmp_path / "nobin")) as manager:
        choice = manager.choose_ipfs()
        assert choice.name == "cidfolder", choice
        assert manager.cat(cid) == payload
        with pytest.raises(rubix_integration.CorruptBlockError):
            manager.cat(bad)
        with pytest.raises(rubix_integration.ContentNotFoundError):
            manager.cat(str(file_cid(b"absent")))


def _readme_python_snippet() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_python_snippet_runs_on_the_demo_sample(tmp_path: Path) -> None:
    from rubix_integration.tokens.demo import make_sample

    data_dir = tmp_path / "data"
    # where `rubix-integration demo` (scripts/demo.sh) puts its sample: demo/ in the data dir
    sample = make_sample(data_dir / "demo", nodes=1, tokens_per_node=2, broken=False)
    env = {**os.environ, "RUBIX_DATA_DIR": str(data_dir),
           "RUBIX_IPFS_PATH": str(tmp_path / "no-repo")}
    out = subprocess.run([sys.executable, "-c", _readme_python_snippet()], env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Sync summary" in out.stdout
    assert f"records:             {sample.tokens}" in out.stdout
    with Manager(data_dir=data_dir) as manager:
        assert len(manager.query_logs({"type": "audit"})) == 1
        assert manager.get_task_status("t1") is not None


def test_the_ipfs_factory_pickles_without_what_it_built(tmp_path: Path) -> None:
    """Token-sync worker processes get the factory, not a Manager, and build their own backends."""
    import pickle

    from rubix_integration.ipfs.local import LocalBackend

    with Manager(data_dir=tmp_path, ipfs_mode="local", load_plugins=()) as manager:
        built = manager.ipfs()
        assert isinstance(built, LocalBackend)
        assert manager.ipfs() is built  # built once
        copy = pickle.loads(pickle.dumps(manager.ipfs_factory))
        rebuilt = copy("local", manager.settings.ipfs_path)
        assert isinstance(rebuilt, LocalBackend) and rebuilt is not built
        assert copy("local", manager.settings.ipfs_path) is rebuilt
        copy.close()
