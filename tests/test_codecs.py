"""The pure codecs: CIDs, multihashes, dag-pb, UnixFS and the importer's DAG shape."""

from __future__ import annotations

import hashlib
import math
import random
import tracemalloc
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID as OracleCID
from multiformats import multihash as oracle_multihash

from rubix_integration.codecs import (
    CID,
    DAG_CBOR,
    DAG_JSON,
    DAG_PB,
    IDENTITY,
    RAW,
    SHA2_256,
    PBLink,
    PBNode,
    UnixFSData,
    b58_decode,
    b58_encode,
    decode_multihash,
    decode_pbnode,
    decode_unixfs,
    decode_uvarint,
    encode_multihash,
    encode_pbnode,
    encode_unixfs,
    encode_uvarint,
    import_bytes,
    import_directory,
    import_file,
    iter_file_blocks,
    multihash_digest,
    parse_cid,
    verify_block,
)
from rubix_integration.codecs._unixfs import DIRECTORY, FILE
from rubix_integration.errors import CorruptBlockError, InvalidCIDError

TRI_CID = "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf"
TRI_CID_V1 = "bafybeihqd7qttmkzbko5xdg4ntcbrrbyhcq52tr6u3co3z5oelpycjsooy"
FUZZ = settings(max_examples=400, deadline=timedelta(milliseconds=250))


# --- varints and bases ---------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_uvarint_round_trip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded + b"\xff", 0) == (value, len(encoded))


@pytest.mark.parametrize("bad", [b"", b"\x80", b"\xff" * 9 + b"\x01", b"\x80\x00"])
def test_uvarint_rejects_truncated_long_and_padded(bad: bytes) -> None:
    with pytest.raises(ValueError):
        decode_uvarint(bad, 0)


@given(st.binary(max_size=80))
def test_base58_round_trip(data: bytes) -> None:
    assert b58_decode(b58_encode(data)) == data


# --- CIDs ----------------------------------------------------------------------------------------


def test_cid_v0_parse_format_and_v1_conversion() -> None:
    cid = parse_cid(TRI_CID)
    assert (cid.version, cid.codec, cid.hash_code) == (0, DAG_PB, SHA2_256)
    assert str(cid) == TRI_CID
    assert str(cid.to_v1()) == TRI_CID_V1  # the CIDv1 ipfs_cid prints for the TRI text
    assert parse_cid(TRI_CID_V1).to_v0() == cid
    assert parse_cid(cid.to_v1().encode("base58btc")) == cid.to_v1()
    assert parse_cid(cid.to_v1().encode("base32upper")) == cid.to_v1()
    assert parse_cid(cid.to_bytes()) == cid
    assert CID.from_bytes(cid.to_v1().to_bytes()) == cid.to_v1()
    assert parse_cid(f"  {TRI_CID}\n") == cid


def test_cid_raw_codec_has_no_v0_form() -> None:
    raw = CID(1, RAW, multihash_digest(b"x"))
    with pytest.raises(InvalidCIDError):
        raw.to_v0()
    with pytest.raises(InvalidCIDError):
        parse_cid(TRI_CID).encode("base32")


@pytest.mark.parametrize("codec", [DAG_PB, RAW, DAG_CBOR, DAG_JSON])
@given(data=st.binary(max_size=64))
def test_cid_v1_text_matches_multiformats(codec: int, data: bytes) -> None:
    mh = multihash_digest(data)
    ours = CID(1, codec, mh)
    oracle = OracleCID("base32", 1, codec, oracle_multihash.wrap(hashlib.sha256(data).digest(),
                                                                  "sha2-256"))
    assert str(ours) == str(oracle)
    assert ours.encode("base58btc") == oracle.encode("base58btc")
    assert parse_cid(str(oracle)) == ours
    if codec == DAG_PB:
        assert str(ours.to_v0()) == str(oracle.set(version=0, base="base58btc"))


