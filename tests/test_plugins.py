from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

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
from rubix_integration.hookspecs import Host


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


# --- backends by role ----------------------------------------------------------------------------


class Gadget:
    """The base class of a role a test plugin declares."""

    name = ""


class Sprocket(Gadget):
    name = "sprocket"


class OtherSprocket(Gadget):
    name = "sprocket"


class GadgetRole:
    @hookimpl
    def register_roles(self) -> dict[str, type]:
        return {"gadget": Gadget}

    @hookimpl
    def register_backends(self) -> dict[str, list[type]]:
        return {"gadget": [Sprocket]}


class MoreGadgets:
    @hookimpl
    def register_backends(self) -> dict[str, list[type]]:
        return {"gadget": [OtherSprocket]}


def test_builtin_roles_and_their_base_classes() -> None:
    roles = Plugins(load_plugins=()).roles()
    assert list(roles)[:4] == ["ipfs", "store", "pin_state", "source"]
    assert roles["ipfs"] is IPFSBackend and roles["store"].__name__ == "Store"
    assert set(Plugins(load_plugins=()).backends("pin_state")) == {"sqlite", "postgresql"}


def test_declared_role_gets_its_backends_and_they_show_in_plugin_infos() -> None:
    plugins = Plugins(load_plugins=(), extra=[GadgetRole()])
    assert plugins.backends("gadget") == {"sprocket": Sprocket}
    assert plugins.owner("gadget", "sprocket") == "GadgetRole"
    info = {i.name: i for i in plugins.infos()}
    assert info["GadgetRole"].roles == ("gadget",)
    assert info["GadgetRole"].as_dict()["backends"] == {"gadget": ["sprocket"]}
    assert info["rubix_integration.ipfs.http"].as_dict()["backends"] == {"ipfs": ["http"]}
    assert info["rubix_integration.stores.sqlite"].as_dict()["roles"] == []


def test_duplicate_name_in_a_declared_role_names_both_plugins() -> None:
    plugins = Plugins(load_plugins=(), extra=[GadgetRole(), MoreGadgets()])
    with pytest.raises(DuplicateBackendError) as info:
        plugins.backends("gadget")
    assert "'GadgetRole'" in str(info.value) and "'MoreGadgets'" in str(info.value)
    assert info.value.role == "gadget" and info.value.plugin == "MoreGadgets"


def test_backend_for_a_role_nobody_declares_is_refused() -> None:
    plugins = Plugins(load_plugins=(), extra=[MoreGadgets()])
    with pytest.raises(PluginError, match="role 'gadget', which no plugin declares") as info:
        plugins.backends("ipfs")
    assert info.value.plugin == "MoreGadgets"


def test_unknown_role_lists_the_known_ones() -> None:
    with pytest.raises(PluginError, match="no backend role 'gizmo'; known roles: ipfs, store"):
        Plugins(load_plugins=()).backends("gizmo")


class GadgetRoleAgain:
    @hookimpl
    def register_roles(self) -> dict[str, type]:
        return {"gadget": object}


class StoreRoleAgain:
    @hookimpl
    def register_roles(self) -> dict[str, type]:
        return {"store": object}


def test_role_declared_twice_names_both_plugins() -> None:
    with pytest.raises(PluginError, match="'gadget' is declared twice: by 'GadgetRole' and by "
                                          "plugin 'GadgetRoleAgain'"):
        Plugins(load_plugins=(), extra=[GadgetRole(), GadgetRoleAgain()]).roles()
    with pytest.raises(PluginError, match="'store' is declared twice: by 'built-in'"):
        Plugins(load_plugins=(), extra=[StoreRoleAgain()]).roles()


class NotAGadget:
    name = "loose"


class LooseGadget:
    @hookimpl
    def register_backends(self) -> dict[str, list[type]]:
        return {"gadget": [NotAGadget]}


def test_class_outside_the_role_base_is_refused() -> None:
    plugins = Plugins(load_plugins=(), extra=[GadgetRole(), LooseGadget()])
    with pytest.raises(PluginError, match="not a named subclass of Gadget"):
        plugins.backends("gadget")


class RepoThroughGenericHook:
    @hookimpl
    def register_backends(self) -> dict[str, list[type]]:
        return {"ipfs": [_Named]}


def test_generic_and_role_hooks_feed_one_registry() -> None:
    """``register_backends({"ipfs": ...})`` meets the built-in ``register_ipfs_backends``."""
    plugins = Plugins(load_plugins=(), extra=[RepoThroughGenericHook()])
    with pytest.raises(DuplicateBackendError, match=r"rubix_integration\.ipfs\.repo"):
        plugins.ipfs_backends()


