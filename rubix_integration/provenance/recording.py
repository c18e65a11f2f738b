"""Appending to a chain: records encoded, linked and inserted with the caller's transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs import dagjson
from rubix_integration.codecs.clock import format_time
from rubix_integration.errors import InvalidDataError, PayloadTooLargeError
from rubix_integration.provenance.models import PROVENANCE_TABLE
from rubix_integration.provenance.records import MAX_RECORD_BYTES, ProvenanceRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from rubix_integration.provenance.logger import ProvenanceLogger

__all__ = ["Recording"]

_RAW_COLUMNS = ("cid", "chain", "seq", "prev", "type", "timestamp_us", "origin_node", "data",
                "block", "published")
# same name and columns as provenance_records, but data typed as text (never created)
_RAW_TABLE = sa.Table(
    PROVENANCE_TABLE.name, sa.MetaData(),
    *(sa.Column(c, sa.Text if c == "data" else PROVENANCE_TABLE.c[c].type) for c in _RAW_COLUMNS),
)
_MAX_TYPE_LENGTH = 200


class Recording:
    """Records being appended to one chain, committed together with the caller's transaction.

    Obtained from :meth:`ProvenanceLogger.recording`. :meth:`add` encodes and validates at once
    (so bad data fails before anything is written); :meth:`flush` inserts what was added into a
    transaction. The chain head advances, and hooks fire, only when the ``recording()`` block ends
    without an error, that is after the caller's transaction has committed.
    """

    def __init__(self, logger: ProvenanceLogger, head: tuple[str | None, int]) -> None:
        self._logger = logger
        self._prev, self._seq = head
        self.records: list[ProvenanceRecord] = []
        # rows in _RAW_COLUMNS order (data as JSON text), and each row's data as JSON values
        self._rows: list[tuple[Any, ...]] = []
        self._plain: list[Any] = []
        enc = dagjson._encode_str
        # the block's keys in order: chain, data, node, prev, seq, time, type
        self._block_start = '{"chain":' + enc(logger.chain) + ',"data":'
        self._block_node = ',"node":' + enc(logger.node_id) + ',"prev":'

    def add(self, type: str, data: Any, *, timestamp_us: int | None = None) -> ProvenanceRecord:
        """Encode one record after the ones already added; return it (not yet written)."""
        if not isinstance(type, str) or not type or len(type) > _MAX_TYPE_LENGTH:
            raise InvalidDataError(
                f"a record type must be non-empty text of at most {_MAX_TYPE_LENGTH} characters, "
                f"not {type!r}", path="type")
        data_bytes, json_data = dagjson.encode_plain(data)
        if len(data_bytes) > MAX_RECORD_BYTES:
            raise PayloadTooLargeError(
                f"record data is {len(data_bytes)} bytes encoded; the limit is "
                f"{MAX_RECORD_BYTES} bytes (store large content in IPFS and record its CID)",
                size=len(data_bytes), limit=MAX_RECORD_BYTES, path="data")
        logger = self._logger
        ts = logger.now_us() if timestamp_us is None else int(timestamp_us)
        seq = self._seq + 1
        prev = self._prev
        data_text = data_bytes.decode("utf-8")
        enc = dagjson._encode_str
        # a formatted time holds no character that JSON escapes
        block_text = (
            self._block_start + data_text + self._block_node
            + ("null" if prev is None else '{"/":' + enc(prev) + "}")
            + ',"seq":' + str(seq) + ',"time":"' + format_time(ts)
            + '","type":' + enc(type) + "}"
        )
        cid = dagjson.cid_text_for_block(block_text.encode("utf-8"))
        # only data holding links or bytes has "/" keys to turn back into CIDs and bytes
        revived = dagjson.from_json_form(json_data) if '"/"' in data_text else json_data
        chain, node = logger.chain, logger.node_id
        record = ProvenanceRecord(cid=cid, prev=prev, chain=chain, seq=seq, type=type,
                                  timestamp_us=ts, origin_node=node, data=revived)
        self._rows.append((cid, chain, seq, prev, type, ts, node, data_text, block_text, False))
        self._plain.append(json_data)
        self.records.append(record)
        self._prev, self._seq = cid, seq
        return record

    def flush(self, conn: Connection) -> None:
        """Insert every record added since the last flush into ``conn``'s transaction."""
        rows, self._rows = self._rows, []
        plain, self._plain = self._plain, []
        if not rows:
            return
        if len(rows) < 8:
            conn.execute(sa.insert(PROVENANCE_TABLE), [
                {**dict(zip(_RAW_COLUMNS, row, strict=True)), "data": data}
                for row, data in zip(rows, plain, strict=True)])
        else:
            # the data is already JSON text: a text-typed view of the table skips re-encoding,
            # and every value is one the drivers take as it is
            self._logger.store.bulk_insert(_RAW_TABLE, rows, columns=_RAW_COLUMNS,
                                           connection=conn, convert=False)

    @property
    def head(self) -> tuple[str | None, int]:
        return self._prev, self._seq

