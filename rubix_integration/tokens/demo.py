"""A realistic sample of Rubix node folders, for the demo and for tests and benchmarks.

Each node gets ``Rubix/rubix.db`` with rubixgoplatform's tables (gorm on SQLite, gorm-style
timestamps) and a kubo-layout IPFS repo in ``.ipfs`` written by the embedded content store, so
every CID is the one ``ipfs add`` gives. A few nodes carry the cases found in the field: tokens
whose block is missing or corrupt, an empty and an invalid token id, a hand-made database with
text statuses and fewer columns, ``.ipfs`` in the parent folder, a node with no repo, a database
that is not SQLite and one without ``TokensTable``.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rubix_integration._settings import resolve_settings
from rubix_integration.codecs import file_cid, parse_cid
from rubix_integration.ipfs._flatfs import FlatFS
from rubix_integration.ipfs.base import IPFSContext
from rubix_integration.ipfs.local import LocalBackend

__all__ = ["BROKEN_ON_PURPOSE", "Sample", "make_node", "make_sample"]

#: The sample's nodes that fail on purpose (whole databases, or some of their tokens' content),
#: with what is wrong with each.
BROKEN_ON_PURPOSE: dict[str, str] = {
    "node900-damaged": "missing and corrupt blocks, bad token ids",
    "node902-no-ipfs": "no IPFS repo",
    "node904-garbage": "not a SQLite database",
    "node905-no-tokens": "no TokensTable",
}

TOKENS_DDL = (
    'CREATE TABLE "TokensTable" ("token_id" text,"parent_token_id" text,"token_value" real,'
    '"did" text,"token_status" integer,"token_state_hash" text,"transaction_id" text,'
    '"added" numeric,"sync_status" integer,"created_at" datetime,"updated_at" datetime,'
    'PRIMARY KEY ("token_id"))'
)
FT_DDL = (
    'CREATE TABLE "FTTokenTable" ("token_id" text,"ft_name" text,"owner_did" text,'
    '"creator_did" text,"token_status" integer,"token_value" real,"token_state_hash" text,'
    '"transaction_id" text,"created_at" datetime,"updated_at" datetime,'
    'PRIMARY KEY ("token_id"))'
)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass
class Sample:
    """What :func:`make_sample` wrote: node folders and what a sync should find."""

    root: Path
    nodes: list[Path] = field(default_factory=list)
    tokens: int = 0
    expected_ok: int = 0
    broken_databases: int = 0


def fake_did(rng: random.Random) -> str:
    return "bafybmi" + "".join(rng.choice(_B32) for _ in range(52))


def gorm_time(when: datetime) -> str:
    """``2025-01-15 10:30:00.123456789+05:30``, as gorm writes time.Time into SQLite."""
    local = when.astimezone(timezone(timedelta(hours=5, minutes=30)))
    nanos = f"{local.microsecond:06d}{local.microsecond % 7:03d}"
    return local.strftime("%Y-%m-%d %H:%M:%S.") + nanos + "+05:30"


def _repo(ipfs_path: Path) -> LocalBackend:
    ipfs_path.mkdir(parents=True, exist_ok=True)
    (ipfs_path / "version").write_text("14\n")
    context = IPFSContext(settings=resolve_settings(env={}, data_dir=ipfs_path),
                          options={"local_path": str(ipfs_path)})
    return LocalBackend(context)


def make_node(
    node_dir: Path,
    contents: list[bytes],
    *,
    rng: random.Random,
    ft: int = 0,
    ipfs_path: Path | None = None,
    extra_token_ids: tuple[str, ...] = (),
    with_repo: bool = True,
) -> list[str]:
    """Create one node: its database holds one token per content (plus ``extra_token_ids``)
    and ``ft`` fungible tokens; the contents go into its repo. Return the token ids."""
    rubix = node_dir / "Rubix"
    rubix.mkdir(parents=True, exist_ok=True)
    repo = _repo(ipfs_path or node_dir / ".ipfs") if with_repo else None
    start = datetime(2025, 1, 15, 5, 0, tzinfo=timezone.utc)
    ids: list[str] = []
    for data in contents:
        ids.append(repo.add_bytes(data, pin=False) if repo is not None else _cid_of(data))
    ids.extend(extra_token_ids)
    conn = sqlite3.connect(rubix / "rubix.db")
    try:
        conn.execute(TOKENS_DDL)
        conn.execute(FT_DDL)
        did = fake_did(rng)
        rows = []
        for i, token_id in enumerate(ids):
            when = start + timedelta(minutes=i, microseconds=rng.randrange(10**6))
            rows.append((token_id, None if i % 3 else fake_did(rng), float(rng.choice((1, 0.5))),
                         did, rng.choice((0, 1, 2)), fake_did(rng), fake_did(rng)[:40],
                         i % 2, 1, gorm_time(when), gorm_time(when + timedelta(hours=1))))
        conn.executemany("INSERT INTO TokensTable VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        ft_rows = []
        for i in range(ft):
            data = f"FT{i} {i} {did}".encode()
            cid = repo.add_bytes(data, pin=False) if repo is not None else _cid_of(data)
            when = start + timedelta(hours=2, minutes=i)
            ft_rows.append((cid, "RBTFT", did, fake_did(rng), 0, 1.0, fake_did(rng),
                            fake_did(rng)[:40], gorm_time(when), gorm_time(when)))
        conn.executemany("INSERT OR IGNORE INTO FTTokenTable VALUES (?,?,?,?,?,?,?,?,?,?)",
                         ft_rows)
        conn.commit()
    finally:
        conn.close()
    return ids


def _cid_of(data: bytes) -> str:
    return str(file_cid(data))


def _token_text(name: str, number: int, rng: random.Random) -> bytes:
    return f"{name} {number} {fake_did(rng)}".encode()


def make_sample(
    root: Path,
    *,
    nodes: int = 4,
    tokens_per_node: int = 25,
    ft_per_node: int = 3,
    broken: bool = True,
    seed: int = 7,
    node_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sample:
    """Write ``nodes`` healthy nodes (and, with ``broken``, the field's failure cases) under
    ``root``. Deterministic for a given ``seed``.

    Each healthy node holds ``tokens_per_node`` tokens of its own, 3 tokens every node holds and
    ``ft_per_node`` fungible tokens; with ``node_tokens`` it holds exactly that many tokens in
    all (the shared ones first, then up to ``ft_per_node`` fungible ones, then its own).
    ``progress(done, total)`` is called after each node folder is written.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    sample = Sample(root)
    n_shared = 3
    if node_tokens is not None:
        n_shared = min(3, node_tokens)
        ft_per_node = min(ft_per_node, node_tokens - n_shared)
        tokens_per_node = node_tokens - n_shared - ft_per_node
    total = nodes + (len(BROKEN_ON_PURPOSE) + 2 if broken else 0)
    shared = [_token_text("RBT", n, rng) for n in range(n_shared)]
    for n in range(1, nodes + 1):
        node = root / f"node{n:03d}"
        contents = [_token_text("TRI", rng.randrange(10**6), rng) for _ in range(tokens_per_node)]
        contents += shared  # the same tokens held by every node
        make_node(node, contents, rng=rng, ft=ft_per_node)
        sample.nodes.append(node)
        sample.tokens += len(contents) + ft_per_node
        sample.expected_ok += len(contents) + ft_per_node
        if progress is not None:
            progress(n, total)
    if not broken:
        return sample

    # a node whose repo lost one block and has one corrupt block, plus bad token ids
    node = root / "node900-damaged"
    contents = [_token_text("TRI", i, rng) for i in range(6)]
    absent = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX"  # a valid CID nobody holds
    ids = make_node(node, contents, rng=rng, extra_token_ids=("", "not-a-cid", absent))
    store = FlatFS.open(node / ".ipfs" / "blocks")
    Path(store.path(parse_cid(ids[0]))).unlink()
    Path(store.path(parse_cid(ids[1]))).write_bytes(b"\x0a\x03bad")
    sample.nodes.append(node)
    sample.tokens += len(ids)
    sample.expected_ok += len(contents) - 2

    # .ipfs kept in the parent folder of the node
    parent = root / "cluster-a"
    node = parent / "node901-parent-ipfs"
    contents = [_token_text("TRI", i, rng) for i in range(4)]
    make_node(node, contents, rng=rng, ipfs_path=parent / ".ipfs")
    sample.nodes.append(node)
    sample.tokens += len(contents)
    sample.expected_ok += len(contents)

    # no IPFS repo at all
    node = root / "node902-no-ipfs"
    contents = [_token_text("TRI", i, rng) for i in range(3)]
    make_node(node, contents, rng=rng, with_repo=False)
    sample.nodes.append(node)
    sample.tokens += len(contents)

    # a hand-made database: fewer columns, text statuses, odd timestamps
    node = root / "node903-handmade"
    repo = _repo(node / ".ipfs")
    (node / "Rubix").mkdir(parents=True)
    conn = sqlite3.connect(node / "Rubix" / "rubix.db")
    conn.execute("CREATE TABLE TokensTable (token_id TEXT PRIMARY KEY, did TEXT, "
                 "token_status TEXT, created_at TEXT)")
    for i, stamp in enumerate(("2025-01-15T10:30:00Z", "yesterday", "", None)):
        cid = repo.add_bytes(_token_text("HND", i, rng), pin=False)
        conn.execute("INSERT INTO TokensTable VALUES (?,?,?,?)",
                     (cid, fake_did(rng), "active", stamp))
    conn.commit()
    conn.close()
    sample.nodes.append(node)
    sample.tokens += 4
    sample.expected_ok += 4

    # not a database, and a database without TokensTable
    node = root / "node904-garbage"
    (node / "Rubix").mkdir(parents=True)
    (node / "Rubix" / "rubix.db").write_bytes(b"this is not a database\n" * 10)
    node = root / "node905-no-tokens"
    (node / "Rubix").mkdir(parents=True)
    conn = sqlite3.connect(node / "Rubix" / "rubix.db")
    conn.execute("CREATE TABLE DIDTable (did TEXT)")
    conn.commit()
    conn.close()
    sample.broken_databases += 2
    if progress is not None:
        progress(total, total)
    return sample