def test_identity_multihash() -> None:
    cid = CID(1, RAW, multihash_digest(b"hello", IDENTITY))
    assert parse_cid(str(cid)) == cid
    assert cid.digest == b"hello"
    verify_block(cid, b"hello")
    with pytest.raises(CorruptBlockError):
        verify_block(cid, b"hellO")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qm",
        "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3R0",  # 0 is not base58
        "QmeVzkYngV4otTyEdDHNCK4bZS8PJzwRDToWgECTkmL3Rf1",  # one character too many
        "bafy!!!",
        "bAFYBEIHQD7QTTMKZBKO5XDG4NTCBRRBYHCQ52TR6U3CO3Z5OELPYCJSOOY",  # mixed case
        "xyz",
        "zzzz",
        "b" + "a" * 7,
        "not a cid at all",
        # version 2 and an unknown codec (0x72 libp2p-key), both well-formed otherwise
        str(CID(1, RAW, multihash_digest(b"x"))).replace("bafk", "bafq", 1),
        CID(1, 0x72, multihash_digest(b"x")).encode(),
        # sha2-256 with a 31-byte digest
        CID(1, RAW, encode_multihash(SHA2_256, b"\1" * 31)).encode(),
    ],
)
def test_malformed_cid_text_is_classified(text: str) -> None:
    with pytest.raises(InvalidCIDError):
        parse_cid(text)


def test_parse_cid_rejects_other_types() -> None:
    with pytest.raises(InvalidCIDError):
        parse_cid(123)  # type: ignore[arg-type]


@FUZZ
@given(st.text(max_size=80))
def test_fuzz_cid_text(text: str) -> None:
    try:
        cid = parse_cid(text)
    except InvalidCIDError:
        return
    assert parse_cid(str(cid)) == cid


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_cid_bytes(data: bytes) -> None:
    try:
        cid = CID.from_bytes(data)
    except InvalidCIDError:
        return
    assert CID.from_bytes(cid.to_bytes()) == cid


def test_verify_block_detects_mismatch() -> None:
    cid = parse_cid(TRI_CID)
    with pytest.raises(CorruptBlockError):
        verify_block(cid, b"something else")
    code, digest = decode_multihash(cid.multihash)
    assert (code, len(digest)) == (SHA2_256, 32)


# --- dag-pb and UnixFS ---------------------------------------------------------------------------

_cids = st.builds(lambda d, v1: CID(1, RAW, multihash_digest(d)) if v1 else
                  CID(0, DAG_PB, multihash_digest(d)), st.binary(max_size=8), st.booleans())
_links = st.builds(PBLink, _cids, st.none() | st.text(max_size=20),
                   st.none() | st.integers(min_value=0, max_value=2**64 - 1))


@given(st.lists(_links, max_size=6), st.none() | st.binary(max_size=40))
def test_dagpb_round_trip(links: list[PBLink], data: bytes | None) -> None:
    block = encode_pbnode(links, data)
    assert decode_pbnode(block) == PBNode(tuple(links), data)
    assert encode_pbnode(*decode_pbnode(block)) == block


def test_dagpb_matches_kubo_bytes() -> None:
    # the TRI block exactly as kubo stored it (REAL_PEERS.md)
    text = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
    block = bytes.fromhex("0a4708021241") + text + bytes.fromhex("1841")
    node = decode_pbnode(block)
    assert node.links == ()
    assert decode_unixfs(node.data or b"") == UnixFSData(FILE, text, len(text))
    assert encode_pbnode((), encode_unixfs(FILE, data=text, filesize=len(text))) == block
    assert CID(0, DAG_PB, multihash_digest(block)) == parse_cid(TRI_CID)


@pytest.mark.parametrize(
    "block",
    [
        b"\x0a\x05abc",  # Data longer than the block
        b"\x0a\x01a\x0a\x01b",  # Data twice
        b"\x0a\x01a\x12\x00",  # Links after Data
        b"\x12\x00",  # a link without Hash
        b"\x12\x03\x0a\x01\x00",  # a link whose Hash is no CID
        b"\x1a\x00",  # unknown field 3
        b"\x0a",  # truncated length
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # overlong varint
    ],
)
def test_dagpb_rejects_malformed(block: bytes) -> None:
    with pytest.raises(CorruptBlockError):
        decode_pbnode(block)


@given(
    st.sampled_from([0, 1, 2, 3, 4, 5]),
    st.none() | st.binary(max_size=30),
    st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=5),
    st.none() | st.integers(min_value=0, max_value=2**20),
    st.none() | st.integers(min_value=0, max_value=0o7777),
    st.none() | st.tuples(st.integers(min_value=-(2**40), max_value=2**40),
                          st.integers(min_value=0, max_value=999_999_999)),
)
def test_unixfs_round_trip(type_: int, data: bytes | None, filesize: int | None,
                           blocksizes: list[int], fanout: int | None, mode: int | None,
                           mtime: tuple[int, int] | None) -> None:
    encoded = encode_unixfs(type_, data=data, filesize=filesize, blocksizes=blocksizes,
                            fanout=fanout, mode=mode, mtime=mtime)
    decoded = decode_unixfs(encoded)
    assert decoded == UnixFSData(type_, data, filesize, tuple(blocksizes), None, fanout, mode,
                                 mtime)


