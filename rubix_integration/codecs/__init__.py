"""Pure codecs for IPFS content: CIDs, multihashes, dag-pb, UnixFS and a kubo-compatible importer
(files, and directories plain or HAMT-sharded).

Nothing here does I/O of its own; decoders raise :class:`~rubix_integration.errors.InvalidCIDError`
for bad CID text and :class:`~rubix_integration.errors.CorruptBlockError` for bad block bytes.
"""

from __future__ import annotations

from rubix_integration.codecs._bases import (
    b32_upper_encode,
    b58_decode,
    b58_encode,
    decode_uvarint,
    encode_uvarint,
    multibase_decode,
    multibase_encode,
)
from rubix_integration.codecs._cid import (
    CID,
    DAG_CBOR,
    DAG_JSON,
    DAG_PB,
    IDENTITY,
    RAW,
    SHA2_256,
    decode_cid_bytes,
    decode_multihash,
    encode_multihash,
    multihash_digest,
    parse_cid,
    verify_block,
)
from rubix_integration.codecs._dagpb import PBLink, PBNode, decode_pbnode, encode_pbnode
from rubix_integration.codecs._hamt import SHARDING_THRESHOLD, build_hamt, hamt_hash
from rubix_integration.codecs._importer import (
    CHUNK_SIZE,
    MAX_LINKS,
    BlockSink,
    ImportedNode,
    file_cid,
    import_bytes,
    import_directory,
    import_file,
    import_symlink,
    iter_file_blocks,
)
from rubix_integration.codecs._unixfs import UnixFSData, decode_unixfs, encode_unixfs

__all__ = [
    "CHUNK_SIZE",
    "CID",
    "DAG_CBOR",
    "DAG_JSON",
    "DAG_PB",
    "IDENTITY",
    "MAX_LINKS",
    "RAW",
    "SHA2_256",
    "SHARDING_THRESHOLD",
    "BlockSink",
    "ImportedNode",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "b32_upper_encode",
    "b58_decode",
    "b58_encode",
    "build_hamt",
    "decode_cid_bytes",
    "decode_multihash",
    "decode_pbnode",
    "decode_unixfs",
    "decode_uvarint",
    "encode_multihash",
    "encode_pbnode",
    "encode_unixfs",
    "encode_uvarint",
    "file_cid",
    "hamt_hash",
    "import_bytes",
    "import_directory",
    "import_file",
    "import_symlink",
    "iter_file_blocks",
    "multibase_decode",
    "multibase_encode",
    "multihash_digest",
    "parse_cid",
    "verify_block",
]
