"""CIDs and multihashes: parse, format, convert between versions, verify block bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from rubix_integration.codecs._bases import (
    b32_lower_encode,
    b58_decode,
    b58_encode,
    decode_uvarint,
    encode_uvarint,
    multibase_decode,
    multibase_encode,
)
from rubix_integration.errors import CorruptBlockError, InvalidCIDError

__all__ = [
    "CID",
    "CODEC_NAMES",
    "DAG_CBOR",
    "DAG_JSON",
    "DAG_PB",
    "HASH_NAMES",
    "IDENTITY",
    "RAW",
    "SHA2_256",
    "decode_multihash",
    "encode_multihash",
    "multihash_digest",
    "parse_cid",
    "verify_block",
]

DAG_PB = 0x70
RAW = 0x55
DAG_CBOR = 0x71
DAG_JSON = 0x0129
CODEC_NAMES: dict[int, str] = {
    DAG_PB: "dag-pb",
    RAW: "raw",
    DAG_CBOR: "dag-cbor",
    DAG_JSON: "dag-json",
}

IDENTITY = 0x00
SHA2_256 = 0x12
SHA2_512 = 0x13
SHA3_512 = 0x14
SHA3_256 = 0x16
BLAKE2B_256 = 0xB220
BLAKE2B_512 = 0xB240

_HASHERS: dict[int, tuple[Callable[[bytes], bytes], int]] = {
    SHA2_256: (lambda b: hashlib.sha256(b).digest(), 32),
    SHA2_512: (lambda b: hashlib.sha512(b).digest(), 64),
    SHA3_256: (lambda b: hashlib.sha3_256(b).digest(), 32),
    SHA3_512: (lambda b: hashlib.sha3_512(b).digest(), 64),
    BLAKE2B_256: (lambda b: hashlib.blake2b(b, digest_size=32).digest(), 32),
    BLAKE2B_512: (lambda b: hashlib.blake2b(b, digest_size=64).digest(), 64),
}
HASH_NAMES: dict[int, str] = {
    IDENTITY: "identity",
    SHA2_256: "sha2-256",
    SHA2_512: "sha2-512",
    SHA3_256: "sha3-256",
    SHA3_512: "sha3-512",
    BLAKE2B_256: "blake2b-256",
    BLAKE2B_512: "blake2b-512",
}
# kubo refuses to inline more than this into an identity CID; larger ones are not real content
MAX_IDENTITY_DIGEST = 128 * 1024

_V0_PREFIX = b"\x12\x20"


def encode_multihash(code: int, digest: bytes) -> bytes:
    """Build multihash bytes from a hash function code and a digest."""
    return encode_uvarint(code) + encode_uvarint(len(digest)) + digest


def decode_multihash(mh: bytes) -> tuple[int, bytes]:
    """Split multihash bytes into ``(code, digest)``; ``ValueError`` when malformed."""
    code, pos = decode_uvarint(mh, 0)
    length, pos = decode_uvarint(mh, pos)
    if len(mh) - pos != length:
        raise ValueError(f"multihash digest length {len(mh) - pos} does not match its header "
                         f"({length})")
    return code, mh[pos:]


def multihash_digest(data: bytes, code: int = SHA2_256) -> bytes:
    """Hash ``data`` and return the multihash bytes (``identity`` inlines the data)."""
    if code == SHA2_256:
        return _V0_PREFIX + hashlib.sha256(data).digest()
    if code == IDENTITY:
        return encode_multihash(IDENTITY, data)
    hasher = _HASHERS.get(code)
    if hasher is None:
        raise InvalidCIDError(f"unsupported hash function 0x{code:x}")
    return encode_multihash(code, hasher[0](data))


class CID(NamedTuple):
    """A content identifier: ``version`` (0 or 1), ``codec`` (multicodec) and ``multihash``.

    ``str(cid)`` gives the canonical text: base58btc ``Qm…`` for version 0, multibase base32
    ``b…`` for version 1.
    """

    version: int
    codec: int
    multihash: bytes

    @property
    def hash_code(self) -> int:
        """The multihash function code (``0x12`` for sha2-256, ``0`` for identity)."""
        mh = self.multihash
        if mh[0] < 0x80:
            return mh[0]
        return decode_uvarint(mh, 0)[0]

    @property
    def digest(self) -> bytes:
        """The hash digest (for identity: the inlined data)."""
        return decode_multihash(self.multihash)[1]

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")

    def to_bytes(self) -> bytes:
        """The binary form used inside blocks."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_uvarint(self.codec) + self.multihash

    def encode(self, base: str | None = None) -> str:
        """Format as text; ``base`` (``base32``, ``base58btc``, ...) is for version 1 only."""
        if self.version == 0:
            if base not in (None, "base58btc"):
                raise InvalidCIDError(f"a version 0 CID is always base58btc, not {base}")
            return b58_encode(self.multihash)
        if base is None or base == "base32":
            return "b" + b32_lower_encode(self.to_bytes())
        try:
            return multibase_encode(self.to_bytes(), base)
        except ValueError as exc:
            raise InvalidCIDError(str(exc)) from None

    def __str__(self) -> str:
        return _format(self)

    def to_v1(self) -> CID:
        """The version 1 CID of the same content."""
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def to_v0(self) -> CID:
        """The version 0 CID; only dag-pb with a sha2-256 hash has one."""
        if self.version == 0:
            return self
        if self.codec != DAG_PB or not self.multihash.startswith(_V0_PREFIX):
            raise InvalidCIDError(
                f"{self} has no version 0 form (needs dag-pb and sha2-256)", cid=str(self))
        return CID(0, DAG_PB, self.multihash)

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        """Decode the binary form; ``InvalidCIDError`` when malformed."""
        try:
            return _decode_binary(bytes(data))
        except ValueError as exc:
            raise InvalidCIDError(f"malformed binary CID: {exc}") from None


