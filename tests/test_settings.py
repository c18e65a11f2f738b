from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from rubix_integration import ConfigError, Manager, hookimpl, resolve_settings
from rubix_integration._plugin_settings import env_name
from rubix_integration.hookspecs import PluginSetting


def test_defaults_live_under_platformdirs(_isolated_env: Path) -> None:
    s = resolve_settings(env={"XDG_DATA_HOME": str(_isolated_env / "d")})
    assert s.enabled == "auto"
    assert s.ipfs_mode == "auto"
    assert s.store_url.startswith("sqlite:///")
    assert s.store_url.endswith("rubix.sqlite")
    assert s.sources["store_url"] == "default"
    assert s.ipfs_timeout == 10.0


def test_precedence_keyword_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('ipfs_mode = "cli"\nipfs_timeout = 3\nipfs_api = "/ip4/127.0.0.1/tcp/1"\n')
    env = {"RUBIX_CONFIG_FILE": str(cfg), "RUBIX_IPFS": "http", "RUBIX_IPFS_TIMEOUT": "4"}
    s = resolve_settings(env=env, ipfs_timeout=5)
    assert s.ipfs_timeout == 5.0 and s.sources["ipfs_timeout"] == "keyword"
    assert s.ipfs_mode == "http" and s.sources["ipfs_mode"] == "environment"
    assert s.ipfs_api == "/ip4/127.0.0.1/tcp/1" and s.sources["ipfs_api"] == "config file"
    assert s.enabled == "auto" and s.sources["enabled"] == "default"
    assert s.config_file == cfg


def test_settings_are_immutable() -> None:
    s = resolve_settings(env={})
    with pytest.raises(AttributeError):
        s.enabled = "0"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"RUBIX_INTEGRATION_ENABLED": "maybe"}, "RUBIX_INTEGRATION_ENABLED", "auto, 1, 0"),
        ({"RUBIX_IPFS": "ht tp"}, "RUBIX_IPFS", "http"),
        ({"RUBIX_IPFS_TIMEOUT": "-1"}, "RUBIX_IPFS_TIMEOUT", "positive"),
        ({"RUBIX_STORE_URL": "just-a-name"}, "RUBIX_STORE_URL", "not a URL"),
    ],
)
def test_bad_environment_values_name_the_variable(
    env: dict[str, str], variable: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env=env)
    assert variable in str(info.value)
    assert fragment in str(info.value)
    assert info.value.name == variable
    assert info.value.source == "environment"


def test_enabled_accepts_boolean_words() -> None:
    assert resolve_settings(env={"RUBIX_INTEGRATION_ENABLED": "false"}).enabled == "0"
    assert resolve_settings(env={"RUBIX_INTEGRATION_ENABLED": "yes"}).enabled == "1"


def test_invalid_config_file_is_reported_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("ipfs_mode = [unclosed\n")
    with pytest.raises(ConfigError, match=str(cfg)):
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})


def test_unknown_config_file_key_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('ipfs_moed = "http"\n')
    with pytest.raises(ConfigError, match="ipfs_moed"):
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ConfigError, match="stor_url"):
        resolve_settings(env={}, stor_url="sqlite://")


def test_load_plugins_list_and_empty() -> None:
    assert resolve_settings(env={"RUBIX_LOAD_PLUGINS": "a, b"}).load_plugins == ("a", "b")
    assert resolve_settings(env={"RUBIX_LOAD_PLUGINS": ""}).load_plugins == ()
    assert resolve_settings(env={}).load_plugins is None


def test_ipfs_path_falls_back_to_ipfs_path_env(tmp_path: Path) -> None:
    s = resolve_settings(env={"IPFS_PATH": str(tmp_path)})
    assert s.ipfs_path == tmp_path
    assert s.sources["ipfs_path"] == "environment (IPFS_PATH)"


def test_as_dict_masks_password() -> None:
    s = resolve_settings(env={"RUBIX_STORE_URL": "postgresql+psycopg://bob:secret@h/db"})
    assert "secret" not in str(s.as_dict())
    assert s.as_dict()["store_url"] == "postgresql+psycopg://bob:***@h/db"


# --- plugin sections -----------------------------------------------------------------------------


class Mailer:
    """A plugin declaring settings; its section is ``[plugins.Mailer]`` (its registered name)."""

    @hookimpl
    def plugin_settings_spec(self) -> dict[str, object]:
        return {"host": "localhost", "port": 25, "tls": False, "ratio": 0.5,
                "to": ["ops"], "spool": PluginSetting(Path, None),
                "password": PluginSetting(str, None)}


