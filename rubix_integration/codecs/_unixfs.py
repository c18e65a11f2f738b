"""The UnixFS ``Data`` message carried in a dag-pb node's Data field.

Fields: Type (1), Data (2), filesize (3), blocksizes (4, repeated), hashType (5), fanout (6),
mode (7), mtime (8: seconds, fractional nanoseconds). Encoding writes them in field order, as kubo
does. Decoding also accepts packed blocksizes and rejects unknown fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rubix_integration.codecs._bases import decode_uvarint, encode_uvarint
from rubix_integration.errors import CorruptBlockError

__all__ = [
    "DIRECTORY",
    "FILE",
    "HAMT_SHARD",
    "METADATA",
    "RAW",
    "SYMLINK",
    "UnixFSData",
    "decode_unixfs",
    "encode_unixfs",
]

RAW = 0
DIRECTORY = 1
FILE = 2
METADATA = 3
SYMLINK = 4
HAMT_SHARD = 5
TYPE_NAMES = ("raw", "directory", "file", "metadata", "symlink", "hamt-shard")

_PB_VARINT = 10
_UINT64_MAX = (1 << 64) - 1


class UnixFSData(NamedTuple):
    """A decoded UnixFS ``Data`` message. ``mtime`` is ``(seconds, nanoseconds)``."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int] | None = None

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    b = buf[pos] if pos < end else -1
    if 0 <= b < 0x80:
        length, pos = b, pos + 1
    else:
        length, pos = decode_uvarint(buf, pos, _PB_VARINT)
    if pos + length > end:
        raise ValueError("length-delimited field runs past the end")
    return length, pos


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    b = buf[pos] if pos < end else -1
    if 0 <= b < 0x80:
        return b, pos + 1
    value, pos = decode_uvarint(buf, pos, _PB_VARINT)
    if pos > end or value > _UINT64_MAX:
        raise ValueError("varint runs past the end or exceeds 64 bits")
    return value, pos


def _decode_mtime(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    seconds = 0
    nanos = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == 0x08:
            seconds, pos = _varint(buf, pos, end)
            if seconds >= 1 << 63:
                seconds -= 1 << 64
        elif tag == 0x15:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            nanos = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unexpected UnixTime field (tag 0x{tag:02x})")
    return seconds, nanos


def decode_unixfs(buf: bytes) -> UnixFSData:
    """Decode a UnixFS Data message; raise :class:`CorruptBlockError` when it is not one."""
    try:
        type_: int | None = None
        data: bytes | None = None
        filesize: int | None = None
        blocksizes: list[int] = []
        hash_type: int | None = None
        fanout: int | None = None
        mode: int | None = None
        mtime: tuple[int, int] | None = None
        pos = 0
        end = len(buf)
        while pos < end:
            tag = buf[pos]
            pos += 1
            if tag == 0x08:
                type_, pos = _varint(buf, pos, end)
            elif tag == 0x12:
                length, pos = _length(buf, pos, end)
                data = buf[pos : pos + length]
                pos += length
            elif tag == 0x18:
                filesize, pos = _varint(buf, pos, end)
            elif tag == 0x20:
                size, pos = _varint(buf, pos, end)
                blocksizes.append(size)
            elif tag == 0x22:  # packed blocksizes
                length, pos = _length(buf, pos, end)
                stop = pos + length
                while pos < stop:
                    size, pos = _varint(buf, pos, stop)
                    blocksizes.append(size)
            elif tag == 0x28:
                hash_type, pos = _varint(buf, pos, end)
            elif tag == 0x30:
                fanout, pos = _varint(buf, pos, end)
            elif tag == 0x38:
                mode, pos = _varint(buf, pos, end)
            elif tag == 0x42:
                length, pos = _length(buf, pos, end)
                mtime = _decode_mtime(buf, pos, pos + length)
                pos += length
            else:
                raise ValueError(f"unexpected UnixFS field (tag 0x{tag:02x})")
        if type_ is None:
            raise ValueError("UnixFS Data without Type")
        if type_ > HAMT_SHARD:
            raise ValueError(f"unknown UnixFS type {type_}")
        return UnixFSData(type_, data, filesize, tuple(blocksizes), hash_type, fanout, mode, mtime)
    except (ValueError, IndexError) as exc:
        raise CorruptBlockError(f"not a UnixFS Data message: {exc}") from None


def encode_unixfs(
    type_: int,
    *,
    data: bytes | None = None,
    filesize: int | None = None,
    blocksizes: Sequence[int] = (),
    hash_type: int | None = None,
    fanout: int | None = None,
    mode: int | None = None,
    mtime: tuple[int, int] | None = None,
) -> bytes:
    """Encode a UnixFS Data message, fields in order, blocksizes unpacked (as kubo writes)."""
    parts = [b"\x08", encode_uvarint(type_)]
    if data is not None:
        parts += [b"\x12", encode_uvarint(len(data)), data]
    if filesize is not None:
        parts += [b"\x18", encode_uvarint(filesize)]
    for size in blocksizes:
        parts += [b"\x20", encode_uvarint(size)]
    if hash_type is not None:
        parts += [b"\x28", encode_uvarint(hash_type)]
    if fanout is not None:
        parts += [b"\x30", encode_uvarint(fanout)]
    if mode is not None:
        parts += [b"\x38", encode_uvarint(mode)]
    if mtime is not None:
        seconds, nanos = mtime
        body = b"\x08" + encode_uvarint(seconds & ((1 << 64) - 1))
        if nanos:
            body += b"\x15" + nanos.to_bytes(4, "little")
        parts += [b"\x42", encode_uvarint(len(body)), body]
    return b"".join(parts)
