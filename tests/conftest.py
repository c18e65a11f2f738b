"""Shared test set-up: an isolated environment for every test, real peers and stores as fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.stores",
    "tests.fixtures.jsipfs",
    "tests.fixtures.kubo",
    "tests.fixtures.import_data",
    "tests.fixtures.import_services",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Clear every RUBIX_* variable (and the IPFS ones we read) and point the data/config dirs
    at a fresh temporary folder."""
    for name in list(os.environ):
        if name.startswith("RUBIX_") or name in ("IPFS_PATH", "IPFS_DATASETS_ENABLED"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("RUBIX_LOAD_PLUGINS", "")
    yield home
