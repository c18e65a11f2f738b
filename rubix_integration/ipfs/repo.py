"""The ``repo`` backend: read content straight from a kubo (or js-ipfs) repo on disk.

No daemon is needed. The backend finds the flatfs block store through the repo's
``datastore_spec``, opens block files read-only, verifies every block against its hash and decodes
dag-pb/UnixFS itself. It never writes to the repo and never takes the repo's lock, so it can read
a repo while its daemon runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rubix_integration.codecs import parse_cid
from rubix_integration.errors import IPFSUnavailableError
from rubix_integration.ipfs._dag import DagBackend, DagReader
from rubix_integration.ipfs._flatfs import SHARDING_FILES, FlatFS, read_shard_func
from rubix_integration.ipfs.base import (
    Health,
    IPFSContext,
    IPFSDetection,
)

__all__ = ["RepoBackend", "find_blockstore"]


def _flatfs_mount(spec: Any) -> dict[str, Any] | None:
    """The flatfs mount serving ``/blocks`` in a datastore spec (the ``datastore_spec`` file's
    short form, or the config's long form with ``child`` wrappers)."""
    if not isinstance(spec, dict):
        return None
    if spec.get("type") == "mount":
        for mount in spec.get("mounts") or ():
            if isinstance(mount, dict) and mount.get("mountpoint") == "/blocks":
                return _flatfs_mount(mount)
        return None
    if spec.get("type") == "flatfs":
        return spec
    if isinstance(spec.get("child"), dict):
        return _flatfs_mount(spec["child"])
    return None


def _datastore_kinds(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "unreadable"
    if spec.get("type") == "mount":
        kinds = [_datastore_kinds(m) for m in spec.get("mounts") or () if isinstance(m, dict)]
        return "+".join(k for k in kinds if k) or "mount"
    if isinstance(spec.get("child"), dict):
        return _datastore_kinds(spec["child"])
    return str(spec.get("type") or "unknown")


def find_blockstore(repo: Path) -> tuple[Path | None, str]:
    """Locate the flatfs block folder of the IPFS repo at ``repo``.

    Returns ``(folder, reason)``; ``folder`` is ``None`` when the repo cannot be read this way and
    ``reason`` says why. Reads two small files, writes nothing.
    """
    if not repo.exists():
        return None, f"no IPFS repo at {repo} (the path does not exist)"
    if not repo.is_dir():
        return None, f"{repo} is not a directory"
    spec_file = repo / "datastore_spec"
    if spec_file.is_file():
        try:
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"{spec_file} cannot be read: {exc}"
        mount = _flatfs_mount(spec)
        if mount is None:
            return None, (f"the repo at {repo} stores blocks in a {_datastore_kinds(spec)} "
                          "datastore, not flatfs")
        blocks = repo / str(mount.get("path") or "blocks")
    else:
        # js-ipfs repos may lack datastore_spec; their flatfs folder announces itself
        blocks = repo / "blocks"
        if not any((blocks / name).is_file() for name in SHARDING_FILES):
            return None, f"{repo} has no datastore_spec and no flatfs blocks/ folder"
    if not blocks.is_dir():
        return None, f"the flatfs block folder {blocks} does not exist"
    try:
        shard = read_shard_func(blocks)
    except IPFSUnavailableError as exc:
        return None, str(exc)
    if shard is None:
        return None, f"{blocks} has no SHARDING file"
    return blocks, f"flatfs repo at {repo} ({shard.rsplit('/', 2)[-2]}/{shard.rsplit('/', 1)[-1]})"


class RepoBackend(DagBackend):
    """Read-only access to the blocks of a kubo or js-ipfs repo on disk."""

    name = "repo"
    priority = 10
    read_only = True

    def __init__(self, context: IPFSContext) -> None:
        super().__init__(context)
        if context.ipfs_path is None:
            raise IPFSUnavailableError("repo backend: no IPFS repo path given", backend=self.name)
        blocks, reason = find_blockstore(Path(context.ipfs_path))
        if blocks is None:
            raise IPFSUnavailableError(f"repo backend: {reason}", backend=self.name,
                                       path=str(context.ipfs_path))
        self._store = FlatFS.open(blocks, backend=self.name)
        self._dag = DagReader(self._store.get, self.name)

    @classmethod
    def detect(cls, context: IPFSContext) -> IPFSDetection:
        if context.ipfs_path is None:
            return IPFSDetection(False, "no IPFS repo path configured")
        blocks, reason = find_blockstore(Path(context.ipfs_path))
        return IPFSDetection(blocks is not None, reason)

    # --- reading ---------------------------------------------------------------------------------

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        return self._store.has(parse_cid(cid))

    def get_block(self, cid: str, *, timeout: float | None = None) -> bytes:
        return self._store.get(parse_cid(cid))

    # --- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        try:
            ok = self._store.root.is_dir() and read_shard_func(self._store.root) is not None
        except (OSError, IPFSUnavailableError) as exc:
            return Health(False, f"cannot read {self._store.root}: {exc}")
        if not ok:
            return Health(False, f"{self._store.root} is no longer a flatfs folder")
        return Health(True, f"reading blocks from {self._store.root}")
