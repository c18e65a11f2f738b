from __future__ import annotations

from pathlib import Path

import pytest

from rubix_integration import ConfigError, resolve_settings


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
