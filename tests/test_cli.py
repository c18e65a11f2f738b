from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "rubix-integration"


def run(*args: str, env: dict[str, str] | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=full_env, check=check)


def test_help_on_every_command() -> None:
    top = run("--help").stdout
    for command in ("status", "plugins", "ipfs"):
        assert command in top
        assert "Usage:" in run(command, "--help").stdout
    for sub in ("add", "cat", "ls", "get"):
        assert "Usage:" in run("ipfs", sub, "--help").stdout


def test_status_json(tmp_path: Path) -> None:
    out = run("status", "--json", env={"RUBIX_INTEGRATION_ENABLED": "0",
                                       "RUBIX_DATA_DIR": str(tmp_path)})
    data = json.loads(out.stdout)
    assert data["ipfs_mode"] == "local"
    assert data["settings"]["data_dir"] == str(tmp_path)
    assert data["sources"]["enabled"] == "environment"


def test_status_table(tmp_path: Path) -> None:
    out = run("status", env={"RUBIX_INTEGRATION_ENABLED": "0", "RUBIX_DATA_DIR": str(tmp_path)})
    assert "chosen" in out.stdout and "local" in out.stdout and "sqlite" in out.stdout


def test_bad_setting_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = run("status", env={"RUBIX_INTEGRATION_ENABLED": "maybe"}, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "RUBIX_INTEGRATION_ENABLED" in lines[0]


def test_unknown_store_scheme_is_one_line(tmp_path: Path) -> None:
    out = run("status", "--store", "mongodb://x/y", "--json",
              env={"RUBIX_DATA_DIR": str(tmp_path)}, check=False)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: UnknownStoreError")
    assert "mongodb" in lines[0] and "known schemes: postgres, postgresql, sqlite" in lines[0]


def test_plugins_json_lists_builtins() -> None:
    data = json.loads(run("plugins", "--json", env={"RUBIX_LOAD_PLUGINS": ""}).stdout)
    names = {p["name"] for p in data}
    assert "rubix_integration.ipfs.http" in names
    assert all(p["source"] == "built-in" for p in data)


def test_example_plugin_listed_and_its_command_works(tmp_path: Path) -> None:
    pytest.importorskip("rubix_integration_cidfolder",
                        reason="pip install -e examples/rubix-integration-example-plugin")
    env = {"RUBIX_LOAD_PLUGINS": "cidfolder"}
    data = json.loads(run("plugins", "--json", env=env).stdout)
    example = next(p for p in data if p["name"] == "cidfolder")
    assert example["source"] == "entry point" and example["version"] == "0.1.0"
    (tmp_path / "cid-cache").mkdir()
    (tmp_path / "cid-cache" / "QmX").write_bytes(b"abc")
    out = run("cidfolder-ls", str(tmp_path), env=env)
    assert out.stdout.strip() == "QmX 3"


def test_ipfs_add_cat_roundtrip_on_embedded_store(tmp_path: Path) -> None:
    env = {"RUBIX_INTEGRATION_ENABLED": "0", "RUBIX_DATA_DIR": str(tmp_path / "data")}
    src = tmp_path / "token.txt"
    src.write_bytes(b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u")
    added = json.loads(run("ipfs", "add", str(src), "--json", env=env).stdout)
    assert added["cid"] == "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
    assert run("ipfs", "cat", added["cid"], env=env).stdout.encode() == src.read_bytes()
    missing = run("ipfs", "cat", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX", env=env,
                  check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


_COMMAND_PLUGIN = """
import click
from rubix_integration import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command("hello-plugin")
    def hello():
        \"\"\"Say hello from a plugin.\"\"\"
        click.echo("hello from the plugin")
"""


def test_plugin_commands_come_from_the_plugin_manager(tmp_path: Path) -> None:
    """An installed plugin's command is listed by ``--help`` and runs; a failing plugin is
    reported by name and the rest of the command line still works."""
    (tmp_path / "rubix_hello_plugin.py").write_text(_COMMAND_PLUGIN)
    info = tmp_path / "hello_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[rubix_integration]\nhello = rubix_hello_plugin\nbroken = rubix_no_such_module\n")
    env = {"PYTHONPATH": str(tmp_path), "RUBIX_LOAD_PLUGINS": "hello,broken"}
    top = run("--help", env=env)
    assert "hello-plugin" in top.stdout
    assert "'broken'" in top.stderr and "failed to import" in top.stderr
    assert run("hello-plugin", env=env).stdout.strip() == "hello from the plugin"
    hidden = run("--help", env={**env, "RUBIX_LOAD_PLUGINS": ""})
    assert "hello-plugin" not in hidden.stdout and hidden.stderr == ""