class CsvSource:
    name = "csv"


class Sources:
    @hookimpl
    def register_sources(self) -> list[type]:
        return [CsvSource]


def test_sources_register_for_the_source_role() -> None:
    plugins = Plugins(load_plugins=(), extra=[Sources()])
    builtin = set(Plugins(load_plugins=()).backends("source"))
    assert "csv" not in builtin
    assert plugins.backends("source")["csv"] is CsvSource
    assert set(plugins.backends("source")) == builtin | {"csv"}
    assert plugins.owner("source", "csv") == "Sources"


class WidgetRole:
    @hookimpl
    def register_roles(self) -> dict[str, type]:
        return {"widget": object}


def test_manager_hands_out_backends_by_role(tmp_path: Path) -> None:
    manager = Manager(plugins=[GadgetRole(), Sources(), WidgetRole()], load_plugins=(),
                      data_dir=tmp_path, enabled="0")
    assert manager.backends("gadget") == {"sprocket": Sprocket}
    assert manager.backend("gadget") is Sprocket  # the only one of its role
    assert manager.backend("source", "csv") is CsvSource
    assert manager.backend("store").name == "sqlite"  # what the store URL selects
    assert manager.backend("ipfs").name == "local"  # what choose_ipfs picked
    from rubix_integration import ConfigError

    with pytest.raises(ConfigError, match="no gadget backend 'cog' to use; registered: sprocket"):
        manager.backend("gadget", "cog")
    assert manager.backend("pin_state").__name__ == "SQLitePinState"  # named like the store
    with pytest.raises(ConfigError, match="no widget backend is registered"):
        manager.backend("widget")
    with pytest.raises(ConfigError, match=r"several source backends are registered \(.*csv"):
        manager.backend("source")


# --- tables, lifecycle, routes -------------------------------------------------------------------


@pytest.fixture
def plugin_table() -> Iterator[sa.Table]:
    """A table of a test plugin in the shared metadata, taken out again afterwards."""
    table = sa.Table("test_plugin_notes", SQLModel.metadata,
                     sa.Column("note_id", sa.String(40), primary_key=True),
                     sa.Column("text", sa.Text, nullable=False))
    yield table
    SQLModel.metadata.remove(table)


class Lifecycle:
    def __init__(self, table: sa.Table | None = None) -> None:
        self.table = table
        self.events: list[tuple[str, bool]] = []

    @hookimpl
    def register_tables(self) -> list[sa.Table]:
        return [self.table] if self.table is not None else []

    @hookimpl
    def startup(self, manager: Host) -> None:
        # the store is usable from startup: the plugin's own table exists already
        assert self.table is not None
        with manager.store.engine.begin() as conn:
            conn.execute(self.table.insert().values(note_id=f"n{len(self.events)}", text="up"))
        self.events.append(("startup", True))

    @hookimpl
    def shutdown(self, manager: Host) -> None:
        assert self.table is not None
        with manager.store.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar()
        self.events.append(("shutdown", rows is not None and rows > 0))


def test_plugin_tables_are_created_and_startup_shutdown_pair_with_the_store(
    store_url: str, plugin_table: sa.Table
) -> None:
    plugin = Lifecycle(plugin_table)
    manager = Manager(plugins=[plugin], load_plugins=(), store_url=store_url, enabled="0")
    assert plugin.events == []  # nothing happens before the store is used
    assert manager.store is manager.store
    assert plugin.events == [("startup", True)]
    assert plugin_table.name in sa.inspect(manager.store.engine).get_table_names()
    manager.close()
    assert plugin.events == [("startup", True), ("shutdown", True)]
    manager.close()  # nothing opened: no second shutdown
    assert manager.store is not None
    manager.close()
    assert [e for e, _ in plugin.events] == ["startup", "shutdown", "startup", "shutdown"]


def test_builtin_capabilities_register_their_tables_through_the_hook() -> None:
    plugins = Plugins(load_plugins=())
    owners = [i.name for i in plugins.infos() if "register_tables" in i.hooks]
    assert owners == ["rubix_integration._builtin_tables"]
    names = {t.name for t in plugins.tables()}
    assert {"tokenrecords", "processeddatabases", "workflow_tasks"} <= names


class ForeignTable:
    @hookimpl
    def register_tables(self) -> list[sa.Table]:
        return [sa.Table("elsewhere", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True))]


def test_table_outside_the_store_metadata_is_refused() -> None:
    with pytest.raises(PluginError, match=r"'elsewhere' is not in SQLModel\.metadata") as info:
        Plugins(load_plugins=(), extra=[ForeignTable()]).tables()
    assert info.value.plugin == "ForeignTable"