@lru_cache(maxsize=65536)
def _format(cid: CID) -> str:
    return cid.encode()


def _check_multihash(mh: bytes) -> None:
    code, digest = decode_multihash(mh)
    if code == IDENTITY:
        if len(digest) > MAX_IDENTITY_DIGEST:
            raise ValueError("identity multihash is too large")
        return
    hasher = _HASHERS.get(code)
    if hasher is None:
        raise ValueError(f"unsupported hash function 0x{code:x}")
    if len(digest) != hasher[1]:
        raise ValueError(f"{HASH_NAMES[code]} digest must be {hasher[1]} bytes, not {len(digest)}")


def _decode_binary(data: bytes, strict: bool = True) -> CID:
    if len(data) == 34 and data[0] == 0x12 and data[1] == 0x20:
        return CID(0, DAG_PB, data)
    version, pos = decode_uvarint(data, 0)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    codec, pos = decode_uvarint(data, pos)
    mh = data[pos:]
    if strict:
        if codec not in CODEC_NAMES:
            raise ValueError(f"unsupported codec 0x{codec:x}")
        _check_multihash(mh)
    else:
        decode_multihash(mh)
    return CID(1, codec, mh)


def decode_cid_bytes(data: bytes) -> CID:
    """Decode a binary CID found inside a block, whatever its codec and hash function.

    Only the structure is checked (``ValueError`` when malformed): a link to content this package
    cannot read does not make the block holding it unreadable.
    """
    return _decode_binary(data, strict=False)


@lru_cache(maxsize=65536)
def _parse_text(text: str) -> CID:
    if len(text) == 46 and text.startswith("Qm"):
        mh = b58_decode(text)
        if len(mh) != 34 or not mh.startswith(_V0_PREFIX):
            raise ValueError("not a sha2-256 multihash")
        return CID(0, DAG_PB, mh)
    if not text:
        raise ValueError("empty text")
    data = multibase_decode(text)
    if data[:1] == b"\x12":
        raise ValueError("a version 0 CID must be written in base58btc")
    return _decode_binary(data)


def parse_cid(value: str | bytes | CID) -> CID:
    """Parse CID text (``Qm…``, ``b…``, ``z…``, ...), binary CID bytes, or pass a CID through.

    Raises :class:`InvalidCIDError` for malformed input and for codecs or hash functions this
    package cannot read.
    """
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return _parse_text(text)
        except ValueError as exc:
            raise InvalidCIDError(f"invalid CID {value[:100]!r}: {exc}",
                                  cid=value[:100]) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return CID.from_bytes(bytes(value))
    raise InvalidCIDError(f"a CID must be text or bytes, not {type(value).__name__}")


def verify_block(cid: CID, data: bytes) -> None:
    """Raise :class:`CorruptBlockError` unless ``data`` hashes to ``cid``'s multihash."""
    mh = cid.multihash
    if mh[0] == SHA2_256 and mh[1] == 32:
        if hashlib.sha256(data).digest() == mh[2:]:
            return
    else:
        code, digest = decode_multihash(mh)
        if code == IDENTITY:
            if digest == data:
                return
        else:
            hasher = _HASHERS.get(code)
            if hasher is None:
                raise InvalidCIDError(f"{cid}: unsupported hash function 0x{code:x}",
                                      cid=str(cid))
            if hasher[0](data) == digest:
                return
    raise CorruptBlockError(f"block {cid} does not match its hash ({len(data)} bytes read)",
                            cid=str(cid))