def test_unixfs_packed_blocksizes_and_errors() -> None:
    packed = b"\x08\x02\x22\x03\x01\x02\x03"
    assert decode_unixfs(packed).blocksizes == (1, 2, 3)
    for bad in (b"", b"\x12\x00", b"\x08\x09", b"\x08\x02\x50\x00", b"\x08\x02\x42\x02\x15\x00"):
        with pytest.raises(CorruptBlockError):
            decode_unixfs(bad)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_dagpb(block: bytes) -> None:
    try:
        node = decode_pbnode(block)
    except CorruptBlockError:
        return
    assert encode_pbnode(*node) == block or decode_pbnode(encode_pbnode(*node)) == node


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_unixfs(data: bytes) -> None:
    try:
        decoded = decode_unixfs(data)
    except CorruptBlockError:
        return
    assert decoded.type in range(6)


@FUZZ
@given(st.lists(_links, max_size=4), st.binary(max_size=40), st.integers(0, 400),
       st.integers(0, 255))
def test_fuzz_mutated_real_blocks(links: list[PBLink], data: bytes, index: int,
                                  value: int) -> None:
    # flip one byte of a valid block: the result decodes or is classified, never anything else
    block = bytearray(encode_pbnode(links, encode_unixfs(FILE, data=data, filesize=len(data))))
    block[index % len(block)] = value
    try:
        node = decode_pbnode(bytes(block))
        if node.data is not None:
            decode_unixfs(node.data)
    except CorruptBlockError:
        pass


# --- the importer --------------------------------------------------------------------------------


class _Blocks(dict[CID, bytes]):
    def sink(self, cid: CID, block: bytes) -> None:
        self[cid] = block


def _content(blocks: dict[CID, bytes], cid: CID) -> bytes:
    fs = decode_unixfs(decode_pbnode(blocks[cid]).data or b"")
    node = decode_pbnode(blocks[cid])
    return (fs.data or b"") + b"".join(_content(blocks, link.cid) for link in node.links)


def _depth(blocks: dict[CID, bytes], cid: CID) -> int:
    links = decode_pbnode(blocks[cid]).links
    return 0 if not links else 1 + _depth(blocks, links[0].cid)


@pytest.mark.parametrize("chunks", [0, 1, 2, 3, 4, 5, 9, 10, 12, 27, 28, 30, 82])
def test_importer_balanced_shape(chunks: int) -> None:
    # tiny chunks and 3 links per node show the shape: the first subtrees are full, the depth
    # is the smallest that fits, and a single chunk is its own root
    content = random.Random(chunks).randbytes(max(0, chunks * 4 - 1))
    blocks = _Blocks()
    reader = _Reader(content)
    root = import_file(reader, blocks.sink, chunk_size=4, max_links=3)
    assert _content(blocks, root.cid) == content
    assert root.filesize == len(content)
    assert root.tsize == sum(len(b) for b in blocks.values())
    expected_depth = 0 if chunks <= 1 else math.ceil(math.log(chunks, 3) - 1e-9)
    assert _depth(blocks, root.cid) == expected_depth
    node = decode_pbnode(blocks[root.cid])
    fs = decode_unixfs(node.data or b"")
    assert fs.filesize == len(content)
    if node.links:
        assert list(fs.blocksizes) == [
            decode_unixfs(decode_pbnode(blocks[link.cid]).data or b"").filesize
            for link in node.links
        ]
        assert [link.tsize for link in node.links] == [
            _tsize(blocks, link.cid) for link in node.links
        ]
        # every link but the last one is a full subtree
        full = 4 * 3 ** (expected_depth - 1)
        assert all(size == full for size in fs.blocksizes[:-1])


def _tsize(blocks: dict[CID, bytes], cid: CID) -> int:
    return len(blocks[cid]) + sum(_tsize(blocks, link.cid)
                                  for link in decode_pbnode(blocks[cid]).links)


