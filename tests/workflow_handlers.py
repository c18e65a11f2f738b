"""Task handlers run by worker processes in the workflow tests (``tests.workflow_handlers:…``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def _log(task: Any) -> None:
    folder = os.environ.get("RUBIX_TEST_HANDLER_LOG")
    if folder:
        with (Path(folder) / f"{os.getpid()}.log").open("a") as fh:
            fh.write(f"{task.task_id} {task.attempts}\n")


def echo(task: Any) -> dict[str, Any]:
    """Return the task's data with the pid that ran it; log the run."""
    _log(task)
    return {"echo": task.data, "pid": os.getpid()}


def slow_once(task: Any) -> dict[str, Any]:
    """On the first attempt, log and hang (to be killed); later attempts finish at once."""
    _log(task)
    if task.attempts == 1:
        marker = os.environ.get("RUBIX_TEST_HANDLER_LOG", "")
        Path(marker, "started").write_text(str(os.getpid()))
        time.sleep(120)
    return {"attempt": task.attempts, "pid": os.getpid()}


def slow(task: Any) -> dict[str, Any]:
    """Log, then take a while (long enough to be interrupted)."""
    _log(task)
    marker = os.environ.get("RUBIX_TEST_HANDLER_LOG", "")
    Path(marker, "started").write_text(str(os.getpid()))
    time.sleep(float(task.data.get("seconds", 5)) if isinstance(task.data, dict) else 5)
    return {"slept": True}


def brief(task: Any) -> dict[str, Any]:
    """Log, then take ``data["seconds"]`` (default 0.01) seconds."""
    _log(task)
    time.sleep(float(task.data.get("seconds", 0.01)) if isinstance(task.data, dict) else 0.01)
    return {"pid": os.getpid()}


def task_changes(manager: Any, *, task_id: str | None = None,
                 new_state: str | None = None) -> list[dict[str, Any]]:
    """The task changes the provenance log states, oldest first (``task_state`` records and
    the ``task_states`` records of batch operations, expanded one change per task), those of
    ``task_id`` or to ``new_state`` only when given."""
    from rubix_integration.workflow.states import BATCH_RECORD, expand

    records = [*manager.query_logs({"type": "task_state"}, newest_first=False, limit=None),
               *manager.query_logs({"type": BATCH_RECORD}, newest_first=False, limit=None)]
    records.sort(key=lambda r: (r.chain, r.seq))
    return [c for r in records for c in expand(r.type, r.data)
            if (task_id is None or c["task_id"] == task_id)
            and (new_state is None or c["new_state"] == new_state)]
