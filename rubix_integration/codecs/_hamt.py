"""HAMT-sharded UnixFS directories, laid out exactly as kubo (v0.22, default settings) lays them.

When to shard: kubo estimates a plain directory's size as the sum, over its links, of the entry
name's UTF-8 length plus the child CID's byte length (34 for CIDv0). A directory whose estimate
reaches :data:`SHARDING_THRESHOLD` (256 KiB, the threshold value itself included) is sharded.

The shard tree: every entry name is hashed with MurmurHash3 x64 128 (seed 0); the first 64-bit
half of the digest, read most significant byte first, supplies the bucket index of each level
(byte ``d`` at depth ``d``, since the fanout is 256 = 8 bits). A bucket holding one entry is a
link named ``"%02X" % index + name`` to the entry itself; a bucket holding several is a link named
``"%02X" % index`` to a child shard built the same way one level down. Links are in index order.

A shard node's UnixFS Data has Type HAMTShard, Data = the occupancy bitfield (bit ``i`` set when
bucket ``i`` is used, as a big-endian integer without leading zero bytes), hashType 0x22
(murmur3-x64-64) and fanout 256; no filesize. Every link's Tsize is the cumulative size of the
DAG under it, as for plain directories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import mmh3

from rubix_integration.codecs._cid import CID, DAG_PB
from rubix_integration.codecs._dagpb import PBLink, encode_pbnode
from rubix_integration.codecs._unixfs import HAMT_SHARD, encode_unixfs

__all__ = [
    "HAMT_FANOUT",
    "HAMT_HASH_MURMUR3",
    "SHARDING_THRESHOLD",
    "build_hamt",
    "estimated_directory_size",
    "hamt_hash",
    "needs_sharding",
]

SHARDING_THRESHOLD = 256 * 1024
HAMT_FANOUT = 256
HAMT_HASH_MURMUR3 = 0x22

_INDEX_BITS = 8  # log2(HAMT_FANOUT)
_HASH_BITS = 64
_MAX_DEPTH = _HASH_BITS // _INDEX_BITS
_PREFIXES = [f"{i:02X}" for i in range(HAMT_FANOUT)]


def hamt_hash(name: bytes) -> int:
    """The 64-bit value whose bytes, most significant first, index the shard levels: the first
    half (h1) of MurmurHash3 x64 128 of ``name`` with seed 0."""
    h1: int = mmh3.hash64(name, seed=0, x64arch=True, signed=False)[0]
    return h1


def estimated_directory_size(links: Sequence[PBLink]) -> int:
    """kubo's size estimate of a plain directory: name bytes plus CID bytes over all links."""
    return sum(len((link.name or "").encode("utf-8")) + len(link.cid.to_bytes())
               for link in links)


def needs_sharding(links: Sequence[PBLink], threshold: int = SHARDING_THRESHOLD) -> bool:
    """Whether kubo would store a directory with these links as a HAMT (``threshold`` 0: never)."""
    return threshold > 0 and estimated_directory_size(links) >= threshold


# an entry to place: its name's hash and its link (name unprefixed)
_Entry = tuple[int, PBLink]


def build_hamt(links: Sequence[PBLink], sink: Callable[[CID, bytes], None]) -> tuple[CID, int]:
    """Build the HAMT of a directory whose entries are ``links`` (named, each with its Tsize).

    Every shard block goes to ``sink``; return the root's CID and the cumulative size of the
    whole DAG (the Tsize a parent link to it carries).
    """
    entries: list[_Entry] = []
    for link in links:
        if not link.name:
            raise ValueError("a HAMT directory entry needs a name")
        entries.append((hamt_hash(link.name.encode("utf-8")), link))
    return _shard(entries, 0, sink)


def _shard(entries: list[_Entry], depth: int,
           sink: Callable[[CID, bytes], None]) -> tuple[CID, int]:
    if depth >= _MAX_DEPTH:
        names = sorted(link.name or "" for _, link in entries)
        raise ValueError(f"HAMT too deep: entries {names[:4]} share all 64 hash bits")
    shift = _HASH_BITS - _INDEX_BITS * (depth + 1)
    buckets: dict[int, list[_Entry]] = {}
    for entry in entries:
        buckets.setdefault((entry[0] >> shift) & (HAMT_FANOUT - 1), []).append(entry)
    out: list[PBLink] = []
    bitfield = 0
    cumulative = 0
    for index in sorted(buckets):
        bucket = buckets[index]
        bitfield |= 1 << index
        if len(bucket) == 1:
            link = bucket[0][1]
            tsize = link.tsize or 0
            out.append(PBLink(link.cid, _PREFIXES[index] + (link.name or ""), tsize))
        else:
            child, tsize = _shard(bucket, depth + 1, sink)
            out.append(PBLink(child, _PREFIXES[index], tsize))
        cumulative += tsize
    # an empty bitfield (no entries at all) is left out, as kubo leaves it out
    occupied = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big") if bitfield else None
    data = encode_unixfs(HAMT_SHARD, data=occupied, hash_type=HAMT_HASH_MURMUR3,
                         fanout=HAMT_FANOUT)
    block = encode_pbnode(out, data)
    cid = CID(0, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest())
    sink(cid, block)
    return cid, len(block) + cumulative
