"""The datasets API's ``WorkflowCoordinator``: the task queue, from a config, with ``enable_p2p``.

``enable_p2p`` decides which machines may run a task submitted through this coordinator:

- off (the datasets API's default when built from a config): the task is kept to this
  machine. It is stored with the requirement ``NODE_<machine id>`` and only coordinators on this
  machine (same data dir, hence same ``machine-id`` file) declare that capability when claiming.
- on: a task tagged ``P2P_ELIGIBLE`` is offered to every machine sharing the store: it is stored
  with the requirement ``P2P``, which every coordinator with ``enable_p2p`` on declares when
  claiming (so a machine with it off never takes another machine's work). Other tasks stay on
  this machine as above.
- ``None`` (the default when built on a store or a Manager, as before): no placement; every
  worker of the shared store may claim every task its capabilities allow.

The placement is stored as ``*_REQUIRED`` tags (see :mod:`rubix_integration.workflow.matching`),
so it shows in ``task.tags`` and holds for workers built any way.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rubix_integration.ipfs.base import FieldsAsMapping
from rubix_integration.stores.base import Store
from rubix_integration.workflow.coordinator import WorkflowCoordinator as _Coordinator
from rubix_integration.workflow.matching import (
    normalise_capabilities,
    parse_tags,
    requirement_tags,
)
from rubix_integration.workflow.task import Task

if TYPE_CHECKING:
    from rubix_integration._host import Host
    from rubix_integration._manager import Manager
    from rubix_integration.datasets.manager import DatasetsManager

__all__ = ["P2P_CAPABILITY", "TaskView", "WorkflowCoordinator", "machine_id"]

#: The capability a coordinator with ``enable_p2p`` on declares, and P2P tasks require.
P2P_CAPABILITY = "P2P"
MACHINE_ID_FILE = "machine-id"


class TaskView(FieldsAsMapping, Task):
    """A :class:`~rubix_integration.Task` also readable as a mapping (``task["data"]``)."""

    _keys: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(Task))

    @classmethod
    def of(cls, task: Task) -> TaskView:
        """``task`` as a view (itself when it is one already)."""
        if isinstance(task, TaskView):
            return task
        return cls(**{name: getattr(task, name) for name in cls._keys})


def machine_id(data_dir: Path) -> str:
    """This machine's id: upper-case hex kept in ``<data_dir>/machine-id``, made on first use."""
    path = Path(data_dir) / MACHINE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip().upper()
        if text:
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MACHINE_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(uuid.uuid4().hex.upper() + "\n")
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)  # the first writer wins; later ones read its id
    tmp.unlink()
    return path.read_text().strip().upper()


