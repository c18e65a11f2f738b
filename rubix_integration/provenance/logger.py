"""The provenance log: content-addressed, hash-chained records in the configured store.

Each record is one canonical DAG-JSON block (see :mod:`rubix_integration.codecs.dagjson`)::

    {"chain":"…","data":{…},"node":"<store node id>","prev":{"/":"<previous CID>"}|null,
     "seq":N,"time":"2025-01-02T03:04:05.123456Z","type":"…"}

named by its CIDv1 (dag-json codec, sha2-256). Records form hash chains: each links the CID of
the record before it in the same chain. Every logger writes its own chain (a random id unless
``chain=`` names one), so writers on many machines never wait for one another; :meth:`verify`
checks every chain. A named chain is resumed from its last stored record; two loggers writing one
named chain at once are refused by a unique constraint rather than forking it.

A chain alone cannot show that records were cut off its end, or that every record from some point
on was rewritten with fresh CIDs and links: :meth:`ProvenanceLogger.checkpoint` signs the chain's
head with the node's key so that :meth:`~ProvenanceLogger.verify` can (see
:mod:`rubix_integration.provenance.checkpoints`).

Records live in the store first (``provenance_records``); :meth:`ProvenanceLogger.publish` pushes
their blocks to an IPFS node when one is available, and :meth:`ProvenanceLogger.status` says how
many are local only. Each committed record is announced through the ``provenance_recorded`` hook.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from rubix_integration.codecs import CID, dagjson, parse_cid
from rubix_integration.codecs.clock import now_us
from rubix_integration.errors import (
    InvalidCIDError,
    InvalidDataError,
    RecordNotFoundError,
    StoreError,
)
from rubix_integration.ipfs.base import IPFSBackend
from rubix_integration.provenance._lookup import (
    NAMED_BLOCK,
    NAMED_RECORD,
    column_conditions,
    record_from_row,
    rows_named,
)
from rubix_integration.provenance._query import check_window, parse_filters
from rubix_integration.provenance.models import PROVENANCE_TABLE
from rubix_integration.provenance.publishing import ipfs_mode, push_blocks
from rubix_integration.provenance.recording import Recording
from rubix_integration.provenance.records import (
    MAX_RECORD_BYTES,
    ChainProblem,
    ProvenanceRecord,
    VerifyReport,
)
from rubix_integration.stores.base import Store, StoreRef

#: ``notify(hook_name, **kwargs)``: fire an event hook.
Notify = Callable[..., object]
#: The store primitives the provenance log writes and queries through.
NEEDS = ("bulk_insert", "json")


def host_listening(host: object) -> Callable[[str], bool] | None:
    """Whether a plugin of ``host`` implements a hook (``None`` when the host cannot say)."""
    relay = getattr(host, "hook", None)
    if relay is None:
        return None

    def listening(name: str) -> bool:
        hook = getattr(relay, name, None)
        return hook is not None and bool(hook.get_hookimpls())

    return listening


def _host_probe(host: object) -> Callable[[], tuple[str, bool]] | None:
    choose = getattr(host, "choose_ipfs", None)
    available = getattr(host, "is_ipfs_available", None)
    if choose is None or available is None:
        return None
    return lambda: (str(choose().name), bool(available()))

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from rubix_integration._host import Host
    from rubix_integration._settings import Settings
    from rubix_integration.provenance.checkpoints import Checkpoint

__all__ = [
    "MAX_RECORD_BYTES",
    "ChainProblem",
    "ProvenanceLogger",
    "ProvenanceRecord",
    "Recording",
    "VerifyReport",
]



class ProvenanceLogger:
    """Append, query, verify, publish and export provenance records.

    ``store`` is where records live (or a callable opening it on first use); ``ipfs`` the
    backend :meth:`publish` pushes to (or a callable giving it); ``settings`` locate the node's
    key; ``notify(hook_name, **kwargs)`` fires the
    ``provenance_recorded`` event (``listening(hook_name)`` says whether anyone listens, so that
    nothing is built for nobody); ``clock`` gives microseconds since the epoch; ``node_id``
    defaults to the store's. A host object (the Manager) may stand in for ``store``: everything
    not given is then taken from it (see :meth:`from_host`). ``chain`` names the chain this
    logger writes (resumed from the store); by default every logger starts a chain of its own.
    Without ``store``, or with a config mapping in its place or as ``config=``
    (``ProvenanceLogger()``, ``ProvenanceLogger({"store_url": ...})``, keys as for
    :class:`~rubix_integration.DatasetsManager`), the logger opens the default store itself,
    writes each record there first and then pushes it to the IPFS node when one is reachable
    (``record.published``); :meth:`close` releases what it opened.
    ``signing_key`` (an Ed25519 private key, or its 32-byte seed) signs checkpoints; by default
    the node's key in the data dir, made on first use. ``trusted_keys`` are the public keys (32
    bytes or 64 hex digits) of other nodes whose checkpoints :meth:`verify` accepts, besides this
    logger's own. Safe to share between threads of one process.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store] | Host | Mapping[str, Any] | None = None,
        *,
        ipfs: IPFSBackend | Callable[[], IPFSBackend] | None = None,
        settings: Settings | None = None,
        notify: Notify | None = None,
        listening: Callable[[str], bool] | None = None,
        clock: Callable[[], int] = now_us,
        node_id: str | None = None,
        ipfs_probe: Callable[[], tuple[str, bool]] | None = None,
        chain: str | None = None,
        signing_key: Ed25519PrivateKey | bytes | None = None,
        trusted_keys: Iterable[bytes | str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if config is not None:
            if store is not None:
                raise ValueError("give a store (or Manager), or config=, not both")
            store = config
        self._owned: Any = None
        self._publish_each = False
        if store is None or isinstance(store, Mapping):
            # the datasets API's ProvenanceLogger(config): the default store, local first, each
            # record pushed to the IPFS node when there is one
            from rubix_integration.datasets._config import manager_from_config

            store = self._owned = manager_from_config(store)
            self._publish_each = True
        if isinstance(store, Store) or callable(store):  # open, or opened on first use
            self._store = StoreRef(store, NEEDS, by="the provenance log")
        else:  # a host (the Manager): take from it what was not given
            host = store
            self._store = StoreRef(lambda: host.store, NEEDS, by="the provenance log")
            settings = settings if settings is not None else host.settings
            ipfs = ipfs if ipfs is not None else host.ipfs
            notify = notify if notify is not None else host.notify
            listening = listening if listening is not None else host_listening(host)
            ipfs_probe = ipfs_probe if ipfs_probe is not None else _host_probe(host)
        self._ipfs = ipfs
        self._settings = settings
        self._notify = notify
        self._listening = listening
        self._clock = clock
        self._ipfs_probe = ipfs_probe
        self._signing_key = signing_key
        self._trusted_keys = tuple(trusted_keys)
        self.chain = chain if chain is not None else uuid.uuid4().hex
        if not self.chain or len(self.chain) > 128:
            raise ValueError("a chain name must be 1 to 128 characters")
        self._named = chain is not None
        self._lock = threading.RLock()
        self._head: tuple[str | None, int] | None = None if self._named else (None, -1)
        self._node_id: str | None = node_id

    @classmethod
    def from_host(cls, host: Host, **kwargs: Any) -> ProvenanceLogger:
        """A logger on what ``host`` (the Manager) offers: its store, IPFS, settings, hooks."""
        return cls(host, **kwargs)

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._store()

    @property
    def node_id(self) -> str:
        """The id of the store this logger writes to (recorded as ``node`` in every block)."""
        if self._node_id is None:
            self._node_id = self.store.node_id
        return self._node_id

    def now_us(self) -> int:
        """The time this logger stamps records with (microseconds since the epoch)."""
        return self._clock()

    def _data_dir(self) -> Path:
        if self._settings is None:
            raise StoreError("the provenance log has no settings to find the node's key in; "
                             "pass settings= or signing_key=")
        return self._settings.data_dir

    def _load_head(self) -> tuple[str | None, int]:
        t = PROVENANCE_TABLE
        with self.store.connect() as conn:
            row = conn.execute(
                sa.select(t.c.cid, t.c.seq).where(t.c.chain == self.chain)
                .order_by(t.c.seq.desc()).limit(1)).first()
        return (None, -1) if row is None else (str(row.cid), int(row.seq))

    @contextmanager
    def recording(self) -> Iterator[Recording]:
        """Append records atomically with the caller's own writes (see :class:`Recording`)::

            with logger.recording() as rec, store.transaction() as conn:
                ...  # the caller's writes
                rec.add("event", {...})
                rec.flush(conn)
        """
        with self._lock:
            _ = self.node_id
            if self._head is None:
                self._head = self._load_head()
            rec = Recording(self, self._head)
            try:
                yield rec
            except sa.exc.IntegrityError as exc:
                self._head = None if self._named else self._head
                raise StoreError(
                    f"provenance chain {self.chain!r}: another writer appended to it at the same "
                    f"time; nothing was written, retry: {' '.join(str(exc.orig).split())}",
                    backend=self.store.name) from exc
            if rec.records:
                self._head = rec.head
        self._announce(rec.records)

    def _announce(self, records: Sequence[ProvenanceRecord]) -> None:
        if not records:
            return
        notify, listening = self._notify, self._listening
        if notify is None or (listening is not None and not listening("provenance_recorded")):
            return
        for record in records:
            notify("provenance_recorded", record=record.as_dict())

    # --- appending -----------------------------------------------------------------------------

    def append(self, type: str, data: Any) -> ProvenanceRecord:
        """Append one record of ``type`` with ``data``; return it once committed."""
        return self.append_many([(type, data)])[0]

    def append_many(self, items: Sequence[tuple[str, Any]]) -> list[ProvenanceRecord]:
        """Append many records in one transaction (the fast path); all or nothing."""
        with self.recording() as rec:
            for type_, data in items:
                rec.add(type_, data)
            with self.store.transaction() as conn:
                rec.flush(conn)
        if self._publish_each:
            from rubix_integration.datasets.manager import publish_records

            publish_records(self._owned)
        return list(rec.records)

    def log_event(self, type: str, data: Any) -> str:
        """Record an event of any ``type``; return the record's CID."""
        return self.append(type, data).cid

    def track_provenance(self, operation: str, data: Mapping[str, Any]) -> str:
        """Record that ``operation`` happened (type ``operation``); return the CID."""
        return self.append("operation", _merge({"operation": operation}, data)).cid

    def log_inference(self, model: str, data: Mapping[str, Any]) -> str:
        """Record a model inference (type ``inference``, ``data.model`` = ``model``)."""
        return self.append("inference", _merge({"model": model}, data)).cid

    def log_transformation(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        input_cid: str | CID | Sequence[str | CID] | None = None,
        output_cid: str | CID | Sequence[str | CID] | None = None,
    ) -> str:
        """Record a transformation of content (type ``transformation``).

        ``input_cid`` and ``output_cid`` (one CID or several) are stored as IPLD links, so the
        block links the content it speaks of; ``params`` are the transformation's parameters.
        """
        payload: dict[str, Any] = {"name": name, "params": dict(params or {})}
        if input_cid is not None:
            payload["input"] = _links(input_cid, "input_cid")
        if output_cid is not None:
            payload["output"] = _links(output_cid, "output_cid")
        return self.append("transformation", payload).cid

    def log_worker_execution(self, worker_id: str, task_id: str,
                             data: Mapping[str, Any]) -> str:
        """Record a worker's run of a task (type ``worker_execution``)."""
        return self.append("worker_execution",
                           _merge({"worker_id": worker_id, "task_id": task_id}, data)).cid

    def log_pr_activity(self, number: int, kind: str, data: Mapping[str, Any]) -> str:
        """Record activity on a pull request (type ``pr_activity``; ``data.pr_number`` holds
        ``number``, ``data.kind`` the ``kind``)."""
        return self.append("pr_activity",
                           _merge({"pr_number": number, "kind": kind}, data)).cid

    # --- reading -------------------------------------------------------------------------------

    def get(self, cid: str | CID) -> ProvenanceRecord:
        """The record named ``cid``; :class:`RecordNotFoundError` when there is none."""
        try:
            text = str(parse_cid(cid))
        except InvalidCIDError as exc:
            raise RecordNotFoundError(f"no provenance record {str(cid)[:100]!r}: {exc}",
                                      cid=str(cid)[:100]) from exc
        with self.store.connect() as conn:
            rows = rows_named(conn, text, NAMED_RECORD, first=True)
        if not rows:
            raise RecordNotFoundError(f"no provenance record {text}", cid=text)
        return record_from_row(rows[0])

    def get_block(self, cid: str | CID) -> bytes:
        """The exact DAG-JSON bytes of record ``cid`` (what IPFS stores under that CID)."""
        text = str(parse_cid(cid))
        with self.store.connect() as conn:
            rows = rows_named(conn, text, NAMED_BLOCK, first=True)
        if not rows:
            raise RecordNotFoundError(f"no provenance record {text}", cid=text)
        return str(rows[0].block).encode("utf-8")

    def query_logs(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = 100,
        since: datetime | str | float | None = None,
        until: datetime | str | float | None = None,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[ProvenanceRecord]:
        """Records matching every filter, newest first by default.

        ``filters`` maps ``type``, ``chain``, ``origin_node``, ``cid``, ``prev`` or ``published``
        to a value, or ``"data.<dotted.path>"`` (or ``"data"`` with a nested mapping) to a scalar
        the field inside the data must equal. Any other key is the name of a top-level field of
        the data: ``{"type": "inference", "model": "bert"}`` finds inferences whose
        ``data["model"]`` is ``"bert"``. ``since`` (inclusive) and ``until`` (exclusive) are
        datetimes (naive means UTC), ISO text or epoch seconds. ``limit=None`` returns all.

        Everything is checked before the store is asked (see
        :mod:`~rubix_integration.provenance._query` for the rules): integers compared with the
        data lie in the signed 64-bit range, floats are finite, text holds no NUL, ``limit`` and
        ``offset`` are whole numbers from 0. A filter that breaks a rule raises
        :class:`~rubix_integration.errors.InvalidFilterError`, the same on every store.
        """
        t = PROVENANCE_TABLE
        columns, paths = parse_filters(filters)
        limit, offset, since_us, until_us = check_window(
            limit=limit, offset=offset, since=since, until=until)
        store = self.store
        query = sa.select(t)
        for path, value in paths.items():
            query = query.where(store.json_path_equals(t.c.data, path, value))
        if since_us is not None:
            query = query.where(t.c.timestamp_us >= since_us)
        if until_us is not None:
            query = query.where(t.c.timestamp_us < until_us)
        if newest_first:
            query = query.order_by(t.c.timestamp_us.desc(), t.c.id.desc())
        else:
            query = query.order_by(t.c.timestamp_us, t.c.id)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self.store.connect() as conn:
            rows = conn.execute(query.where(*column_conditions(conn, columns))).all()
        return [record_from_row(r) for r in rows]

    def count(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many records match ``filters`` (as in :meth:`query_logs`)."""
        t = PROVENANCE_TABLE
        columns, paths = parse_filters(filters)
        store = self.store
        query = sa.select(sa.func.count()).select_from(t)
        for path, value in paths.items():
            query = query.where(store.json_path_equals(t.c.data, path, value))
        with self.store.connect() as conn:
            return int(conn.execute(query.where(*column_conditions(conn, columns))).scalar_one())

    def chains(self) -> list[str]:
        """Every chain id in the store."""
        t = PROVENANCE_TABLE
        with self.store.connect() as conn:
            return [str(c) for c in conn.execute(
                sa.select(t.c.chain).distinct().order_by(t.c.chain)).scalars()]

    # --- verification --------------------------------------------------------------------------

    def verify(self, *, chain: str | None = None, checkpoints: Iterable[Checkpoint] = (),
               trusted_keys: Iterable[bytes | str] = ()) -> VerifyReport:
        """Recompute every CID and link; report each altered, removed or reordered record.

        Then check every checkpoint, the stored ones and ``checkpoints`` (for example read back
        with :meth:`Checkpoint.from_json <.checkpoints.Checkpoint.from_json>` from where they were
        exported): each must be signed by a trusted key (this logger's, or one of its
        ``trusted_keys`` or of ``trusted_keys`` here), and its chain must still hold the signed
        head at the signed place. The report names the chains no checkpoint anchors.
        """
        from rubix_integration.provenance._verify import verify_rows
        from rubix_integration.provenance.checkpoints import check_all

        anchors, problems, checked = check_all(
            self.store, chain, checkpoints, lambda: self._trusted(trusted_keys))
        t = PROVENANCE_TABLE
        query = sa.select(t.c.cid, t.c.chain, t.c.seq, t.c.prev, t.c.type, t.c.timestamp_us,
                          t.c.origin_node, t.c.data, t.c.block)
        if chain is not None:
            query = query.where(t.c.chain == chain)
        query = query.order_by(t.c.chain, t.c.seq, t.c.id)
        with self.store.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(query)
            report = verify_rows(result, anchors=anchors,
                                 numeric=self.store.json_numbers_as_numeric)
        return VerifyReport(records=report.records, chains=report.chains,
                            problems=tuple(problems) + report.problems, checkpoints=checked,
                            unanchored=report.unanchored)

    # --- checkpoints ---------------------------------------------------------------------------

    def _key(self) -> Ed25519PrivateKey:
        from rubix_integration.provenance import checkpoints as cps

        with self._lock:
            key = self._signing_key
            if key is None:
                key = cps.load_or_create_key(cps.key_path(self._data_dir()))
            else:
                key = cps.private_key(key)
            self._signing_key = key
            return key

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key this logger signs checkpoints with (made on first use); give
        it to the nodes that should trust this one's checkpoints."""
        from rubix_integration.provenance.checkpoints import public_key_bytes

        return public_key_bytes(self._key())

    def _trusted(self, extra: Iterable[bytes | str]) -> set[bytes]:
        from rubix_integration.provenance import checkpoints as cps

        trusted = {cps.public_key_bytes(k) for k in (*self._trusted_keys, *extra)}
        if self._signing_key is not None:
            trusted.add(self.public_key)
        else:  # this node's own key, if it has one: verifying makes none
            path = cps.key_path(self._data_dir())
            if path.exists():
                trusted.add(cps.public_key_bytes(cps.load_key(path)))
        return trusted

    def checkpoint(self, *, chain: str | None = None) -> Checkpoint:
        """Sign the head of ``chain`` (this logger's by default) and store the checkpoint.

        The head is the chain's last stored record, whose block must hash to its CID. Export the
        result (:meth:`Checkpoint.to_json <.checkpoints.Checkpoint.to_json>`) or :meth:`publish`
        it to keep an anchor outside the store. :class:`RecordNotFoundError` when the chain has
        no records.
        """
        from rubix_integration.provenance import checkpoints as cps

        name = self.chain if chain is None else chain
        key = self._key()
        with self.store.connect() as conn:
            head = cps.head_of(conn, name)
        if head is None:
            raise RecordNotFoundError(f"provenance chain {name!r} has no records to checkpoint")
        cid, seq, block = head
        if dagjson.cid_text_for_block(block.encode("utf-8")) != cid:
            raise StoreError(
                f"provenance chain {name!r}: its last record {cid} does not match its CID; "
                "run verify() before signing it", backend=self.store.name)
        checkpoint = cps.sign(key, chain=name, seq=seq, head=cid, timestamp_us=self.now_us())
        cps.ensure_table(self.store)
        cps.insert(self.store, checkpoint)
        return checkpoint

    def checkpoints(self, *, chain: str | None = None) -> list[Checkpoint]:
        """The stored checkpoints (of ``chain``), oldest first, as they are (unchecked)."""
        from rubix_integration.provenance import checkpoints as cps

        out: list[Checkpoint] = []
        for _, _, _, block in cps.stored(self.store, chain):
            try:
                out.append(cps.Checkpoint.from_json(block))
            except InvalidDataError:
                continue  # verify() reports it
        return out

    # --- IPFS ----------------------------------------------------------------------------------

    def publish(self, backend: IPFSBackend | None = None, *, batch: int = 500,
                timeout: float | None = None) -> int:
        """Push the blocks of every unpublished record, then of every unpublished checkpoint, to
        IPFS; return how many blocks were pushed.

        ``backend`` defaults to the Manager's chosen IPFS backend. Each block is stored under its
        CID (``block put`` with the dag-json codec) and the record is marked published. A
        checkpoint goes after the records, so that the head it links is there before it.
        """
        from rubix_integration.provenance import checkpoints as cps

        target = backend if backend is not None else self._backend()
        pushed = push_blocks(self.store, target, PROVENANCE_TABLE, batch, timeout)
        if cps.has_table(self.store):
            pushed += push_blocks(self.store, target, cps.CHECKPOINT_TABLE, batch, timeout)
        return pushed

    def _backend(self) -> IPFSBackend:
        ipfs = self._ipfs
        if ipfs is None:
            raise StoreError("no IPFS backend was handed to this logger; pass one to publish()")
        return ipfs if isinstance(ipfs, IPFSBackend) else ipfs()

    def status(self) -> dict[str, Any]:
        """Records held, how many are published to IPFS, and where publishing would go."""
        t = PROVENANCE_TABLE
        with self.store.connect() as conn:
            total, published = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(
                    sa.func.sum(sa.case((t.c.published.is_(True), 1), else_=0)), 0))
            ).one()
        out: dict[str, Any] = {
            "records": int(total),
            "published": int(published),
            "local_only": int(total) - int(published),
            "chain": self.chain,
            "store": self.store.name,
        }
        out.update(ipfs_mode(self._ipfs_probe))
        return out

    # --- export --------------------------------------------------------------------------------

    def export_prov(self, filters: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """A :class:`prov.model.ProvDocument` of the matching records (see ``prov_export``)."""
        from rubix_integration.provenance.prov_export import to_prov_document

        records = self.query_logs(filters, limit=None, newest_first=False, **kwargs)
        return to_prov_document(records)

    def export_prov_json(self, filters: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """W3C PROV-JSON text of the matching records."""
        return str(self.export_prov(filters, **kwargs).serialize(format="json"))

    def close(self) -> None:
        """Close the store this logger opened itself (one handed to it is left open)."""
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> ProvenanceLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ProvenanceLogger chain={self.chain!r}>"



def _merge(fixed: dict[str, Any], data: Mapping[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return fixed
    if not isinstance(data, Mapping):
        raise InvalidDataError(f"data must be a mapping, not {type(data).__name__}", path="data")
    out = dict(data)
    for key, value in fixed.items():
        if key in out and out[key] != value:
            raise InvalidDataError(
                f"data[{key!r}] is set by the call itself ({value!r}); remove it from data",
                path=f"data[{key!r}]")
        out[key] = value
    return out


def _links(value: str | CID | Sequence[str | CID], name: str) -> CID | list[CID]:
    def one(v: str | CID) -> CID:
        try:
            return parse_cid(v)
        except InvalidCIDError as exc:
            raise InvalidDataError(f"{name}: {exc}", path=name) from exc

    if isinstance(value, (str, CID)):
        return one(value)
    return [one(v) for v in value]
