"""``rubix-integration pins …``: add/ls/get/rm/health, export and import, migrate (also after
kill -9), apply on the embedded IPFS backend, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rubix_integration.cli import cli
from rubix_integration.pins import Pin, open_pin_state
from rubix_integration.testing.pin_state_contract import contract_cid, full_pin

V0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def pins(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["pins", *args], input=input, catch_exceptions=False)


@pytest.fixture
def state_url(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("RUBIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RUBIX_INTEGRATION_ENABLED", "0")
    return store_url


def test_add_ls_get_rm(state_url: str) -> None:
    out = pins("add", V0, "--store", state_url, "--name", "site", "--rmin", "1", "--rmax", "2",
               "--allocations", "peerA,peerB", "--metadata", "team=ops", "--metadata", "k=v=w",
               "--expire-at", "2030-01-01T00:00:00Z")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == V0
    got = json.loads(pins("get", V0, "--store", state_url).stdout)
    assert (got["name"], got["allocations"], got["metadata"], got["expire_at"], got["mode"]) == (
        "site", ["peerA", "peerB"], {"k": "v=w", "team": "ops"}, "2030-01-01T00:00:00Z",
        "recursive")
    assert got["timestamp"] != "0001-01-01T00:00:00Z"
    listed = pins("ls", "--store", state_url).stdout
    assert listed.split() == [V0, "recursive", "site"]
    assert json.loads(pins("ls", "--json", "--store", state_url).stdout)["cid"] == V0
    assert pins("rm", V0, "--store", state_url).exit_code == 0
    assert pins("rm", V0, "--store", state_url).exit_code == 0  # missing: no error
    missing = pins("get", V0, "--store", state_url)
    assert missing.exit_code == 1
    assert "PinNotFoundError: pin is not part of the pinset" in missing.stderr
    assert pins("ls", "--store", state_url).stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (("add", "QmNotACid"), "InvalidPinError: cid: 'QmNotACid' is not a valid CID"),
    (("add", V0, "--rmin", "3", "--rmax", "2"), "is greater than replication_factor_max"),
    (("add", V0, "--expire-at", "soon"), "expire_at: 'soon' is not an RFC 3339 time"),
])
def test_add_refuses_bad_input_in_one_line(state_url: str, args: tuple[str, ...],
                                           message: str) -> None:
    out = pins(*args, "--store", state_url)
    assert out.exit_code == 1
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_export_import_round_trip_byte_for_byte(state_url: str, tmp_path: Path) -> None:
    with open_pin_state(state_url, data_dir=tmp_path / "data") as state:
        state.apply([full_pin(n) for n in range(12)] + [Pin(cid=V0, name="v0")])
    first = tmp_path / "first.ndjson"
    assert pins("export", "-f", str(first), "--store", state_url).exit_code == 0
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    out = pins("import", str(first), "--state", other)
    assert out.exit_code == 0, out.output
    assert "imported 13 pins" in out.stderr
    again = pins("export", "--state", other).stdout
    assert again == first.read_text()
    assert len(again.splitlines()) == 13


def test_import_from_stdin_with_overrides_and_replace(state_url: str) -> None:
    assert pins("add", contract_cid(77), "--store", state_url).exit_code == 0
    text = "".join(Pin(cid=contract_cid(n)).validated().to_ndjson() + "\n" for n in range(4))
    out = pins("import", "-", "--replace", "--rmin", "2", "--rmax", "3", "--allocations",
               "p1,p2", "--store", state_url, input=text)
    assert out.exit_code == 0, out.output
    assert "imported 4 pins, removed 1" in out.stderr
    lines = [json.loads(x) for x in pins("ls", "--json", "--store", state_url).stdout.splitlines()]
    assert sorted(p["cid"] for p in lines) == sorted(contract_cid(n) for n in range(4))
    assert {(p["replication_factor_min"], p["replication_factor_max"], tuple(p["allocations"]))
            for p in lines} == {(2, 3, ("p1", "p2"))}


def test_import_stops_at_a_bad_line_with_its_number(state_url: str, tmp_path: Path) -> None:
    lines = [Pin(cid=contract_cid(n)).validated().to_ndjson() for n in range(5)]
    lines[3] = lines[3][:40]  # truncated
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join(lines) + "\n")
    out = pins("import", str(path), "--store", state_url)
    assert out.exit_code == 1
    assert "line 4:" in out.stderr
    assert pins("ls", "--store", state_url).stdout == ""  # nothing half-applied
    skipped = pins("import", str(path), "--skip-bad", "--store", state_url)
    assert skipped.exit_code == 2
    assert "skipped line 4" in skipped.stderr and "imported 4 pins" in skipped.stderr


def test_health_and_its_failure(state_url: str, tmp_path: Path) -> None:
    out = pins("health", "--store", state_url)
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("ok: ")
    bad = pins("health", "--state", "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert bad.exit_code == 1
    assert "StoreUnavailableError" in bad.stderr and "127.0.0.1" in bad.stderr


def test_metrics_in_prometheus_text(state_url: str) -> None:
    pins("add", V0, "--store", state_url)
    out = pins("metrics", "--store", state_url)
    assert out.exit_code == 0
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(out.stdout)}
    counted = [s for s in families["rubix_pin_state_pins"].samples]
    assert any(s.value == 1 for s in counted)
    assert "rubix_pin_state_operation_duration_seconds" in families


def test_debug_log_lines_in_json(state_url: str) -> None:
    out = pins("--log-json", "add", V0, "--store", state_url)
    assert out.exit_code == 0
    logged = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(d["operation"], d["cid"], d["success"]) for d in logged] == [("add", V0, True)]


def test_apply_pins_what_the_state_lists_and_reports_the_rest(
        state_url: str, tmp_path: Path) -> None:
    from rubix_integration import Manager

    with Manager(store_url=state_url, ipfs_mode="local", data_dir=tmp_path / "data") as m:
        ipfs = m.ipfs()
        here = [ipfs.add_bytes(f"content {n}".encode()) for n in range(3)]
        elsewhere = ipfs.add_bytes(b"for another peer")
        for cid in [*here, elsewhere]:
            ipfs.unpin(cid)  # held, not pinned
        assert set(ipfs.pins()).isdisjoint([*here, elsewhere])  # type: ignore[attr-defined]
        m.pins.apply([Pin(cid=c) for c in here]
                     + [Pin(cid=elsewhere, allocations=("otherPeer",)),
                        Pin(cid=contract_cid(5), allocations=("me",))])
    out = pins("apply", "--ipfs", "local", "--peer", "me", "--timeout", "2", "--json",
               "--store", state_url)
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert (sorted(data["present"]), data["pinned"]) == (sorted(here), [])
    assert [f["cid"] for f in data["failed"]] == [contract_cid(5)]
    with Manager(store_url=state_url, ipfs_mode="local", data_dir=tmp_path / "data") as m:
        pinned = set(m.ipfs().pins())  # type: ignore[attr-defined]
    assert set(here) <= pinned and elsewhere not in pinned


# --- migrate ----------------------------------------------------------------------------------


def _fill(url: str, count: int, data_dir: Path) -> None:
    with open_pin_state(url, data_dir=data_dir) as state, \
            state.batch(max_batch_size=5000) as batch:
        for n in range(count):
            batch.add(Pin(cid=contract_cid(n), name=f"pin {n}", allocations=("peerA",)))


@pytest.mark.postgres
def test_migrate_embedded_to_postgresql(pg_database: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUBIX_DATA_DIR", str(tmp_path / "data"))
    source = f"sqlite:///{tmp_path / 'src.sqlite'}"
    _fill(source, 2500, tmp_path)
    out = pins("migrate", "--from", source, "--to", pg_database, "--batch", "300")
    assert out.exit_code == 0, out.output
    assert "copied 2500 pins in 9 batches; both states hold 2500 pins" in out.stdout
    with open_pin_state(source, data_dir=tmp_path) as a, \
            open_pin_state(pg_database, data_dir=tmp_path) as b:
        assert a.summary() == b.summary()
        b.add(Pin(cid=contract_cid(10**6)))  # the destination now holds a pin the source lacks
    out = pins("migrate", "--from", source, "--to", pg_database)
    assert out.exit_code == 1
    assert "the states differ" in out.stderr


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_migrate_survives_kill_9_and_converges(pg_database: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'src.sqlite'}"
    count, batch = 40_000, 500
    _fill(source, count, tmp_path)
    checkpoint = tmp_path / "migrate.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUBIX_")}
    env.update(RUBIX_DATA_DIR=str(tmp_path / "data"), RUBIX_LOAD_PLUGINS="")
    command = [sys.executable, "-m", "rubix_integration", "pins", "migrate", "--from", source,
               "--to", pg_database, "--batch", str(batch), "--checkpoint", str(checkpoint)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate(timeout=10)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with open_pin_state(pg_database, data_dir=tmp_path) as dest:
        landed = dest.count()
    assert 0 < landed < count
    assert landed % batch == 0  # whole batches only
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after" in resumed.stdout
    assert f"both states hold {count} pins" in resumed.stdout
    assert not checkpoint.exists()
    with open_pin_state(source, data_dir=tmp_path) as a, \
            open_pin_state(pg_database, data_dir=tmp_path) as b:
        assert a.summary() == b.summary()


def test_help_of_every_pins_command_and_no_heavy_import_at_module_level() -> None:
    import ast

    import rubix_integration.cli._pins as module

    for sub in ("", "export", "import", "add", "ls", "get", "rm", "health", "migrate", "apply",
                "metrics"):
        out = pins(*([sub] if sub else []), "--help")
        assert out.exit_code == 0 and "Usage:" in out.stdout, sub
    heavy = {"sqlalchemy", "sqlmodel", "psycopg", "prometheus_client", "cassandra",
             "rubix_integration.pins"}
    tree = ast.parse(Path(module.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in heavy or n in heavy}
