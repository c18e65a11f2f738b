from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import (
    DuplicateBackendError,
    IPFSBackend,
    IPFSContext,
    IPFSDetection,
    Manager,
    PluginError,
    hookimpl,
)
from rubix_integration._plugins import DEFAULT_PLUGINS, Plugins


class _Named(IPFSBackend):
    name = "repo"

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        return IPFSDetection(True, "always")


class DuplicateRepo:
    @hookimpl
    def register_ipfs_backends(self) -> list[type[IPFSBackend]]:
        return [_Named]


def test_builtins_are_registered_through_the_hooks() -> None:
    plugins = Plugins(load_plugins=())
    names = [i.name for i in plugins.infos()]
    assert names == list(DEFAULT_PLUGINS)
    assert all(i.source == "built-in" and i.error is None for i in plugins.infos())
    assert set(plugins.ipfs_backends()) >= {"repo", "http", "cli", "local"}
    assert set(plugins.stores()) >= {"sqlite", "postgresql"}
    assert plugins.owner("ipfs", "http") == "rubix_integration.ipfs.http"


def test_ipfs_backends_are_ordered_by_priority() -> None:
    order = list(Plugins(load_plugins=()).ipfs_backends())
    assert order.index("repo") < order.index("http") < order.index("cli") < order.index("local")


def test_duplicate_backend_name_fails_fast_naming_both_plugins() -> None:
    plugins = Plugins(load_plugins=(), extra=[DuplicateRepo()])
    with pytest.raises(DuplicateBackendError) as info:
        plugins.ipfs_backends()
    message = str(info.value)
    assert "'repo'" in message
    assert "rubix_integration.ipfs.repo" in message
    assert "DuplicateRepo" in message
    assert info.value.role == "ipfs"


def _fake_distribution(root: Path, name: str, entry: str) -> None:
    info = root / f"{name}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[rubix_integration]\n{entry}\n")


def test_plugin_that_fails_to_import_is_reported_and_the_rest_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(tmp_path, "brokenplug", "broken = rubix_no_such_module_for_tests")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="'broken'.*failed to import"):
        plugins = Plugins(load_plugins=["broken"])
    failed = plugins.failures()
    assert [f.name for f in failed] == ["broken"]
    assert "ModuleNotFoundError" in (failed[0].error or "")
    assert failed[0].version == "0.3"
    assert "local" in plugins.ipfs_backends()


def test_entry_points_are_skipped_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(tmp_path, "brokenplug", "broken = rubix_no_such_module_for_tests")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugins = Plugins(load_plugins=())
    assert plugins.failures() == []
    assert "broken" not in sys.modules


def test_example_plugin_is_loaded_from_its_entry_point() -> None:
    pytest.importorskip("rubix_integration_cidfolder",
                        reason="pip install -e examples/rubix-integration-example-plugin")
    plugins = Plugins(load_plugins=None)
    info = {i.name: i for i in plugins.infos()}["cidfolder"]
    assert info.source == "entry point"
    assert info.version == "0.1.0"
    assert "rubix-integration-cidfolder" in info.origin
    assert "register_ipfs_backends" in info.hooks
    assert plugins.owner("ipfs", "cidfolder") == "cidfolder"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    @hookimpl
    def database_processed(self, manager: Manager, result: Mapping[str, Any]) -> None:
        self.events.append(result)


class Exploder:
    @hookimpl
    def database_processed(self, manager: Manager, result: Mapping[str, Any]) -> None:
        raise RuntimeError("boom")


def test_raising_event_plugin_is_reported_by_name_and_others_still_run() -> None:
    recorder = Recorder()
    manager = Manager(plugins=[Exploder(), recorder], load_plugins=())
    errors = manager.notify("database_processed", result={"db_path": "x"})
    assert recorder.events == [{"db_path": "x"}]
    assert len(errors) == 1
    assert isinstance(errors[0], PluginError)
    assert errors[0].plugin == "Exploder"
    assert "boom" in str(errors[0])


class BrokenRegistration:
    @hookimpl
    def register_stores(self) -> list[Any]:
        raise RuntimeError("cannot register")


def test_raising_registration_hook_is_reported_and_builtins_remain() -> None:
    plugins = Plugins(load_plugins=(), extra=[BrokenRegistration()])
    with pytest.warns(RuntimeWarning, match="BrokenRegistration.*register_stores"):
        stores = plugins.stores()
    assert "sqlite" in stores


class NotABackend:
    @hookimpl
    def register_ipfs_backends(self) -> list[Any]:
        return [dict]


def test_registration_of_a_non_backend_is_refused_with_the_plugin_name() -> None:
    plugins = Plugins(load_plugins=(), extra=[NotABackend()])
    with pytest.raises(PluginError) as info:
        plugins.ipfs_backends()
    assert info.value.plugin == "NotABackend"