class Silent:
    """A plugin declaring no settings at all."""

    @hookimpl
    def token_synced(self) -> None:
        pass


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    return {"RUBIX_CONFIG_FILE": str(cfg)}


def _manager(tmp_path: Path, env: dict[str, str], **kwargs: Any) -> Manager:
    return Manager(plugins=[Mailer(), Silent()], env={**env, "RUBIX_LOAD_PLUGINS": ""},
                   data_dir=tmp_path / "data", enabled="0", **kwargs)


def test_plugin_sections_are_kept_raw_next_to_the_top_level_keys(tmp_path: Path) -> None:
    env = _config(tmp_path, 'ipfs_mode = "cli"\n[plugins.Mailer]\nport = 2525\n')
    s = resolve_settings(env={**env, "RUBIX_MAILER_HOST": "mx", "RUBIX_IPFS": "http"})
    assert s.ipfs_mode == "http"
    assert s.plugin_input.file == {"Mailer": {"port": 2525}}
    # a top-level variable is never offered to plugins
    assert s.plugin_input.env == {"RUBIX_MAILER_HOST": "mx"}
    assert "plugin_input" not in s.as_dict()
    assert pickle.loads(pickle.dumps(s)) == s  # Settings still travel to worker processes


@pytest.mark.parametrize(("text", "fragment"), [
    ("plugins = 3\n", "plugins is not a table"),
    ("[plugins]\nMailer = 1\n", "plugins.Mailer is not a table"),
    ("ipfs_moed = 1\n[plugins.Mailer]\nport = 1\n", "unknown key(s) ipfs_moed"),
])
def test_malformed_plugin_tables_are_config_errors(tmp_path: Path, text: str,
                                                   fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env=_config(tmp_path, text))
    assert fragment in str(info.value)


def test_plugin_settings_precedence_keyword_env_file_default(tmp_path: Path) -> None:
    env = _config(tmp_path, '[plugins.Mailer]\nhost = "file"\nport = 2525\ntls = true\n'
                            'to = ["a", "b"]\n')
    env |= {"RUBIX_MAILER_HOST": "env", "RUBIX_MAILER_PORT": "587", "RUBIX_MAILER_RATIO": "1.5"}
    with _manager(tmp_path, env, plugin_settings={"Mailer": {"host": "kw"}}) as manager:
        got = manager.plugin_settings("Mailer")
        assert dict(got) == {"host": "kw", "port": 587, "tls": True, "ratio": 1.5,
                             "to": ("a", "b"), "spool": None, "password": None}
        assert dict(got.sources) == {"host": "keyword", "port": "environment",
                                     "tls": "config file", "ratio": "environment",
                                     "to": "config file", "spool": "default",
                                     "password": "default"}
        with pytest.raises(AttributeError):
            got.sources = {}  # type: ignore[misc]
        with pytest.raises(TypeError):
            got["host"] = "x"  # type: ignore[index]


def test_plugin_settings_from_the_environment_are_converted(tmp_path: Path) -> None:
    env = {"RUBIX_MAILER_TLS": "yes", "RUBIX_MAILER_TO": "x, y", "RUBIX_MAILER_SPOOL": "~/spool"}
    got = _manager(tmp_path, env).plugin_settings("Mailer")
    assert got["tls"] is True and got["to"] == ("x", "y")
    assert got["spool"] == Path.home() / "spool"


def test_unknown_plugin_key_names_the_section_and_the_known_keys(tmp_path: Path) -> None:
    env = _config(tmp_path, '[plugins.Mailer]\ncolour = "red"\n')
    with pytest.raises(ConfigError) as info:
        _manager(tmp_path, env).plugin_settings("Mailer")
    assert str(info.value) == ("[plugins.Mailer] colour: unknown key; known: host, password, "
                               "port, ratio, spool, tls, to")
    assert info.value.source == "config file"
    # the same section stops the store from opening: configuration errors come first
    with pytest.raises(ConfigError, match="colour: unknown key"):
        _manager(tmp_path, env).store  # noqa: B018


def test_section_of_a_plugin_declaring_nothing_has_only_unknown_keys(tmp_path: Path) -> None:
    env = _config(tmp_path, "[plugins.Silent]\nlevel = 3\n")
    with pytest.raises(ConfigError, match=r"\[plugins.Silent\] level: unknown key; known: none"):
        _manager(tmp_path, env).status()


