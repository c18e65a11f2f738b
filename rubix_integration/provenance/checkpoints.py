"""Signed checkpoints: an anchor from outside the store for provenance chains.

A hash chain proves that its records fit together, not that it is whole: whoever can write to the
store can cut records off its end, or rewrite every record from some point on and recompute each
CID and link, and the chain still verifies. A checkpoint closes that gap for the records up to
it: a node signs, with its Ed25519 key, the head of a chain at one moment::

    {"chain":"…","head":{"/":"<CID of the head record>"},"key":{"/":{"bytes":"<public key>"}},
     "seq":N,"signature":{"/":{"bytes":"<64 bytes>"}},"time":"…Z",
     "type":"rubix-provenance-checkpoint/1"}

The signature covers the canonical DAG-JSON of every field but ``signature``. The block itself is
DAG-JSON linking the head, named by its CIDv1, stored in ``provenance_checkpoints`` (created when
first needed) and published with the records. :meth:`ProvenanceLogger.verify
<rubix_integration.provenance.ProvenanceLogger.verify>` then checks that each checkpoint was
signed by a trusted key and that the chain still holds the signed head at its place: a chain cut
below it, or rewritten, is reported.

A checkpoint anchors only what it signed: records appended after the latest checkpoint can still
be cut off unnoticed, and someone who can write to the store can delete the stored checkpoints
too. Export checkpoints (:meth:`Checkpoint.to_json`) or publish them to IPFS, and hand them back
to ``verify(checkpoints=...)``, to keep an anchor the store cannot take away.

Each node's key lives in its data dir (:data:`KEY_FILE_NAME`, PKCS#8 PEM, mode 0600, made on
first use) unless the caller gives one. The ``cryptography`` package is imported only here, on
first use.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs import CID, dagjson, parse_cid
from rubix_integration.errors import ConfigError, InvalidDataError
from rubix_integration.provenance._query import to_us

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from rubix_integration.provenance.records import ChainProblem
    from rubix_integration.stores.base import Store

__all__ = [
    "CHECKPOINT_TABLE",
    "CHECKPOINT_TYPE",
    "KEY_FILE_NAME",
    "Checkpoint",
    "check_all",
    "ensure_table",
    "key_path",
    "load_key",
    "load_or_create_key",
    "public_key_bytes",
    "sign",
    "signature_problem",
]

#: The ``type`` of a checkpoint block (and the domain its signatures belong to).
CHECKPOINT_TYPE = "rubix-provenance-checkpoint/1"
#: The node's signing key, in its data dir.
KEY_FILE_NAME = "provenance-ed25519.pem"

_FIELDS = frozenset({"chain", "head", "key", "seq", "signature", "time", "type"})
_ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: Stored checkpoints; ``block`` is the source of truth, the other columns serve lookups.
CHECKPOINT_TABLE = sa.Table(
    "provenance_checkpoints", sa.MetaData(),
    sa.Column("id", _ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("cid", sa.String(128), nullable=False, unique=True),
    sa.Column("chain", sa.String(128), nullable=False, index=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("head", sa.String(128), nullable=False),
    sa.Column("timestamp_us", sa.BigInteger, nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("block", sa.Text, nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that record ``seq`` of ``chain`` was ``head`` at ``timestamp_us``.

    ``public_key`` (32 bytes) is the key that signed; ``signature`` (64 bytes) covers
    :attr:`signed_bytes`. Build one with :meth:`ProvenanceLogger.checkpoint
    <rubix_integration.provenance.ProvenanceLogger.checkpoint>` or read one back with
    :meth:`from_json`.
    """

    chain: str
    seq: int
    head: str
    timestamp_us: int
    public_key: bytes
    signature: bytes

    def _fields(self) -> dict[str, Any]:
        from rubix_integration.codecs.clock import format_time

        return {"chain": self.chain, "head": parse_cid(self.head), "key": self.public_key,
                "seq": self.seq, "time": format_time(self.timestamp_us), "type": CHECKPOINT_TYPE}

    @property
    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical DAG-JSON of every field but ``signature``."""
        return dagjson.encode(self._fields())

    @property
    def block(self) -> bytes:
        """The checkpoint's DAG-JSON block (what IPFS stores under :attr:`cid`)."""
        return dagjson.encode({**self._fields(), "signature": self.signature})

    @property
    def cid(self) -> str:
        """The CIDv1 (dag-json, sha2-256) of :attr:`block`."""
        return dagjson.cid_text_for_block(self.block)

    def to_json(self) -> str:
        """The block as JSON text: all :meth:`from_json` needs to check the checkpoint later."""
        return self.block.decode("utf-8")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, keys and signature in hex."""
        from rubix_integration.codecs.clock import format_time

        return {"cid": self.cid, "chain": self.chain, "seq": self.seq, "head": self.head,
                "time": format_time(self.timestamp_us), "public_key": self.public_key.hex(),
                "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Read a checkpoint block; :class:`InvalidDataError` when it is not one.

        The signature is not checked here: :meth:`ProvenanceLogger.verify
        <rubix_integration.provenance.ProvenanceLogger.verify>` does, against trusted keys.
        """
        try:
            raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            value = dagjson.decode(raw)
        except (ValueError, TypeError, RecursionError) as exc:  # JSON, Unicode, links, bytes
            raise InvalidDataError(f"not a checkpoint: {str(exc)[:200]}",
                                   path="checkpoint") from None
        if not isinstance(value, dict) or set(value) != _FIELDS:
            found = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise InvalidDataError(f"not a checkpoint: it has {found}, not {sorted(_FIELDS)}",
                                   path="checkpoint")
        chain, head, key = value["chain"], value["head"], value["key"]
        seq, signature, time = value["seq"], value["signature"], value["time"]
        problems = []
        if value["type"] != CHECKPOINT_TYPE:
            problems.append(f"type is {value['type']!r}")
        if not isinstance(chain, str) or not 0 < len(chain) <= 128:
            problems.append("chain is not a name of 1 to 128 characters")
        if not isinstance(head, CID):
            problems.append("head is not a link")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            problems.append("seq is not a whole number")
        if not isinstance(key, bytes) or len(key) != 32:
            problems.append("key is not 32 bytes")
        if not isinstance(signature, bytes) or len(signature) != 64:
            problems.append("signature is not 64 bytes")
        try:
            timestamp_us = to_us(time) if isinstance(time, str) else None
        except ValueError:
            timestamp_us = None
        if timestamp_us is None:
            problems.append("time is not an ISO 8601 time")
        if problems:
            raise InvalidDataError(f"not a checkpoint: {'; '.join(problems)}", path="checkpoint")
        assert timestamp_us is not None
        return cls(chain=chain, seq=seq, head=str(head), timestamp_us=timestamp_us,
                   public_key=key, signature=signature)


