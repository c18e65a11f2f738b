"""CIDs and multihashes: parse, format, convert between versions, verify block bytes."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
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
    "MAX_CID_TEXT",
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
        if len(self.multihash) <= _CACHED_MULTIHASH:
            return _format(self)
        return self.encode()  # a large inline CID: not worth its room in the cache

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


# The caches below keep only CIDs of bounded size (every hash function's digest fits; large
# identity CIDs do not), so their entry limits bound their bytes: about 30 MiB at most each.
_CACHED_MULTIHASH = 80
_CACHED_TEXT = 160


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


def _max_binary_cid() -> int:
    """The byte length of the longest CID this package accepts: an identity CID at the inline
    limit, under the codec with the longest code."""
    codec = max(len(encode_uvarint(code)) for code in CODEC_NAMES)
    return 1 + codec + len(encode_multihash(IDENTITY, b"")) - 1 \
        + len(encode_uvarint(MAX_IDENTITY_DIGEST)) + MAX_IDENTITY_DIGEST


_MAX_CID_BYTES = _max_binary_cid()
# the longest text of a valid CID in each multibase (prefix included); text past it is refused
# before decoding, so hostile text costs no more than a valid CID
_MAX_TEXT = {
    "b": 1 + (_MAX_CID_BYTES * 8 + 4) // 5,
    "B": 1 + (_MAX_CID_BYTES * 8 + 4) // 5,
    "z": 2 + _MAX_CID_BYTES * 13658 // 10000,
    "f": 1 + 2 * _MAX_CID_BYTES,
    "F": 1 + 2 * _MAX_CID_BYTES,
    "m": 1 + (_MAX_CID_BYTES * 4 + 2) // 3,
    "u": 1 + (_MAX_CID_BYTES * 4 + 2) // 3,
}
MAX_CID_TEXT = max(_MAX_TEXT.values())
_V0_TEXT = 46


@lru_cache(maxsize=65536)
def _parse_short(text: str) -> CID:
    return _parse_text(text)


class _ByteBoundedCache:
    """The parses of long CID texts (large identity CIDs), least recently used dropped first once
    their texts and multihashes together pass ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[str, CID] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> CID | None:
        with self._lock:
            cid = self._items.get(text)
            if cid is not None:
                self._items.move_to_end(text)
            return cid

    def put(self, text: str, cid: CID) -> None:
        weight = len(text) + len(cid.multihash)
        if weight > self.budget // 4:
            return
        with self._lock:
            if text in self._items:
                return
            self._items[text] = cid
            self.size += weight
            while self.size > self.budget:
                old_text, old = self._items.popitem(last=False)
                self.size -= len(old_text) + len(old.multihash)


_LONG_PARSES = _ByteBoundedCache(8 * 2**20)


def _parse_text(text: str) -> CID:
    if text.startswith("Qm"):
        # only a version 0 CID starts so (Q is no multibase prefix): report its real defect
        mh = b58_decode(text[:_V0_TEXT + 1])
        if len(text) != _V0_TEXT:
            raise ValueError(f"a version 0 CID (Qm...) is {_V0_TEXT} base58btc characters, "
                             f"not {len(text)}")
        if len(mh) != 34 or not mh.startswith(_V0_PREFIX):
            raise ValueError("not a sha2-256 multihash")
        return CID(0, DAG_PB, mh)
    if not text:
        raise ValueError("empty text")
    limit = _MAX_TEXT.get(text[0])
    if limit is not None and len(text) > limit:
        raise ValueError(f"{len(text)} characters, longer than any CID in this base "
                         f"({limit}, an inline identity CID of {MAX_IDENTITY_DIGEST} bytes)")
    data = multibase_decode(text)
    if data[:1] == b"\x12":
        raise ValueError("a version 0 CID must be written in base58btc")
    return _decode_binary(data)


def parse_cid(value: str | bytes | CID) -> CID:
    """Parse CID text (``Qm…``, ``b…``, ``z…``, ...), binary CID bytes, or pass a CID through.

    Raises :class:`InvalidCIDError` for malformed input and for codecs or hash functions this
    package cannot read. Text longer than any valid CID (:data:`MAX_CID_TEXT` characters at most,
    less in the denser bases) is refused before it is decoded.
    """
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) <= _CACHED_TEXT:
                return _parse_short(text)
            cid = _LONG_PARSES.get(text)
            if cid is None:
                cid = _parse_text(text)
                _LONG_PARSES.put(text, cid)
            return cid
        except ValueError as exc:
            shown = value if len(value) <= 60 else value[:60] + "..."
            raise InvalidCIDError(f"{shown!r} is not a valid CID: {exc}",
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