class _Reader:
    """Reads in short, uneven pieces, like a pipe: the importer must still fill each chunk."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, size: int = -1, /) -> bytes:
        size = min(size, 3) if size > 0 else 3
        piece = self.data[self.pos : self.pos + size]
        self.pos += len(piece)
        return piece


def test_iter_file_blocks_ends_with_root() -> None:
    data = random.Random(5).randbytes(700_000)
    pairs = list(iter_file_blocks(_BytesIO(data)))
    blocks = {cid: block for cid, block in pairs}
    assert pairs[-1][0] == import_bytes(data, lambda c, b: None).cid
    assert _content(blocks, pairs[-1][0]) == data
    assert len(pairs) == 4  # three chunks and their parent


class _BytesIO:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def read(self, size: int = -1, /) -> bytes:
        piece = bytes(self.view[self.pos : self.pos + size])
        self.pos += len(piece)
        return piece


def test_directory_links_sorted_and_sized() -> None:
    blocks = _Blocks()
    a = import_bytes(b"a" * 10, blocks.sink)
    b = import_bytes(b"b", blocks.sink)
    root = import_directory([("zeta", a), ("Alpha", b), ("beta", a)], blocks.sink)
    node = decode_pbnode(blocks[root.cid])
    assert [link.name for link in node.links] == ["Alpha", "beta", "zeta"]
    assert [link.tsize for link in node.links] == [b.tsize, a.tsize, a.tsize]
    assert decode_unixfs(node.data or b"").type == DIRECTORY
    assert str(import_directory([], blocks.sink).cid) == \
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    with pytest.raises(ValueError):
        import_directory([("x", a), ("x", b)], blocks.sink)
    with pytest.raises(ValueError):
        import_directory([("a/b", a)], blocks.sink)


class _PseudoRandomStream:
    """50 MB of pseudo-random bytes, produced as read, never held whole."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.rng = random.Random(11)

    def read(self, size: int = -1, /) -> bytes:
        n = min(size, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def test_importer_memory_is_bounded_on_50_mb() -> None:
    count = 0

    def sink(cid: CID, block: bytes) -> None:
        nonlocal count
        count += 1

    tracemalloc.start()
    try:
        root = import_file(_PseudoRandomStream(50 * 1024 * 1024), sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert root.filesize == 50 * 1024 * 1024
    assert count == 200 + 2 + 1  # 200 leaves, two level-1 nodes, the root
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while importing 50 MB"


def _general_small_file(block: bytes) -> bytes | None:
    """What the general decoders make of ``block`` when it is a one-block file, else None."""
    from rubix_integration.codecs import decode_pbnode, decode_unixfs

    try:
        pb = decode_pbnode(block)
        if pb.links or pb.data is None:
            return None
        fs = decode_unixfs(pb.data)
    except CorruptBlockError:
        return None
    if fs.type != FILE or fs.blocksizes or fs.filesize != len(fs.data or b""):
        return None
    return fs.data or b""


@pytest.mark.parametrize("size", [0, 1, 70, 121, 122, 127, 128, 300])
def test_small_file_shortcut_reads_what_the_importer_writes(size: int) -> None:
    from rubix_integration.ipfs._dag import _small_file_data

    data = bytes(random.Random(size).randrange(256) for _ in range(size))
    blocks: list[bytes] = []
    import_bytes(data, lambda _cid, block: blocks.append(block))
    assert len(blocks) == 1
    fast = _small_file_data(blocks[0])
    assert _general_small_file(blocks[0]) == data
    # the shortcut covers blocks whose length prefixes are one byte: up to 121 content bytes
    if 0 < size <= 121:
        assert fast == data
    else:
        assert fast is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=140), st.integers(0, 139), st.integers(0, 255))
def test_small_file_shortcut_never_disagrees_with_the_decoders(
    payload: bytes, where: int, value: int
) -> None:
    from rubix_integration.ipfs._dag import _small_file_data

    blocks: list[bytes] = []
    import_bytes(payload[:120], lambda _cid, block: blocks.append(block))
    candidates = [payload, blocks[0]]
    mutated = bytearray(blocks[0])
    mutated[where % len(mutated)] = value
    candidates.append(bytes(mutated))
    for block in candidates:
        fast = _small_file_data(block)
        if fast is not None:
            assert fast == _general_small_file(block)