# --- keys ------------------------------------------------------------------------------------


def key_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where a node keeps its signing key."""
    return Path(data_dir) / KEY_FILE_NAME


def load_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``; :class:`ConfigError` when it is unusable."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    mode = path.stat().st_mode
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(
            f"the provenance signing key {path} can be read by others (mode {mode & 0o777:o}); "
            f"chmod 600 {path}, or replace the key if others may have read it",
            name="provenance signing key", value=str(path))
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} does not hold an unencrypted Ed25519 private key in PEM: "
                          f"{exc}", name="provenance signing key", value=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key",
                          name="provenance signing key", value=str(path))
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``, made first if there is none (readable by its owner only)."""
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole under a temporary name, then linked into place: a concurrent first use
        # sees either no key or a complete one, and the first link wins
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    return load_key(path)


def public_key_bytes(key: Any) -> bytes:
    """The 32 raw bytes of a public key given as bytes, hex text, or a key object (public or
    private)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            raise ConfigError(f"a public key in hex must be 64 hex digits, not {key[:80]!r}",
                              name="trusted key") from None
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise ConfigError(f"not an Ed25519 public key: {str(key)[:80]!r} (give 32 bytes, 64 hex "
                      "digits or a key object)", name="trusted key")


def private_key(key: Any) -> Ed25519PrivateKey:
    """An Ed25519 private key given as a key object or its 32-byte seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(key))
    raise ConfigError(f"a signing key must be an Ed25519PrivateKey or its 32-byte seed, not "
                      f"{type(key).__name__}", name="signing key")


# --- signing and checking --------------------------------------------------------------------


def sign(key: Ed25519PrivateKey, *, chain: str, seq: int, head: str,
         timestamp_us: int) -> Checkpoint:
    """A checkpoint of ``head`` (record ``seq`` of ``chain``) signed with ``key``."""
    unsigned = Checkpoint(chain=chain, seq=seq, head=head, timestamp_us=timestamp_us,
                          public_key=public_key_bytes(key), signature=b"")
    return Checkpoint(chain=chain, seq=seq, head=head, timestamp_us=timestamp_us,
                      public_key=unsigned.public_key, signature=key.sign(unsigned.signed_bytes))


