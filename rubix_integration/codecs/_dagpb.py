"""The dag-pb codec: ``PBNode { Links: [PBLink{Hash, Name, Tsize}], Data }``.

Encoding is canonical, as kubo writes it: every link first (each with Hash, Name, Tsize in that
order), then Data. Decoding accepts only the fields dag-pb defines, with their proper wire types;
anything else raises :class:`CorruptBlockError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rubix_integration.codecs._bases import decode_uvarint, encode_uvarint
from rubix_integration.codecs._cid import CID, decode_cid_bytes
from rubix_integration.errors import CorruptBlockError

__all__ = ["PBLink", "PBNode", "decode_pbnode", "encode_pbnode"]

# protobuf varints are at most 10 bytes (64 bits)
_PB_VARINT = 10


class PBLink(NamedTuple):
    """One dag-pb link: the child's CID, its name (``""`` in file nodes) and cumulative size."""

    cid: CID
    name: str | None = None
    tsize: int | None = None


class PBNode(NamedTuple):
    """A decoded dag-pb node."""

    links: tuple[PBLink, ...]
    data: bytes | None


def _bytes_field(block: bytes, pos: int, end: int) -> tuple[bytes, int]:
    start, stop = _bytes_field_end(block, pos, end)
    return block[start:stop], stop


def _decode_link(block: bytes, pos: int, end: int) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < end:
        tag = block[pos]
        pos += 1
        if tag == 0x0A and cid is None and name is None and tsize is None:
            raw, pos = _bytes_field(block, pos, end)
            cid = decode_cid_bytes(raw)
        elif tag == 0x12 and name is None and tsize is None:
            raw, pos = _bytes_field(block, pos, end)
            name = raw.decode("utf-8")
        elif tag == 0x18 and tsize is None:
            tsize, pos = decode_uvarint(block, pos, _PB_VARINT)
            if pos > end:
                raise ValueError("Tsize runs past the end of the link")
        else:
            raise ValueError(f"unexpected or repeated PBLink field (tag 0x{tag:02x})")
    if cid is None:
        raise ValueError("PBLink without Hash")
    return PBLink(cid, name, tsize)


def decode_pbnode(block: bytes) -> PBNode:
    """Decode a dag-pb block; raise :class:`CorruptBlockError` when it is not one."""
    try:
        links: list[PBLink] = []
        data: bytes | None = None
        pos = 0
        end = len(block)
        while pos < end:
            tag = block[pos]
            pos += 1
            if tag == 0x12:
                if data is not None:
                    raise ValueError("Links after Data")
                start, pos = _bytes_field_end(block, pos, end)
                links.append(_decode_link(block, start, pos))
            elif tag == 0x0A and data is None:
                data, pos = _bytes_field(block, pos, end)
            else:
                raise ValueError(f"unexpected or repeated PBNode field (tag 0x{tag:02x})")
        return PBNode(tuple(links), data)
    except (ValueError, IndexError) as exc:
        # UnicodeDecodeError is a ValueError too
        raise CorruptBlockError(f"not a dag-pb block: {exc}") from None


def _bytes_field_end(block: bytes, pos: int, end: int) -> tuple[int, int]:
    # inline fast path for the one-byte length that almost every field has
    b = block[pos] if pos < end else -1
    if 0 <= b < 0x80:
        length, pos = b, pos + 1
    else:
        length, pos = decode_uvarint(block, pos, _PB_VARINT)
    stop = pos + length
    if stop > end:
        raise ValueError("length-delimited field runs past the end")
    return pos, stop


def _len_prefixed(tag: bytes, payload: bytes) -> bytes:
    return tag + encode_uvarint(len(payload)) + payload


def encode_pbnode(links: Sequence[PBLink], data: bytes | None) -> bytes:
    """Encode a dag-pb node canonically (links in the given order, then Data)."""
    parts: list[bytes] = []
    for link in links:
        body = _len_prefixed(b"\x0a", link.cid.to_bytes())
        if link.name is not None:
            body += _len_prefixed(b"\x12", link.name.encode("utf-8"))
        if link.tsize is not None:
            body += b"\x18" + encode_uvarint(link.tsize)
        parts.append(_len_prefixed(b"\x12", body))
    if data is not None:
        parts.append(_len_prefixed(b"\x0a", data))
    return b"".join(parts)
