"""Hostile configuration: secrets in store URLs, malformed values, wrong types, bad files.

Every case either works or stops with one classified error that names the setting (variable,
config key or command option) and what is allowed; no secret is ever printed; the command line
prints one line and exits 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubix_integration import (
    ConfigError,
    Manager,
    StoreUnavailableError,
    UnknownStoreError,
    resolve_settings,
)
from rubix_integration._settings import check_store_url, mask_url

SCRIPT = Path(sys.executable).parent / "rubix-integration"
SECRET = "hunter2"
ABSENT_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd, check=False)


def assert_one_error_line(out: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, nothing on stderr but one ``Error:`` line holding every fragment; return it."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- secrets in store URLs -----------------------------------------------------------------------

# (URL, the secret parts it holds, parts that must stay visible)
SECRET_URLS = [
    ("postgresql+psycopg://bob:hunter2@db.example:5432/rubix", ["hunter2"],
     ["bob", "db.example:5432/rubix"]),
    ("postgresql+psycopg://bob@db.example/rubix?password=hunter2", ["hunter2"],
     ["bob@db.example/rubix", "password="]),
    ("postgresql+psycopg://bob@h/db?sslmode=require&sslpassword=hunter2&passfile=/etc/pgpass",
     ["hunter2"], ["sslmode=require", "passfile=/etc/pgpass"]),
    ("postgresql+psycopg://bob@h/db?PassWord=hunter2", ["hunter2"], ["h/db"]),
    ("postgresql+psycopg://bob@h/db?pass%77ord=hunter2", ["hunter2"], ["h/db"]),
    ("postgresql+psycopg://bob@h/db?api_token=hunter2&client_secret=s3cr3tz&application_name=x",
     ["hunter2", "s3cr3tz"], ["application_name=x"]),
    # reserved characters left unencoded in the password: hide too much rather than too little
    ("postgresql+psycopg://bob:hun@ter2@h/db", ["hun", "ter2"], ["h/db"]),
    ("postgresql+psycopg://bob:hun?ter2@h/db", ["hun", "ter2"], ["h/db"]),
    ("postgresql+psycopg://bob:hun/ter2@h/db", ["hun", "ter2"], ["h/db"]),
    # malformed: a port that is not a number may be a password missing its '@'
    ("postgresql+psycopg://bob@h:hunter2/db", ["hunter2"], ["bob@h:"]),
    ("postgresql+psycopg://bob:hunter2@[::1/db", ["hunter2"], ["bob"]),
    # not URLs at all
    ("host=h password=hunter2 dbname=x", ["hunter2"], ["host=h", "dbname=x"]),
    ("postgresql:bob:hunter2@h/db", ["hunter2"], ["h/db"]),
]


@pytest.mark.parametrize(("url", "secrets", "visible"), SECRET_URLS)
def test_mask_url_hides_every_secret_form(url: str, secrets: list[str],
                                          visible: list[str]) -> None:
    masked = mask_url(url)
    for secret in secrets:
        assert secret not in masked, masked
    for part in visible:
        assert part in masked, masked
    assert "***" in masked


# reserved characters a careless user leaves unencoded; "Q" marks the secret (no other part has it)
_SECRET_TEXT = st.text(alphabet="Q@?/:#=;% ", min_size=1, max_size=12).map(lambda t: "Q" + t)


@settings(max_examples=300, deadline=None)
@given(password=_SECRET_TEXT, value=_SECRET_TEXT.filter(lambda t: "&" not in t),
       key=st.sampled_from(["password", "sslpassword", "PASSWORD", "client_secret", "token"]))
def test_mask_url_hides_secrets_whatever_they_hold(password: str, value: str, key: str) -> None:
    for url in (f"postgresql+psycopg://bob:{password}@h:5432/db",
                f"postgresql+psycopg://bob:{password}@h/db?sslmode=require&{key}={value}",
                f"postgresql+psycopg://bob@h/db?{key}={value}&application_name=x",
                f"postgresql+psycopg://bob@h/db?{key}={value}"):
        masked = mask_url(url)
        assert "Q" not in masked, (url, masked)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_mask_url_and_the_store_url_check_take_any_text(text: str) -> None:
    mask_url(text)
    with contextlib.suppress(ValueError):
        check_store_url(text)


def test_mask_url_leaves_urls_without_secrets_alone() -> None:
    for url in ("sqlite:///tmp/x.db", "sqlite://", "postgresql+psycopg://bob@h:5432/db",
                "postgresql+psycopg://bob@h/db?sslmode=require&connect_timeout=3"):
        assert mask_url(url) == url


UNREACHABLE = [
    f"postgresql+psycopg://bob:{SECRET}@127.0.0.1:1/db",
    f"postgresql+psycopg://bob@127.0.0.1:1/db?password={SECRET}",
    f"postgresql+psycopg://bob@127.0.0.1:1/db?sslpassword={SECRET}&connect_timeout=2",
]


@pytest.mark.parametrize("url", UNREACHABLE)
def test_store_errors_and_status_never_show_a_secret(url: str, tmp_path: Path) -> None:
    manager = Manager(store_url=url, data_dir=tmp_path)
    with pytest.raises(StoreUnavailableError) as info:
        _ = manager.store
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in str(info.value.url)
    assert "127.0.0.1:1" in str(info.value)
    report = manager.status()
    assert SECRET not in report.to_json() and SECRET not in str(report)
    assert SECRET not in repr(manager)


@pytest.mark.parametrize("url", UNREACHABLE)
def test_cli_status_and_sync_never_show_a_secret(url: str, tmp_path: Path) -> None:
    env = {"RUBIX_DATA_DIR": str(tmp_path), "COLUMNS": "400"}
    table = run_cli("status", "--store", url, env=env)
    assert table.returncode == 0, table.stderr
    assert "127.0.0.1:1" in table.stdout
    as_json = run_cli("status", "--json", "--store", url, env=env)
    assert json.loads(as_json.stdout)["store"] == "postgresql"
    (tmp_path / "nodes").mkdir()
    synced = run_cli("sync", "--store", url, "--no-progress", str(tmp_path / "nodes"), env=env)
    line = assert_one_error_line(synced, "StoreUnavailableError", "127.0.0.1:1")
    assert SECRET not in line
    for out in (table, as_json):
        assert SECRET not in out.stdout + out.stderr
    log = tmp_path / "sync.log"
    assert not log.exists() or SECRET not in log.read_text()


@pytest.mark.postgres
def test_sync_summary_and_log_never_show_a_secret(pg_database: str, tmp_path: Path) -> None:
    from rubix_integration.tokens.demo import make_sample

    make_sample(tmp_path / "nodes", nodes=1, tokens_per_node=2, broken=False)
    # trust authentication ignores the password: the sync succeeds and prints its summary
    url = f"{pg_database}?password={SECRET}"
    env = {"RUBIX_DATA_DIR": str(tmp_path / "data")}
    for extra in ((), ("--json",)):
        out = run_cli("sync", "--store", url, "--no-progress", "--full", *extra,
                      str(tmp_path / "nodes"), env=env)
        assert out.returncode == 0, out.stderr
        assert "node001" in out.stdout or "databases" in out.stdout
        assert SECRET not in out.stdout + out.stderr
    status = run_cli("status", "--json", "--store", url, env=env)
    chosen = next(c for c in json.loads(status.stdout)["stores"] if c["chosen"])
    assert chosen["available"] is True, chosen
    assert SECRET not in status.stdout + status.stderr
    assert SECRET not in (tmp_path / "data" / "sync.log").read_text()


def test_a_store_value_that_is_not_a_url_is_masked_in_its_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_STORE_URL": f"host=h password={SECRET}"})
    assert "RUBIX_STORE_URL" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in repr(info.value.value)


def test_cli_bad_store_value_is_masked(tmp_path: Path) -> None:
    out = run_cli("status", env={"RUBIX_STORE_URL": f"postgresql:bob:{SECRET}@h/db",
                                 "RUBIX_DATA_DIR": str(tmp_path)})
    line = assert_one_error_line(out, "ConfigError", "RUBIX_STORE_URL")
    assert SECRET not in line


# --- the config file and wrong types -------------------------------------------------------------


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(b'data_dir = "/tmp/\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert str(cfg) in str(info.value) and "UTF-8" in str(info.value)
    out = run_cli("status", env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert_one_error_line(out, "ConfigError", str(cfg), "UTF-8")


def test_explicit_config_file_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(tmp_path / "nope.toml")})
    assert "RUBIX_CONFIG_FILE" in str(info.value) and "nope.toml" in str(info.value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "1e300", "0", "ten"])
def test_ipfs_timeout_must_be_a_finite_positive_number(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_IPFS_TIMEOUT": text})
    assert "RUBIX_IPFS_TIMEOUT" in str(info.value) and "seconds" in str(info.value)


@pytest.mark.parametrize("toml", ["ipfs_timeout = inf", "ipfs_timeout = nan",
                                  "ipfs_timeout = true", "ipfs_timeout = [1]"])
def test_ipfs_timeout_in_the_config_file(toml: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert "'ipfs_timeout'" in str(info.value)


WRONG_TYPES = [
    ('data_dir = ["/tmp"]', "data_dir"),
    ("data_dir = 3", "data_dir"),
    ('data_dir = "/tmp/a\\u0000b"', "data_dir"),
    ("ipfs_path = {a = 1}", "ipfs_path"),
    ("ipfs_mode = 3", "ipfs_mode"),
    ('ipfs_mode = ["http"]', "ipfs_mode"),
    ("enabled = [1]", "enabled"),
    ("enabled = 2.5", "enabled"),
    ("store_url = 1", "store_url"),
    ('store_url = ["sqlite://"]', "store_url"),
    ("ipfs_api = 5001", "ipfs_api"),
    ("ipfs_bin = false", "ipfs_bin"),
    ("ipfs_bin_args = [1, 2]", "ipfs_bin_args"),
    ("ipfs_bin_args = 7", "ipfs_bin_args"),
    ("load_plugins = [1]", "load_plugins"),
    ("load_plugins = true", "load_plugins"),
    ("source_ip = 1979-05-27", "source_ip"),
]


@pytest.mark.parametrize(("toml", "key"), WRONG_TYPES)
def test_wrong_types_in_the_config_file_are_refused(
    toml: str, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "config.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert f"config file key {key!r}" in str(info.value)
    assert info.value.source == "config file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_right_types_in_the_config_file_are_taken(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('enabled = false\nipfs_timeout = 3\nipfs_bin_args = ["--offline"]\n'
                   f'load_plugins = ["a", "b"]\ndata_dir = "{tmp_path / "d"}"\n')
    s = resolve_settings(env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert (s.enabled, s.ipfs_timeout, s.ipfs_bin_args) == ("0", 3.0, ("--offline",))
    assert s.load_plugins == ("a", "b") and s.data_dir == tmp_path / "d"


@pytest.mark.parametrize(("name", "value"), [("data_dir", ["/tmp"]), ("ipfs_timeout", "inf"),
                                             ("store_url", 5), ("ipfs_mode", ("http",))])
def test_wrong_keyword_types_are_refused(name: str, value: object, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={}, **{name: value})
    assert name in str(info.value) and info.value.source == "keyword"
    assert list(tmp_path.iterdir()) == []


def test_cli_wrong_type_in_the_config_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('data_dir = ["/tmp"]\n')
    out = run_cli("status", env={"RUBIX_CONFIG_FILE": str(cfg)}, cwd=tmp_path)
    assert_one_error_line(out, "ConfigError", "'data_dir'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --- store URLs ----------------------------------------------------------------------------------

BAD_STORE_URLS = [
    ("sqlite:", "not a URL"),
    ("sqlite:rubix.db", "not a URL"),
    ("://nothing", "scheme"),
    ("1db://x/y", "scheme"),
    ("postgresql+psycopg://bob@h:abc/db", "port"),
    ("postgresql+psycopg://bob@h:99999/db", "port"),
    ("postgresql+psycopg://bob@h:/db", "port"),
    ("postgresql+psycopg://bob@[::1/db", "]"),
    ("sqlite:///tmp/a\x00b.db", "NUL"),
]


@pytest.mark.parametrize(("url", "why"), BAD_STORE_URLS)
def test_malformed_store_urls_are_config_errors(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={"RUBIX_STORE_URL": url})
    assert "RUBIX_STORE_URL" in str(info.value) and why in str(info.value)
    assert "postgresql+psycopg://" in str(info.value)  # what is allowed


@pytest.mark.parametrize("url", ["postgresql+psycopg://", "postgresql://bob@/",
                                 "postgres://bob:pw@:5432"])
def test_postgresql_url_must_name_a_host_or_a_database(url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUBIX_STORE_URL", url)
    manager = Manager(data_dir=tmp_path)
    for attempt in (lambda: manager.store, manager.status):
        with pytest.raises(ConfigError) as info:
            attempt()
        assert "RUBIX_STORE_URL" in str(info.value)
        assert "host" in str(info.value) and "database" in str(info.value)


def test_postgresql_url_with_only_a_database_or_a_query_host_is_accepted() -> None:
    from rubix_integration.stores import PostgreSQLStore

    settings = resolve_settings(env={})
    for url in ("postgresql+psycopg:///rubix", "postgresql+psycopg://?host=/run/postgresql",
                "postgresql+psycopg://bob@db.example"):
        assert PostgreSQLStore(url, settings=settings).url.startswith("postgresql+psycopg://")


def test_scheme_case_does_not_matter(tmp_path: Path) -> None:
    url = f"SQLITE:///{tmp_path / 'upper.db'}"
    assert resolve_settings(env={"RUBIX_STORE_URL": url}).store_url.startswith("sqlite:///")
    with Manager(store_url=url, data_dir=tmp_path) as manager:
        assert manager.store.name == "sqlite"
    assert (tmp_path / "upper.db").is_file()


@pytest.mark.parametrize(("url", "fragments"), [
    ("sqlite:", ["--store", "not a URL"]),
    ("postgresql+psycopg://", ["--store", "host", "database"]),
    ("postgresql+psycopg://bob@h:x/db", ["--store", "port"]),
])
def test_cli_bad_store_option_is_one_line_naming_the_option(url: str, fragments: list[str],
                                                            tmp_path: Path) -> None:
    for command in (("status",), ("sync", "--no-progress", str(tmp_path))):
        out = run_cli(*command, "--store", url, env={"RUBIX_DATA_DIR": str(tmp_path / "d")})
        assert_one_error_line(out, "ConfigError", *fragments)


def test_cli_upper_case_scheme_works(tmp_path: Path) -> None:
    out = run_cli("status", "--json", "--store", f"SQLITE:///{tmp_path / 'x.db'}",
                  env={"RUBIX_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["store"] == "sqlite"


def test_unknown_store_scheme_is_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownStoreError) as info:
        Manager(store_url="nosuch://x", data_dir=tmp_path).status()
    assert "nosuch" in str(info.value) and "postgresql" in str(info.value)
    out = run_cli("status", "--store", "nosuch://x", env={"RUBIX_DATA_DIR": str(tmp_path)})
    assert_one_error_line(out, "UnknownStoreError", "nosuch", "--store", "sqlite",
                          "postgresql")


# --- where a value came from, and one clean line ------------------------------------------------


def test_a_value_given_by_an_option_is_reported_as_that_option() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(env={}, keyword_sources={"ipfs_mode": "option --ipfs"},
                         ipfs_mode="no such")
    assert "--ipfs" in str(info.value) and "ipfs_mode" not in str(info.value)
    s = resolve_settings(env={}, keyword_sources={"ipfs_mode": "option --ipfs"},
                         ipfs_mode="http")
    assert s.sources["ipfs_mode"] == "option --ipfs"
    assert s.label("ipfs_mode") == "--ipfs"
    assert resolve_settings(env={"RUBIX_IPFS": "http"}).label("ipfs_mode") == "RUBIX_IPFS"


def test_ipfs_flag_without_a_daemon_is_blamed_on_the_flag_in_clean_lines(tmp_path: Path) -> None:
    env = {"RUBIX_DATA_DIR": str(tmp_path), "RUBIX_IPFS_PATH": str(tmp_path / "no-repo")}
    out = run_cli("ipfs", "cat", "--ipfs", "http", ABSENT_CID, env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "RUBIX_IPFS" not in out.stderr, out.stderr
    assert not re.search(r"\.py[:\"]", out.stderr), out.stderr  # no source path
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: IPFSUnavailableError")
    assert all(line.startswith("warning: ") for line in lines[:-1]), out.stderr
    assert len(lines) <= 2 and len(set(lines)) == len(lines), out.stderr
    assert all("--ipfs" in line for line in lines[:-1]), out.stderr
    by_env = run_cli("ipfs", "cat", ABSENT_CID, env={**env, "RUBIX_IPFS": "http"})
    assert by_env.returncode == 1 and "RUBIX_IPFS=http" in by_env.stderr


def test_status_reports_an_option_as_its_source(tmp_path: Path) -> None:
    env = {"RUBIX_DATA_DIR": str(tmp_path), "RUBIX_IPFS_PATH": str(tmp_path / "no-repo")}
    out = run_cli("status", "--json", "--ipfs", "local", env=env)
    data = json.loads(out.stdout)
    assert data["sources"]["ipfs_mode"] == "option --ipfs"
    chosen = next(c for c in data["ipfs"] if c["chosen"])
    assert "--ipfs" in chosen["reason"] and "RUBIX_IPFS" not in chosen["reason"]
    assert out.stderr == ""


def test_bad_config_value_is_reported_once_without_a_plugin_warning(tmp_path: Path) -> None:
    out = run_cli("status", env={"RUBIX_IPFS_TIMEOUT": "inf"})
    assert_one_error_line(out, "ConfigError", "RUBIX_IPFS_TIMEOUT")
    assert "plugin" not in out.stderr


def test_help_is_clean_with_a_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('ipfs_moed = "http"\n')
    env = {"RUBIX_CONFIG_FILE": str(cfg)}
    out = run_cli("--help", env=env)
    assert out.returncode == 0 and "Usage:" in out.stdout
    assert out.stderr == ""
    assert_one_error_line(run_cli("status", env=env), "ConfigError", "ipfs_moed")


def test_unknown_command_with_a_bad_config_file_reports_the_config(tmp_path: Path) -> None:
    # a plugin's command may be missing because the config stopped plugins from loading
    cfg = tmp_path / "config.toml"
    cfg.write_text('ipfs_moed = "http"\n')
    out = run_cli("cidfolder-ls", str(tmp_path), env={"RUBIX_CONFIG_FILE": str(cfg)})
    assert_one_error_line(out, "ConfigError", "ipfs_moed")


def _with_path(site: Path) -> str:
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def _plugin_dist(site: Path, name: str, module_text: str) -> None:
    """An installed distribution ``name`` whose entry point is the module ``name`` in ``site``."""
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(module_text)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[rubix_integration]\n{name} = {name}\n")


def test_a_plugin_that_fails_to_import_is_one_clean_warning(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _plugin_dist(site, "broken_plugin", 'raise ImportError("boom")\n')
    env = {"PYTHONPATH": _with_path(site), "RUBIX_LOAD_PLUGINS": "broken_plugin",
           "RUBIX_DATA_DIR": str(tmp_path / "d"), "RUBIX_INTEGRATION_ENABLED": "0"}
    out = run_cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "warning: plugin 'broken_plugin' (broken_plugin: broken_plugin) failed to import: "
        "ImportError: boom"]
    failed = [p for p in json.loads(out.stdout)["plugins"] if p["error"]]
    assert [p["name"] for p in failed] == ["broken_plugin"]


def test_a_plugin_whose_commands_fail_leaves_the_others_working(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _plugin_dist(site, "cmd_plugin", (
        "from rubix_integration import hookimpl\n\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    raise RuntimeError('no commands today')\n"))
    env = {"PYTHONPATH": _with_path(site), "RUBIX_LOAD_PLUGINS": "cmd_plugin",
           "RUBIX_DATA_DIR": str(tmp_path / "d"), "RUBIX_INTEGRATION_ENABLED": "0"}
    out = run_cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ipfs_mode"] == "local"
    assert out.stderr.splitlines() == [
        "warning: plugin 'cmd_plugin' failed in register_commands: RuntimeError: no commands "
        "today"]


def test_help_reports_a_broken_plugin_once_as_status_does(tmp_path: Path) -> None:
    # --help finds plugin commands without building a Manager: the same words, the same once
    site = tmp_path / "site"
    _plugin_dist(site, "broken_plugin", 'raise ImportError("boom")\n')
    _plugin_dist(site, "cmd_plugin", (
        "import click\nfrom rubix_integration import hookimpl\n\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    @cli.command('hello-plugin')\n"
        "    def hello():\n"
        "        '''Say hello from a plugin.'''\n"
        "        click.echo('hello')\n"))
    env = {"PYTHONPATH": _with_path(site), "RUBIX_LOAD_PLUGINS": "broken_plugin,cmd_plugin",
           "RUBIX_DATA_DIR": str(tmp_path / "d"), "RUBIX_INTEGRATION_ENABLED": "0"}
    warning = ("warning: plugin 'broken_plugin' (broken_plugin: broken_plugin) failed to import: "
               "ImportError: boom")
    out = run_cli("--help", env=env)
    assert out.returncode == 0 and "hello-plugin" in out.stdout
    assert out.stderr.splitlines() == [warning]
    ran = run_cli("hello-plugin", env=env)
    assert ran.returncode == 0 and ran.stdout == "hello\n"
    assert ran.stderr.splitlines() == [warning]
    assert run_cli("status", "--json", env=env).stderr.splitlines() == [warning]
