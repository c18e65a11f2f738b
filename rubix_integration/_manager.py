"""The :class:`Manager` facade: settings, plugins, the chosen backends, ``status()``."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rubix_integration._plugin_settings import PluginSettings
from rubix_integration._plugins import Plugins, check_plugin_settings
from rubix_integration._settings import Settings, mask_url, resolve_settings
from rubix_integration._status import ComponentStatus, Status
from rubix_integration.errors import (
    ConfigError,
    IPFSUnavailableError,
    PluginError,
    RubixError,
    UnknownStoreError,
)
from rubix_integration.ipfs._factory import BackendFactory
from rubix_integration.ipfs.base import AddResult, DirEntry, IPFSBackend, IPFSContext, IPFSDetection

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from typing import Literal

    import pluggy

    from rubix_integration.codecs import CID
    from rubix_integration.importer import ImportReport, Progress
    from rubix_integration.pins import PinState
    from rubix_integration.provenance import (
        Checkpoint,
        ProvenanceLogger,
        ProvenanceRecord,
        VerifyReport,
    )
    from rubix_integration.replication import Replication
    from rubix_integration.stores.analytics import Analytics
    from rubix_integration.stores.base import Store  # imported with the store's class
    from rubix_integration.tokens.results import SyncObserver, SyncSummary
    from rubix_integration.workflow import Task, WorkflowCoordinator

    #: One CID, or several, as the provenance log links them.
    CIDs = str | CID | Sequence[str | CID]

log = logging.getLogger("rubix_integration")

__all__ = ["IPFSChoice", "Manager", "connect", "status"]

FALLBACK_BACKEND = "local"


@dataclass(frozen=True)
class IPFSChoice:
    """The IPFS backend chosen for one repo path, the reason, and every candidate's detection."""

    ipfs_path: Path | None
    name: str
    reason: str
    candidates: Mapping[str, IPFSDetection]
    fallbacks: tuple[str, ...] = ()

    @property
    def backend_name(self) -> str:
        """The chosen backend, then its fallbacks, as :meth:`Manager.ipfs` builds it."""
        return "+".join((self.name, *self.fallbacks))