@dataclass(frozen=True)
class FakeRoute:
    """The shape of a Starlette ``Route``: what the hook is documented to return."""

    path: str
    endpoint: Callable[..., Any]


class Routes:
    @hookimpl
    def register_routes(self, manager: Host) -> list[FakeRoute]:
        return [FakeRoute("/p2p/ping", lambda request: manager.settings.enabled)]


def test_routes_are_collected_with_the_host(tmp_path: Path) -> None:
    manager = Manager(plugins=[Routes()], load_plugins=(), data_dir=tmp_path, enabled="0")
    routes = manager.plugins.routes(manager)
    ours = [r for r in routes if isinstance(r, FakeRoute)]
    assert [r.path for r in ours] == ["/p2p/ping"]
    assert ours[0].endpoint(None) == "0"


def test_hook_specs_type_against_the_host_protocol_not_the_manager() -> None:
    import ast

    import rubix_integration._host
    import rubix_integration.hookspecs

    for module in (rubix_integration.hookspecs, rubix_integration._host):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "rubix_integration._manager" not in imported, module.__name__
    spec = rubix_integration.hookspecs.token_synced
    assert spec.__annotations__["manager"] == "Host"


def _modules_after(code: str, *names: str) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    import subprocess

    script = f"import sys\n{code}\nprint(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    return [line for line in out.stdout.splitlines() if line.startswith("[")]


def test_builtin_backends_are_imported_on_first_use_of_their_role() -> None:
    backend_modules = ("sqlalchemy", "sqlmodel", "rubix_integration.stores.sqlite",
                       "rubix_integration.stores.base", "rubix_integration.ipfs.repo")
    built = ("from rubix_integration._plugins import Plugins\n"
             "p = Plugins(load_plugins=())\np.infos()\n")
    assert _modules_after(built, *backend_modules) == ["[]"]
    assert _modules_after(built + "p.stores()", *backend_modules) == [
        "['rubix_integration.stores.base', 'rubix_integration.stores.sqlite', 'sqlalchemy', "
        "'sqlmodel']"]
    assert _modules_after(built + "p.ipfs_backends()", *backend_modules) == [
        "['rubix_integration.ipfs.repo']"]


class GhostStore:
    @hookimpl
    def register_stores(self) -> list[object]:
        from rubix_integration._registry import LazyBackend

        return [LazyBackend("ghost", "rubix_no_such_module_for_tests:GhostStore",
                            "pip install ghost-store")]


def test_backend_by_dotted_path_that_fails_to_import_is_reported_with_its_hint() -> None:
    plugins = Plugins(load_plugins=(), extra=[GhostStore()])
    with pytest.warns(RuntimeWarning, match=r"'GhostStore'.*failed to import.*pip install ghost"):
        stores = plugins.stores()
    assert set(stores) == {"sqlite", "postgresql"}
    info = {i.name: i for i in plugins.infos()}["GhostStore"]
    assert "ModuleNotFoundError" in (info.error or "")
    assert info.backends == (("store", "ghost"),)
    assert [f.name for f in plugins.failures()] == ["GhostStore"]


class WrongBase:
    @hookimpl
    def register_stores(self) -> list[object]:
        from rubix_integration._registry import LazyBackend

        return [LazyBackend("dag", "rubix_integration.ipfs.repo:RepoBackend")]


def test_backend_by_dotted_path_is_checked_against_its_role_when_loaded() -> None:
    plugins = Plugins(load_plugins=(), extra=[WrongBase()])
    assert "repo" in plugins.ipfs_backends()  # other roles are not affected
    with pytest.raises(PluginError, match=r"'WrongBase'.*not a named subclass of Store"):
        plugins.stores()


def test_a_config_section_named_after_a_source_is_not_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[plugins.strapi]`` belongs to the ``strapi`` source: no "unused settings" warning, while
    a section nobody owns still gets one."""
    import warnings

    config = tmp_path / "config.toml"
    config.write_text('[plugins.strapi]\nurl = "http://127.0.0.1:1"\n\n[plugins.nobody]\nx = 1\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setenv("RUBIX_CONFIG_FILE", str(config))
        manager = Manager(load_plugins=(), data_dir=tmp_path, enabled="0")
        manager.status()
    assert "strapi" in manager.plugins.backend_names("source")
    texts = [str(w.message) for w in caught]
    assert any("[plugins.nobody]" in t for t in texts)
    assert not any("[plugins.strapi]" in t for t in texts)