def signature_problem(checkpoint: Checkpoint, trusted: Iterable[bytes]) -> str | None:
    """Why ``checkpoint`` cannot be trusted, or ``None`` when a trusted key signed it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if checkpoint.public_key not in set(trusted):
        return (f"it is signed by key {checkpoint.public_key.hex()}, which is not trusted here "
                "(pass it in trusted_keys= if it belongs to a node you trust)")
    public: Ed25519PublicKey = Ed25519PublicKey.from_public_bytes(checkpoint.public_key)
    try:
        public.verify(checkpoint.signature, checkpoint.signed_bytes)
    except InvalidSignature:
        return "its signature does not match its content (forged or altered)"
    return None


# --- storage ---------------------------------------------------------------------------------


def ensure_table(store: Store) -> None:
    """Create ``provenance_checkpoints`` when it is missing."""
    try:
        CHECKPOINT_TABLE.create(store.engine, checkfirst=True)
    except sa.exc.DBAPIError:
        # another process created it between the check and the create
        if not has_table(store):
            raise


def has_table(store: Store) -> bool:
    with store.connect() as conn:
        return bool(sa.inspect(conn).has_table(CHECKPOINT_TABLE.name))


def insert(store: Store, checkpoint: Checkpoint) -> None:
    with store.transaction() as conn:
        conn.execute(sa.insert(CHECKPOINT_TABLE).values(
            cid=checkpoint.cid, chain=checkpoint.chain, seq=checkpoint.seq,
            head=checkpoint.head, timestamp_us=checkpoint.timestamp_us,
            public_key=checkpoint.public_key.hex(), block=checkpoint.to_json(), published=False))


def stored(store: Store, chain: str | None = None) -> list[tuple[str, str, int, str]]:
    """``(cid, chain, seq, block)`` of the stored checkpoints (of ``chain``), oldest first."""
    if not has_table(store):
        return []
    t = CHECKPOINT_TABLE
    query = sa.select(t.c.cid, t.c.chain, t.c.seq, t.c.block).order_by(t.c.id)
    if chain is not None:
        query = query.where(t.c.chain == chain)
    with store.connect() as conn:
        return [(str(r.cid), str(r.chain), int(r.seq), str(r.block))
                for r in conn.execute(query)]


def head_of(conn: sa.Connection, chain: str) -> tuple[str, int, str] | None:
    """``(cid, seq, block)`` of the last record of ``chain``."""
    from rubix_integration.provenance.models import PROVENANCE_TABLE as t

    row = conn.execute(sa.select(t.c.cid, t.c.seq, t.c.block).where(t.c.chain == chain)
                       .order_by(t.c.seq.desc()).limit(1)).first()
    return None if row is None else (str(row.cid), int(row.seq), str(row.block))



def check_all(
    store: Store, chain: str | None, given: Iterable[Checkpoint],
    trusted: Callable[[], set[bytes]],
) -> tuple[dict[str, list[Checkpoint]], list[ChainProblem], int]:
    """Check the stored checkpoints (of ``chain``) and ``given`` ones against the keys
    ``trusted()`` returns (asked only when there is a checkpoint): the valid ones by chain, a
    problem for each other one, and how many were checked."""
    from rubix_integration.provenance.records import ChainProblem

    problems: list[ChainProblem] = []
    found: dict[str, Checkpoint] = {}
    unreadable = 0
    for stored_cid, stored_chain, stored_seq, block in stored(store, chain):
        try:
            checkpoint = Checkpoint.from_json(block)
        except InvalidDataError as exc:
            unreadable += 1
            problems.append(ChainProblem("checkpoint", stored_chain, stored_seq, stored_cid,
                                         f"stored checkpoint {stored_cid}: {exc}"))
            continue
        # the block is what was signed: its CID, not the stored column, names it
        found[checkpoint.cid] = checkpoint
    for checkpoint in given:
        if chain is None or checkpoint.chain == chain:
            found.setdefault(checkpoint.cid, checkpoint)
    if not found:
        return {}, problems, unreadable
    keys = trusted()
    anchors: dict[str, list[Checkpoint]] = {}
    for checkpoint in found.values():
        problem = signature_problem(checkpoint, keys)
        if problem is None:
            anchors.setdefault(checkpoint.chain, []).append(checkpoint)
        else:
            problems.append(ChainProblem("checkpoint", checkpoint.chain, checkpoint.seq,
                                         checkpoint.cid, f"checkpoint {checkpoint.cid}: {problem}"))
    return anchors, problems, len(found) + unreadable