class Manager:
    """One entry point to everything the package does.

    Nothing heavy happens at construction: settings are resolved, plugins loaded and backends
    detected on first use. Keyword arguments override environment variables and the config file
    (see :func:`rubix_integration.resolve_settings` for the names). ``plugins`` are extra plugin
    objects registered after the built-ins; ``load_plugins`` selects installed entry-point plugins
    (``None`` all, ``()`` none) and overrides ``RUBIX_LOAD_PLUGINS``.

    Use as a context manager, or call :meth:`close`, to release backends.
    """

    def __init__(
        self,
        *,
        plugins: Iterable[object] = (),
        env: Mapping[str, str] | None = None,
        **settings: object,
    ) -> None:
        self._extra_plugins = tuple(plugins)
        self._env = env
        # checked by resolve_settings, which names any keyword it does not know
        self._settings_kwargs: dict[str, Any] = dict(settings)
        self._lock = threading.RLock()
        self._ipfs_factory: BackendFactory | None = None
        self._choices: dict[Path | None, IPFSChoice] = {}
        self._store: Store | None = None
        self._started = False
        self._checked_plugin_settings: dict[str, PluginSettings] | None = None
        self._warned: set[str] = set()
        self.warnings: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, plugins: Iterable[object] = ()) -> Manager:
        """A Manager using already resolved ``settings`` (e.g. handed to a worker process)."""
        manager = cls(plugins=plugins)
        manager.__dict__["settings"] = settings
        return manager

    # --- configuration and plugins ---------------------------------------------------------------

    @cached_property
    def settings(self) -> Settings:
        """The resolved, immutable settings."""
        return resolve_settings(self._env, **self._settings_kwargs)

    @cached_property
    def plugins(self) -> Plugins:
        """The plugin manager with built-in, installed and given plugins loaded."""
        return Plugins(load_plugins=self.settings.load_plugins, extra=self._extra_plugins)

    @property
    def has_runtime_plugins(self) -> bool:
        """Whether the host passed plugin objects (which another process cannot rebuild)."""
        return bool(self._extra_plugins)

    @property
    def hook(self) -> pluggy.HookRelay:
        """The pluggy hook relay (``manager.hook.<name>(...)``)."""
        hook: pluggy.HookRelay = self.plugins.hook
        return hook

    def notify(self, hook_name: str, **arguments: object) -> list[PluginError]:
        """Fire an event hook with ``arguments`` (and ``manager``); a failing plugin is logged
        with its name, never raised."""
        return self.plugins.notify(hook_name, manager=self, **arguments)

    def _warn(self, message: str) -> None:
        if message in self._warned:
            return
        self._warned.add(message)
        self.warnings.append(message)
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    # --- IPFS ------------------------------------------------------------------------------------

    def _context(self, ipfs_path: Path | None) -> IPFSContext:
        return self.ipfs_factory.context(ipfs_path)

    @property
    def ipfs_factory(self) -> BackendFactory:
        """What builds (and keeps) this Manager's IPFS backends by name; it pickles, so a worker
        process can rebuild the backends it uses."""
        with self._lock:
            if self._ipfs_factory is None:
                self._ipfs_factory = BackendFactory(self.settings, self.plugins.ipfs_backends())
            return self._ipfs_factory

    def _resolve_path(self, ipfs_path: Path | str | None) -> Path | None:
        return Path(ipfs_path) if ipfs_path is not None else self.settings.ipfs_path

    def choose_ipfs(self, ipfs_path: Path | str | None = None) -> IPFSChoice:
        """Decide which IPFS backend serves ``ipfs_path`` (default: the configured repo), and why.

        Honours ``RUBIX_INTEGRATION_ENABLED`` and ``RUBIX_IPFS``; in ``auto`` every registered
        backend is detected and the ``choose_ipfs_backend`` hook picks one.
        """
        path = self._resolve_path(ipfs_path)
        with self._lock:
            if path in self._choices:
                return self._choices[path]
        choice = self._choose_ipfs(path)
        with self._lock:
            self._choices.setdefault(path, choice)
            return self._choices[path]

    def _choose_ipfs(self, path: Path | None) -> IPFSChoice:
        s = self.settings
        backends = self.plugins.ipfs_backends()
        context = self._context(path)
        mode_source = s.origin("ipfs_mode")
        if s.ipfs_mode != "auto" and s.ipfs_mode not in backends:
            allowed = ("auto", *backends)
            raise ConfigError(
                f"{_setting_label(s, 'ipfs_mode')}: {s.ipfs_mode!r} is not one of "
                f"{', '.join(allowed)}", name=_setting_label(s, "ipfs_mode"), value=s.ipfs_mode,
                allowed=allowed, source=s.sources.get("ipfs_mode"))
        if not s.ipfs_enabled:
            name = FALLBACK_BACKEND if s.ipfs_mode in ("auto", FALLBACK_BACKEND) else s.ipfs_mode
            if name != FALLBACK_BACKEND:
                self._warn(f"{mode_source} is ignored: RUBIX_INTEGRATION_ENABLED=0 allows only "
                           "the embedded fallback")
                name = FALLBACK_BACKEND
            candidates = {
                n: (_detect(cls, context) if n == name else
                    IPFSDetection(False, "not tried: RUBIX_INTEGRATION_ENABLED=0"))
                for n, cls in backends.items()
            }
            return IPFSChoice(path, name, "RUBIX_INTEGRATION_ENABLED=0: embedded fallback only",
                              candidates)
        if s.ipfs_mode != "auto":
            candidates = {
                n: (_detect(cls, context) if n == s.ipfs_mode else
                    IPFSDetection(False, f"not tried: {mode_source}"))
                for n, cls in backends.items()
            }
            det = candidates[s.ipfs_mode]
            reason = f"requested by {mode_source}"
            if not det.available:
                reason += f", but unavailable: {det.reason}"
                self._warn(f"IPFS backend {s.ipfs_mode!r} {reason}")
            return IPFSChoice(path, s.ipfs_mode, reason, candidates)

        candidates = {n: _detect(cls, context) for n, cls in backends.items()}
        picked = self.hook.choose_ipfs_backend(settings=s, ipfs_path=path, candidates=candidates)
        if picked is None or picked not in backends:
            picked = FALLBACK_BACKEND
        det = candidates[picked]
        how = "auto" if det.available else "auto (forced by a plugin)"
        reason = f"{how}: {det.reason}"
        # what the fastest backend lacks (blocks not on disk), the others may still serve
        fallbacks = tuple(n for n, d in candidates.items()
                          if d.available and n not in (picked, FALLBACK_BACKEND))
        if picked != FALLBACK_BACKEND and fallbacks:
            reason += f"; content it lacks is read through {', then '.join(fallbacks)}"
        else:
            fallbacks = ()
        if picked == FALLBACK_BACKEND:
            reason = "auto: no other backend can serve; " + det.reason
            if s.enabled == "1":
                self._warn("RUBIX_INTEGRATION_ENABLED=1 but no IPFS node can be reached for "
                           f"{path}; using the embedded content store")
        return IPFSChoice(path, picked, reason, candidates, fallbacks)

    def ipfs(self, ipfs_path: Path | str | None = None, *,
             backend: str | None = None) -> IPFSBackend:
        """The IPFS backend serving ``ipfs_path`` (default: the configured repo), built once.

        ``backend`` names the backend to use instead of the one :meth:`choose_ipfs` picks;
        ``"repo+http"`` chains backends (see :class:`~rubix_integration.ipfs.FallbackBackend`).
        """
        path = self._resolve_path(ipfs_path)
        name = backend if backend is not None else self.choose_ipfs(path).backend_name
        return self.ipfs_factory(name, path)

    def is_ipfs_available(self) -> bool:
        """Whether a real IPFS node (anything but the embedded fallback) can serve."""
        choice = self.choose_ipfs()
        return any(d.available for n, d in choice.candidates.items() if n != FALLBACK_BACKEND)

    # --- filesystem API (on the chosen backend) --------------------------------------------------

    def add_file(self, path: Path | str, *, pin: bool = True) -> str:
        """Add a file; return its CID (the one ``ipfs add`` gives)."""
        return self.ipfs().add_file(Path(path), pin=pin)

    def get_file(self, cid: str, dest: Path | str) -> Path:
        """Write the file (or tree) ``cid`` to ``dest``."""
        return self.ipfs().get(cid, Path(dest))

    def add_directory(self, path: Path | str, *, recursive: bool = True,
                      pin: bool = True) -> AddResult:
        """Add a directory; return the root CID and every entry."""
        return self.ipfs().add_directory(Path(path), recursive=recursive, pin=pin)

    def list_directory(self, cid: str) -> list[DirEntry]:
        """List a directory's entries."""
        return self.ipfs().ls(cid)

    def cat(self, cid: str, *, max_size: int | None = None) -> bytes:
        """Return a file's content."""
        return self.ipfs().cat(cid, max_size=max_size)

    # --- store -----------------------------------------------------------------------------------

    def store_class(self) -> type[Store]:
        """The store class that handles the configured URL (no connection is made)."""
        url = self.settings.store_url
        scheme = _scheme(url)
        stores = self.plugins.stores()
        candidates = [cls for cls in stores.values() if scheme in cls.schemes]
        if not candidates:
            known = sorted({sch for cls in stores.values() for sch in cls.schemes})
            raise UnknownStoreError(
                f"{_setting_label(self.settings, 'store_url')}: no store handles URL scheme "
                f"{scheme!r} in {mask_url(url)!r}; known schemes: {', '.join(known)}",
                url=mask_url(url))
        picked = self.hook.choose_store(url=url, candidates=candidates)
        return picked if picked is not None else candidates[0]

    @property
    def store(self) -> Store:
        """The store, opened and with its schema created on first use."""
        with self._lock:
            if self._store is None:
                self._plugin_settings_all()  # a bad plugin section fails before the store opens
                self.plugins.tables()  # imports the models, so the schema includes them
                cls = self.store_class()
                store = cls(self.settings.store_url, settings=self.settings)
                try:
                    store.create_schema()
                except BaseException:
                    store.close()
                    raise
                self._store = store
                self._started = True
                self.notify("startup")
            return self._store

    def analytics(self) -> Analytics:
        """A DuckDB :class:`~rubix_integration.stores.Analytics` over the store's data."""
        from rubix_integration.stores.analytics import Analytics

        return Analytics(self.store)

    # --- token sync ------------------------------------------------------------------------------

    def sync_tokens(
        self,
        roots: Sequence[Path | str],
        *,
        workers: int | None = None,
        processes: int | None = None,
        full: bool = False,
        source_ip: str | None = None,
        pattern: str | None = None,
        max_size: int | None = None,
        observer: SyncObserver | None = None,
        batch_size: int = 2000,
        db_timeout: float | None = None,
        log_file: Path | str | None = None,
    ) -> SyncSummary:
        """Sync every Rubix node database below ``roots`` into the store; return a
        :class:`~rubix_integration.tokens.SyncSummary`.

        Only new or modified databases are processed unless ``full``. ``workers`` is the number
        of concurrent content fetches for network/subprocess backends; ``processes`` the number
        of databases read at once in worker processes (default: the CPUs, for large runs).
        ``source_ip`` defaults to ``RUBIX_SOURCE_IP``, else the address of the interface that
        routes outward. The IPFS backend of each node is chosen as :meth:`choose_ipfs` says for
        its ``.ipfs`` folder.
        """
        from rubix_integration.tokens.content import DEFAULT_MAX_SIZE
        from rubix_integration.tokens.discover import DEFAULT_PATTERN
        from rubix_integration.tokens.sync import TokenSync

        sync = TokenSync(
            # opened by the run, which may start reading before (see tokens.sync)
            lambda: self.store, self.settings,
            choose_backend=lambda path: self.choose_ipfs(path).backend_name,
            open_ipfs=self.ipfs_factory, notify=self.notify,
            announce_tokens=bool(self.hook.token_synced.get_hookimpls()),
            in_process=self.has_runtime_plugins,
            workers=workers, processes=processes, full=full, source_ip=source_ip,
            pattern=pattern or DEFAULT_PATTERN, max_size=max_size or DEFAULT_MAX_SIZE,
            batch_size=batch_size, observer=observer, db_timeout=db_timeout, log_file=log_file)
        return sync.run(roots)

    # --- provenance ------------------------------------------------------------------------------

    @cached_property
    def provenance(self) -> ProvenanceLogger:
        """The :class:`~rubix_integration.provenance.ProvenanceLogger` of this Manager."""
        from rubix_integration.provenance import ProvenanceLogger
        from rubix_integration.provenance.logger import host_listening

        return ProvenanceLogger(
            lambda: self.store, ipfs=self.ipfs, settings=self.settings, notify=self.notify,
            listening=host_listening(self),
            ipfs_probe=lambda: (self.choose_ipfs().name, self.is_ipfs_available()))

    def log_event(self, type: str, data: object) -> str:
        """Record an event; return its CID (see :class:`~.provenance.ProvenanceLogger`)."""
        return str(self.provenance.log_event(type, data))

    def track_provenance(self, operation: str, data: Mapping[str, Any]) -> str:
        """Record an operation; return its CID."""
        return str(self.provenance.track_provenance(operation, data))

    def log_inference(self, model: str, data: Mapping[str, Any]) -> str:
        """Record a model inference; return its CID."""
        return str(self.provenance.log_inference(model, data))

    def log_transformation(self, name: str, params: Mapping[str, Any] | None = None, *,
                           input_cid: CIDs | None = None, output_cid: CIDs | None = None) -> str:
        """Record a transformation from ``input_cid`` to ``output_cid``; return its CID."""
        return str(self.provenance.log_transformation(name, params, input_cid=input_cid,
                                                      output_cid=output_cid))

    def log_worker_execution(self, worker_id: str, task_id: str, data: Mapping[str, Any]) -> str:
        """Record a worker's run of a task; return its CID."""
        return str(self.provenance.log_worker_execution(worker_id, task_id, data))

    def log_pr_activity(self, number: int, kind: str, data: Mapping[str, Any]) -> str:
        """Record pull-request activity; return its CID."""
        return str(self.provenance.log_pr_activity(number, kind, data))

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
        """Provenance records matching ``filters``, newest first by default."""
        return list(self.provenance.query_logs(filters, limit=limit, since=since, until=until,
                                               offset=offset, newest_first=newest_first))

    def verify_provenance(self, *, chain: str | None = None,
                          checkpoints: Iterable[Checkpoint] = (),
                          trusted_keys: Iterable[bytes | str] = ()) -> VerifyReport:
        """Verify every provenance chain (or ``chain``); return a
        :class:`~.provenance.VerifyReport`."""
        return self.provenance.verify(chain=chain, checkpoints=checkpoints,
                                      trusted_keys=trusted_keys)

    def checkpoint_provenance(self, *, chain: str | None = None) -> Checkpoint:
        """Sign the head of this Manager's provenance chain (or ``chain``) with the node's key;
        return the :class:`~.provenance.Checkpoint` (see :mod:`~.provenance.checkpoints`)."""
        return self.provenance.checkpoint(chain=chain)

    # --- pin state -------------------------------------------------------------------------------

    @cached_property
    def pins(self) -> PinState:
        """The pin state kept in this Manager's store: the ``pin_state`` backend named like the
        store class (``sqlite``, ``postgresql``), else :class:`~rubix_integration.PinState`."""
        from rubix_integration.pins import PinState

        cls = self.plugins.backends("pin_state").get(self.store_class().name, PinState)
        if not (isinstance(cls, type) and issubclass(cls, PinState)):
            cls = PinState
        return cls(lambda: self.store)

    # --- import --------------------------------------------------------------------------------

    def import_sqlite(self, path: str | Path, *, tables: Sequence[str] | None = None,
                      clear: bool = False, dry_run: bool = False, batch_size: int = 5000,
                      mode: str = "upsert",
                      progress: Callable[[Progress], None] | None = None) -> ImportReport:
        """Import a SQLite database into the store: schema kept, in foreign-key order,
        upserted, incremental (see :func:`rubix_integration.importer.import_sqlite`)."""
        from rubix_integration.importer import import_sqlite

        return import_sqlite(self.store, path, tables=tables, clear=clear, dry_run=dry_run,
                             batch_size=batch_size, mode=_import_mode(mode), progress=progress)

    def import_json(self, path: str | Path, *, table: str, key: Sequence[str] = (),
                    clear: bool = False, dry_run: bool = False, mode: str = "upsert",
                    progress: Callable[[Progress], None] | None = None) -> ImportReport:
        """Import a JSON / NDJSON file's objects into ``table`` (columns inferred)."""
        from rubix_integration.importer import import_json

        return import_json(self.store, path, table=table, key=key, clear=clear,
                           dry_run=dry_run, mode=_import_mode(mode), progress=progress)

    def import_source(self, name: str, *, options: Mapping[str, str] | None = None,
                      table: str | None = None, clear: bool | None = None,
                      dry_run: bool = False, env_file: str | Path | None = None,
                      progress: Callable[[Progress], None] | None = None) -> ImportReport:
        """Import the rows of ``source`` backend ``name``; its settings come from ``options``,
        the environment, ``env_file`` (default ``./.env``) or ``[plugins.<name>]``."""
        from rubix_integration.importer import import_source
        from rubix_integration.importer.sources.base import source_config

        cls = self.backend("source", name)
        section = {**self.settings.plugin_input.file.get(name, {}),
                   **self.settings.plugin_input.keywords.get(name, {})}
        dotenv = Path(env_file) if env_file is not None else Path.cwd() / ".env"
        config = source_config(tuple(getattr(cls, "settings", ())), options=options,
                               dotenv=dotenv, section=section)
        return import_source(self.store, cls(config), table=table, clear=clear,
                             dry_run=dry_run, progress=progress)

    # --- replication -----------------------------------------------------------------------------

    @cached_property
    def replication(self) -> Replication:
        """The :class:`~rubix_integration.replication.Replication` of this Manager's store: the
        replicated tables, peers, the sync loop and the ``/p2p`` routes."""
        from rubix_integration.replication import Replication

        return Replication(lambda: self.store)

    # --- workflow --------------------------------------------------------------------------------

    @cached_property
    def workflow(self) -> WorkflowCoordinator:
        """The :class:`~rubix_integration.workflow.WorkflowCoordinator` of this Manager."""
        from rubix_integration.provenance.logger import host_listening
        from rubix_integration.workflow import WorkflowCoordinator

        return WorkflowCoordinator(lambda: self.store, provenance=lambda: self.provenance,
                                   notify=self.notify, listening=host_listening(self))

    def submit_task(self, task_id: str, task_type: str, data: object = None, *,
                    priority: int = 0, tags: Iterable[str] | None = None,
                    max_attempts: int | None = None, run_at: datetime | float | None = None,
                    delay: float | None = None, connection: Any = None) -> Task:
        """Submit a task (idempotent per ``task_id``); ``run_at``/``delay``: not before then;
        ``connection``: inside the caller's own transaction (see
        :meth:`WorkflowCoordinator.submit_task`)."""
        return self.workflow.submit_task(task_id, task_type, data, priority=priority, tags=tags,
                                         max_attempts=max_attempts, run_at=run_at, delay=delay,
                                         connection=connection)

    def submit_tasks(self, tasks: Iterable[Mapping[str, Any]], *,
                     connection: Any = None) -> int:
        """Submit many tasks in one transaction (each a mapping of :meth:`submit_task`'s
        arguments: ``task_id``, ``task_type``, ``data``, ``priority``, ``tags``,
        ``max_attempts``, ``run_at``, ``delay``); ids that exist are skipped. Return how many
        were created. On PostgreSQL the rows go in through ``COPY``."""
        return self.workflow.submit_tasks(tasks, connection=connection)

    def get_next_task(self, worker_id: str, capabilities: Iterable[str] | str | None = (), *,
                      task_types: Iterable[str] | None = None) -> Task | None:
        """Claim the next task this worker can run, or ``None``."""
        return self.workflow.get_next_task(worker_id, capabilities, task_types=task_types)

    def get_next_tasks(self, worker_id: str, capabilities: Iterable[str] | str | None = (), *,
                       limit: int, task_types: Iterable[str] | None = None) -> list[Task]:
        """Claim up to ``limit`` tasks in one transaction, best first (each with its own lease)."""
        return list(self.workflow.get_next_tasks(worker_id, capabilities, limit=limit,
                                                 task_types=task_types))

    def heartbeat(self, task_id: str, worker_id: str, *,
                  lease_token: str | None = None) -> Task:
        """Extend the lease a worker holds on a task."""
        return self.workflow.heartbeat(task_id, worker_id, lease_token=lease_token)

    def complete_task(self, task_id: str, result: object = None, *,
                      worker_id: str | None = None, lease_token: str | None = None,
                      force: bool = False) -> Task:
        """Accept a task's result (refused when the caller lost the lease)."""
        return self.workflow.complete_task(task_id, result, worker_id=worker_id,
                                           lease_token=lease_token, force=force)

    def complete_tasks(self, results: Iterable[Mapping[str, Any]], *,
                       worker_id: str | None = None,
                       force: bool = False) -> list[Task | RubixError]:
        """Accept several results in one transaction; per item the task or the refusal."""
        return list(self.workflow.complete_tasks(results, worker_id=worker_id, force=force))

    def fail_task(self, task_id: str, error: str, *, worker_id: str | None = None,
                  lease_token: str | None = None, retry: bool = True,
                  force: bool = False) -> Task:
        """Record a failed attempt: retry later with backoff, or dead after the last attempt."""
        return self.workflow.fail_task(task_id, error, worker_id=worker_id,
                                       lease_token=lease_token, retry=retry, force=force)

    def cancel_task(self, task_id: str, *, reason: str | None = None,
                    lease_token: str | None = None, force: bool = False) -> Task:
        """Cancel a task that has not finished."""
        return self.workflow.cancel_task(task_id, reason=reason, lease_token=lease_token,
                                         force=force)

    def get_task_status(self, task_id: str) -> Task:
        """The task's current fields."""
        return self.workflow.get_task_status(task_id)

    def list_tasks(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                   offset: int = 0) -> list[Task]:
        """Tasks matching ``filters`` (``state``, ``task_type``, ``worker_id``, ``tag``)."""
        return list(self.workflow.list_tasks(filters, limit=limit, offset=offset))

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> Status:
        """Report what was detected and chosen, with the reason for each.

        Opens the store to report on it (creating its tables when missing); never raises for a
        store or IPFS node that cannot be reached, it says so instead. A setting that nothing
        can use (an unknown IPFS mode or store URL scheme, a malformed URL) raises
        :class:`ConfigError` or :class:`UnknownStoreError`.
        """
        from rubix_integration import __version__

        s = self.settings
        choice = self.choose_ipfs()
        ipfs = tuple(
            ComponentStatus("ipfs", name, name == choice.name, det.available,
                            choice.reason if name == choice.name else det.reason,
                            self.plugins.owner("ipfs", name))
            for name, det in choice.candidates.items()
        )
        return Status(
            version=__version__,
            enabled=s.enabled,
            ipfs_path=str(choice.ipfs_path) if choice.ipfs_path else None,
            ipfs=ipfs,
            stores=self._store_status(),
            analytics=self._analytics_status(),
            plugins=tuple(self.plugins.infos()),
            data_dir=str(s.data_dir),
            config_dir=str(s.config_dir),
            config_file=str(s.config_file) if s.config_file else None,
            settings={**s.as_dict(), "plugins": {
                n: p.as_dict() for n, p in self._plugin_settings_all().items()}},
            sources=dict(s.sources),
            warnings=tuple(self.warnings) + tuple(
                f"plugin {p.name!r}: {p.error}" for p in self.plugins.failures()),
        )

    def _store_status(self) -> tuple[ComponentStatus, ...]:
        s = self.settings
        url = s.store_url
        label = s.source_label("store_url")
        # a URL no store opens is a configuration error, not an unreachable store: raised
        chosen_cls = self.store_class()
        out: list[ComponentStatus] = []
        for name, cls in self.plugins.stores().items():
            owner = self.plugins.owner("store", name)
            if cls is chosen_cls:
                try:
                    info = self.store.describe()
                    available = bool(info.get("reachable", True))
                    detail = ", ".join(f"{k}={v}" for k, v in info.items()
                                       if k not in ("backend", "reachable") and v is not None)
                    reason = f"{label} -> {mask_url(url)}; {detail}"
                except ConfigError:
                    raise
                except RubixError as exc:
                    available, reason = False, f"{label} -> unusable: {exc}"
                out.append(ComponentStatus("store", name, True, available, reason, owner))
            else:
                hint = f"schemes {', '.join(cls.schemes)}; not configured"
                out.append(ComponentStatus("store", name, False, False, hint, owner))
        return tuple(out)

    def _analytics_status(self) -> ComponentStatus:
        try:
            import duckdb

            version = str(duckdb.__version__)
        except ImportError as exc:
            return ComponentStatus("analytics", "duckdb", False, False,
                                   f"not installed ({exc}); pip install duckdb")
        return ComponentStatus("analytics", "duckdb", True, True,
                               f"duckdb {version}; reads the store through its scanner "
                               "extensions (offline) or a copied snapshot")

    # --- backends by role and plugin settings ----------------------------------------------------

    def backends(self, role: str) -> dict[str, type[Any]]:
        """The classes registered for ``role`` (``ipfs``, ``store``, ``pin_state``, ``source`` or
        a role a plugin declares), by name."""
        return self.plugins.backends(role)

    def backend(self, role: str, name: str | None = None) -> type[Any]:
        """The class registered as ``name`` for ``role``; without ``name``, the one in use:
        the chosen IPFS backend, the store class of the store URL, the pin state backend named
        like that store class, else the role's only one."""
        found = self.plugins.backends(role)
        if name is None and role == "ipfs":
            name = self.choose_ipfs().name
        elif name is None and role == "store":
            return self.store_class()
        elif name is None and role == "pin_state" and self.store_class().name in found:
            name = self.store_class().name
        elif name is None and len(found) == 1:
            name = next(iter(found))
        registered = ", ".join(found) or "none"
        if name is None:
            reason = (f"several {role} backends are registered ({registered}): name the one to use"
                      if found else f"no {role} backend is registered")
            raise ConfigError(reason, name=role, value=name, allowed=tuple(found))
        if name not in found:
            raise ConfigError(f"no {role} backend {name!r} to use; registered: {registered}",
                              name=role, value=name, allowed=tuple(found))
        return found[name]

    def plugin_settings(self, name: str) -> PluginSettings:
        """Plugin ``name``'s settings (``[plugins.<name>]``, ``RUBIX_<NAME>_<KEY>``), checked
        against the keys it declares; :class:`ConfigError` names any key it does not."""
        every = self._plugin_settings_all()
        if name not in every:
            raise ConfigError(f"no loaded plugin {name!r} declares settings; plugins that do: "
                              f"{', '.join(every) or 'none'}", name=f"plugins.{name}",
                              allowed=tuple(every))
        return every[name]

    def _plugin_settings_all(self) -> dict[str, PluginSettings]:
        with self._lock:
            if self._checked_plugin_settings is None:
                self._checked_plugin_settings = check_plugin_settings(
                    self.plugins, self.settings.plugin_input, self._warn)
            return self._checked_plugin_settings

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every backend and the store. The Manager can be used again afterwards."""
        with self._lock:
            started, self._started = self._started, False
        if started:
            self.notify("shutdown")
        with self._lock:
            factory, self._ipfs_factory = self._ipfs_factory, None
            store, self._store = self._store, None
        if factory is not None:
            factory.close()
        workflow = self.__dict__.get("workflow")
        if workflow is not None:  # the connections its threads keep
            workflow.close()
        if store is not None:
            store.close()

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Manager store={mask_url(self.settings.store_url)!r}>"


def _import_mode(mode: str) -> Literal["upsert", "insert", "replace"]:
    if mode not in ("upsert", "insert", "replace"):
        raise ConfigError(f"import mode {mode!r} is not one of upsert, insert, replace",
                          name="mode", value=mode, allowed=("upsert", "insert", "replace"))
    return mode  # type: ignore[return-value]


def _detect(cls: type[IPFSBackend], context: IPFSContext) -> IPFSDetection:
    try:
        return cls.detect(context)
    except IPFSUnavailableError as exc:
        return IPFSDetection(False, str(exc))
    except Exception as exc:  # a plugin's detect must not break detection of the others
        return IPFSDetection(False, f"detection failed: {type(exc).__name__}: {exc}")


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def _setting_label(settings: Settings, name: str) -> str:
    return settings.label(name)


def connect(*, plugins: Iterable[object] = (), env: Mapping[str, str] | None = None,
            **settings: object) -> Manager:
    """Build a :class:`Manager` (nothing is opened until used)."""
    return Manager(plugins=plugins, env=env, **settings)


def status(*, plugins: Iterable[object] = (), env: Mapping[str, str] | None = None,
           **settings: object) -> Status:
    """One-line status: ``rubix_integration.status()``."""
    with Manager(plugins=plugins, env=env, **settings) as manager:
        return manager.status()