class WorkflowCoordinator(_Coordinator):
    """The :mod:`rubix_integration.workflow.coordinator` task queue, as the datasets API builds it.

    ``WorkflowCoordinator()`` or ``WorkflowCoordinator({'enable_p2p': True, ...})`` (or
    ``config=``) opens the
    default store (config keys as :class:`~rubix_integration.DatasetsManager`'s); a
    :class:`~rubix_integration.DatasetsManager`, a Manager or a store may be given instead, as
    before, with every keyword of the base class. ``enable_p2p`` is described in
    :mod:`rubix_integration.datasets.workflow`. :meth:`submit_task` takes ``requires=``, the
    capabilities a worker must have. Tasks come back as :class:`TaskView`: attributes or keys.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store] | Host | DatasetsManager | Mapping[str, Any] | None
        = None,
        *,
        enable_p2p: bool | None = None,
        machine: str | None = None,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from rubix_integration.datasets.manager import DatasetsManager

        if config is not None:
            if store is not None:
                raise ValueError("give a store (or Manager), or config=, not both")
            store = config

        self._owned: Manager | None = None
        data_dir: Path | None = None
        if store is None or isinstance(store, Mapping):
            from rubix_integration.datasets._config import manager_from_config, split_config

            switches = split_config(store)
            self._owned = manager_from_config(store)
            store = self._owned
            enable_p2p = switches.enable_p2p if enable_p2p is None else enable_p2p
        elif isinstance(store, DatasetsManager):
            enable_p2p = store.config.enable_p2p if enable_p2p is None else enable_p2p
            store = store.manager
        elif not (isinstance(store, Store) or callable(store) or hasattr(store, "store")):
            from rubix_integration.errors import ConfigError

            raise ConfigError("a WorkflowCoordinator takes a config mapping, a Manager or a "
                              f"store, not {type(store).__name__}", name="config",
                              source="keyword")
        settings = getattr(store, "settings", None)
        if settings is not None:
            data_dir = Path(settings.data_dir)
        super().__init__(store, **kwargs)
        self.enable_p2p = enable_p2p
        self._machine = machine.upper() if machine else None
        self._data_dir = data_dir

    @property
    def machine(self) -> str:
        """This machine's id (see :func:`machine_id`), as placement tags name it."""
        if self._machine is None:
            data_dir = self._data_dir
            if data_dir is None:
                from rubix_integration._settings import resolve_settings

                data_dir = resolve_settings().data_dir
            self._machine = machine_id(data_dir)
        return self._machine

    def _placement(self, tags: Iterable[str] | None) -> list[str]:
        if self.enable_p2p is None:
            return []
        if self.enable_p2p and P2P_CAPABILITY in parse_tags(tags).eligible:
            return [P2P_CAPABILITY + "_REQUIRED"]
        return [f"NODE_{self.machine}_REQUIRED"]

    def _own_capabilities(self) -> list[str]:
        if self.enable_p2p is None:
            return []
        own = [f"NODE_{self.machine}"]
        return [*own, P2P_CAPABILITY] if self.enable_p2p else own

    def _placed(self, tags: Iterable[str] | str | None,
                requires: Iterable[str] | str | None) -> list[str] | None:
        """``tags`` with the requirement tags of ``requires`` and this coordinator's placement
        added (each once), or ``None`` when there are none."""
        given = [tags] if isinstance(tags, str) else list(tags or ())
        extra = [t for t in (*requirement_tags(requires), *self._placement(given))
                 if t not in given]
        return [*given, *extra] or None

    # --- the queue, with placement and mapping access ------------------------------------------

    def submit_task(self, task_id: str, task_type: str, data: Any = None, *,
                    tags: Iterable[str] | str | None = None,
                    requires: Iterable[str] | str | None = None, **kwargs: Any) -> TaskView:
        """Queue a task (see the base class); ``requires`` names capabilities a worker must
        have (stored as ``NAME_REQUIRED`` tags); ``tags`` as in
        :mod:`~rubix_integration.workflow.matching` (``P2P_ELIGIBLE`` never blocks a worker)."""
        return TaskView.of(super().submit_task(task_id, task_type, data,
                                               tags=self._placed(tags, requires), **kwargs))

    def submit_tasks(self, tasks: Iterable[Mapping[str, Any]], **kwargs: Any) -> int:
        """Queue many tasks (see the base class); each may carry ``requires``."""
        placed = []
        for task in tasks:
            item = dict(task)
            item["tags"] = self._placed(item.get("tags"), item.pop("requires", None))
            placed.append(item)
        return super().submit_tasks(placed, **kwargs)

    def get_next_tasks(self, worker_id: str,
                       capabilities: Iterable[str] | str | None = (), **kwargs: Any
                       ) -> list[Task]:
        """Claim tasks (see the base class); this coordinator's placement capabilities are
        added to ``capabilities``."""
        caps = [*normalise_capabilities(capabilities), *self._own_capabilities()]
        return [TaskView.of(t) for t in super().get_next_tasks(worker_id, caps, **kwargs)]

    def get_task_status(self, task_id: str) -> TaskView:
        """The task's current fields (attributes or keys)."""
        return TaskView.of(super().get_task_status(task_id))

    def complete_task(self, task_id: str, result: Any = None, **kwargs: Any) -> TaskView:
        """Accept a task's result (see the base class)."""
        return TaskView.of(super().complete_task(task_id, result, **kwargs))

    def close(self) -> None:
        """Close the Manager this coordinator built from a config (a given one stays open)."""
        if self._owned is not None:
            self._owned.close()