@pytest.mark.parametrize(("env", "fragment"), [
    ({"RUBIX_MAILER_PORT": "many"}, "RUBIX_MAILER_PORT: 'many' is not an integer"),
    ({"RUBIX_MAILER_TLS": "maybe"}, "RUBIX_MAILER_TLS: 'maybe' is not true or false"),
    ({"RUBIX_MAILER_RATIO": "inf"}, "RUBIX_MAILER_RATIO: 'inf' is not a number"),
])
def test_wrong_plugin_values_from_the_environment_name_the_variable(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _manager(tmp_path, env).plugin_settings("Mailer")
    assert fragment in str(info.value)
    assert info.value.source == "environment"


@pytest.mark.parametrize(("line", "fragment"), [
    ('port = "25"', "[plugins.Mailer] port: '25' is a str; expected an integer"),
    ("tls = 1", "[plugins.Mailer] tls: 1 is a number; expected true or false"),
    ("to = [1]", "[plugins.Mailer] to: [1] is a list; expected a list of text"),
    ("host = 3", "[plugins.Mailer] host: 3 is a number; expected text"),
])
def test_wrong_plugin_values_in_the_file_name_the_key(tmp_path: Path, line: str,
                                                      fragment: str) -> None:
    env = _config(tmp_path, f"[plugins.Mailer]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        _manager(tmp_path, env).plugin_settings("Mailer")
    assert fragment in str(info.value)


def test_plugin_secrets_are_masked_in_status(tmp_path: Path) -> None:
    env = _config(tmp_path, '[plugins.Mailer]\npassword = "hunter2"\n')
    with _manager(tmp_path, env) as manager:
        assert manager.plugin_settings("Mailer")["password"] == "hunter2"
        report = manager.status()
    assert report.settings["plugins"]["Mailer"]["password"] == "***"
    assert report.settings["plugins"]["Mailer"]["port"] == 25
    assert "hunter2" not in report.to_json() and "hunter2" not in str(report)


def test_wrong_secret_value_is_not_echoed(tmp_path: Path) -> None:
    env = _config(tmp_path, "[plugins.Mailer]\npassword = 12345\n")
    with pytest.raises(ConfigError) as info:
        _manager(tmp_path, env).plugin_settings("Mailer")
    assert "12345" not in str(info.value) and "'***'" in str(info.value)


def test_section_no_loaded_plugin_owns_is_a_warning(tmp_path: Path) -> None:
    env = _config(tmp_path, "[plugins.mailr]\nport = 1\n")
    with _manager(tmp_path, env) as manager, pytest.warns(RuntimeWarning, match="mailr"):
        report = manager.status()
    assert any("[plugins.mailr]: no loaded plugin" in w for w in report.warnings)
    with pytest.raises(ConfigError, match="no loaded plugin 'mailr' declares settings; "
                                          "plugins that do: Mailer"):
        manager.plugin_settings("mailr")


def test_plugin_setting_types_are_checked_when_declared() -> None:
    with pytest.raises(TypeError, match="type is one of str, int"):
        PluginSetting(dict)


def test_env_names_of_plugin_keys() -> None:
    assert env_name("my-plugin", "api.key") == "RUBIX_MY_PLUGIN_API_KEY"


def test_ipfs_datasets_enabled_is_an_alias_ours_wins() -> None:
    alias = resolve_settings({"IPFS_DATASETS_ENABLED": "false"})
    assert alias.enabled == "0"
    assert alias.sources["enabled"] == "environment (IPFS_DATASETS_ENABLED)"
    assert alias.label("enabled") == "IPFS_DATASETS_ENABLED"
    assert alias.origin("enabled") == "IPFS_DATASETS_ENABLED=0"
    both = resolve_settings({"IPFS_DATASETS_ENABLED": "0", "RUBIX_INTEGRATION_ENABLED": "1"})
    assert both.enabled == "1" and both.sources["enabled"] == "environment"
    keyword = resolve_settings({"IPFS_DATASETS_ENABLED": "0"}, enabled="auto")
    assert keyword.enabled == "auto" and keyword.sources["enabled"] == "keyword"
    with pytest.raises(ConfigError, match="IPFS_DATASETS_ENABLED"):
        resolve_settings({"IPFS_DATASETS_ENABLED": "sometimes"})
