"""The task state machine: which changes are allowed, who may make them, and what they set.

Pure decisions over a task's stored fields; the SQL that reads and writes them lives in
:mod:`~rubix_integration.workflow._sql`. See :mod:`~rubix_integration.workflow.coordinator` for
the states and the fencing rules in prose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from rubix_integration.codecs import dagjson, parse_cid
from rubix_integration.errors import (
    LeaseLostError,
    RubixError,
    TaskNotFoundError,
    TaskStateError,
)
from rubix_integration.workflow.task import Task

__all__ = [
    "ACTIVE",
    "BATCH_CHUNK",
    "BATCH_RECORD",
    "FINISHED",
    "STATES",
    "Holder",
    "batch_record_data",
    "cancelled",
    "check_holder",
    "completed",
    "expand",
    "failed",
    "lease_expired",
    "record_data",
    "refusals",
    "released",
    "resubmitted",
]

STATES = ("pending", "running", "retry_wait", "completed", "dead", "cancelled")
ACTIVE = ("pending", "running", "retry_wait")
FINISHED = ("completed", "dead", "cancelled")
#: The type of the provenance record of one operation on several tasks (see
#: :func:`batch_record_data`); a change of one task is recorded as ``task_state``.
BATCH_RECORD = "task_states"
#: Most tasks one ``task_states`` record names (a bulk submit of more writes several).
BATCH_CHUNK = 1000
#: Why the sweep made a task dead.
LEASE_EXPIRED = "lease expired on the last attempt"


class Holder(NamedTuple):
    """What the fencing check reads of a task."""

    task_id: str
    state: str
    worker_id: str | None
    lease_token: str | None


def check_holder(row: Any, worker_id: str | None, lease_token: str | None,
                 doing: str, force: bool = False) -> None:
    """Raise unless the caller (``lease_token``, ``worker_id``) may change the running task
    ``row``: ``TaskStateError`` for a finished task, ``LeaseLostError`` for one not held.

    ``force`` skips the lease check, never the state check.
    """
    if row.state != "running":
        if row.state in FINISHED and row.state != "dead":
            raise TaskStateError(
                f"cannot {doing} task {row.task_id!r}: it is {row.state}",
                task_id=row.task_id, state=row.state)
        raise LeaseLostError(
            f"cannot {doing} task {row.task_id!r}: it is {row.state}, no longer held",
            task_id=row.task_id, state=row.state)
    if force:
        return
    if lease_token is None:
        raise LeaseLostError(
            f"cannot {doing} task {row.task_id!r}: this caller does not hold it (it is held "
            f"by {row.worker_id!r}); pass the lease_token of its claim, or override as an "
            "operator with force=True (--force on the command line)",
            task_id=row.task_id, state=row.state)
    if row.lease_token != lease_token:
        raise LeaseLostError(
            f"cannot {doing} task {row.task_id!r}: the lease was given to another claim "
            f"(now held by {row.worker_id!r})", task_id=row.task_id, state=row.state)
    if worker_id is not None and row.worker_id != worker_id:
        raise LeaseLostError(
            f"cannot {doing} task {row.task_id!r}: it is held by {row.worker_id!r}, "
            f"not {worker_id!r}", task_id=row.task_id, state=row.state)


def refusals(found: Mapping[str, Holder], items: Sequence[Any], worker_id: str | None,
             force: bool) -> dict[str, RubixError]:
    """Why each of ``items`` (results with ``task_id`` and ``lease_token``) was not accepted,
    given the ``found`` holders of their tasks: unknown, finished, or held by another."""
    out: dict[str, RubixError] = {}
    for item in items:
        holder = found.get(item.task_id)
        if holder is None:
            out[item.task_id] = TaskNotFoundError(f"no task {item.task_id!r}",
                                                  task_id=item.task_id)
            continue
        try:
            check_holder(holder, worker_id, item.lease_token, "complete", force)
            out[item.task_id] = LeaseLostError(  # pragma: no cover - checked above
                f"cannot complete task {item.task_id!r}: not held", task_id=item.task_id)
        except RubixError as exc:
            out[item.task_id] = exc
    return out


def completed(now: int) -> dict[str, Any]:
    """The fields an accepted result sets (besides the result)."""
    return {"state": "completed", "due_at_us": None, "lease_token": None,
            "finished_at_us": now, "updated_at_us": now}


def failed(row: Any, message: str, *, retry: bool, now: int, backoff_base: float,
           backoff_max: float) -> dict[str, Any]:
    """The fields a failed attempt sets: ``retry_wait`` after a backoff of
    ``backoff_base * 2**(attempt-1)`` seconds (at most ``backoff_max``), or ``dead`` after the
    last attempt (or at once without ``retry``)."""
    if not retry or row.attempts >= row.max_attempts:
        return {"state": "dead", "error": message, "due_at_us": None,
                "lease_token": None, "finished_at_us": now, "updated_at_us": now}
    delay = min(backoff_max, backoff_base * 2 ** (row.attempts - 1))
    return {"state": "retry_wait", "error": message, "lease_token": None,
            "due_at_us": now + int(delay * 1_000_000), "updated_at_us": now}


def released(row: Any, now: int) -> dict[str, Any]:
    """The fields a release sets: pending again, the attempt not counted."""
    return {"state": "pending", "lease_token": None, "due_at_us": now,
            "attempts": max(0, row.attempts - 1), "updated_at_us": now}


def cancelled(row: Any, lease_token: str | None, message: str, *, force: bool,
              now: int) -> dict[str, Any]:
    """The fields a cancel sets; a finished task cannot be cancelled, a running one only by
    its holder (or with ``force``)."""
    if row.state in FINISHED:
        raise TaskStateError(f"cannot cancel task {row.task_id!r}: it is already {row.state}",
                             task_id=row.task_id, state=row.state)
    if row.state == "running":
        check_holder(row, None, lease_token, "cancel", force)
    return {"state": "cancelled", "due_at_us": None, "lease_token": None,
            "finished_at_us": now, "updated_at_us": now, "error": message}


def resubmitted(row: Any, max_attempts: int | None, now: int) -> dict[str, Any]:
    """The fields a resubmit sets; only a dead or cancelled task can be queued again."""
    if row.state not in ("dead", "cancelled"):
        raise TaskStateError(
            f"cannot resubmit task {row.task_id!r}: it is {row.state} (only dead or "
            "cancelled tasks can be)", task_id=row.task_id, state=row.state)
    values: dict[str, Any] = {
        "state": "pending", "attempts": 0, "due_at_us": now, "worker_id": None,
        "lease_token": None, "lease_expires_at_us": None, "finished_at_us": None,
        "result": None, "updated_at_us": now}
    if max_attempts is not None:
        values["max_attempts"] = max_attempts
    return values


def lease_expired(now: int) -> dict[str, Any]:
    """The fields the sweep sets on a task whose lease ran out on its last attempt."""
    return {"state": "dead", "due_at_us": None, "lease_token": None, "finished_at_us": now,
            "updated_at_us": now, "error": LEASE_EXPIRED}


def record_data(task: Task, old_state: str | None, result_cid: str | None = None, *,
                forced: bool = False) -> dict[str, Any]:
    """The provenance record (``task_state``) of ``task``'s change from ``old_state``."""
    data: dict[str, Any] = {
        "task_id": task.task_id, "task_type": task.task_type, "old_state": old_state,
        "new_state": task.state, "attempt": task.attempts,
    }
    if task.worker_id is not None:
        data["worker_id"] = task.worker_id
    if forced:
        data["forced"] = True
    if task.state == "completed":
        if result_cid is None:
            result_cid = dagjson.cid_text_for_block(dagjson.encode(task.result))
        data["result"] = parse_cid(result_cid)
    if task.error is not None and task.state in ("retry_wait", "dead"):
        data["error"] = task.error[:500]
    return data


def batch_record_data(new_state: str, task_ids: Sequence[str], task_types: Sequence[str],
                      old_states: Sequence[str | None], attempts: Sequence[int],
                      worker_ids: Sequence[str | None] | None = None,
                      result_cids: Sequence[str] | None = None, *,
                      forced: bool = False) -> dict[str, Any]:
    """The provenance record (``task_states``) of one operation that moved several tasks to
    ``new_state`` together (a batch claim, completion or submit).

    The per-task fields of :func:`record_data` become lists in the tasks' order (``task_ids``,
    ``task_types``, ``old_states``, ``attempts``; ``worker_ids`` when a worker holds them;
    ``results``, the CIDs of the accepted results as text, for completions). :func:`expand`
    gives back exactly the records :func:`record_data` would have made, one per task.
    """
    data: dict[str, Any] = {
        "new_state": new_state, "task_ids": list(task_ids), "task_types": list(task_types),
        "old_states": list(old_states), "attempts": list(attempts),
    }
    if worker_ids is not None and any(w is not None for w in worker_ids):
        data["worker_ids"] = list(worker_ids)
    if forced:
        data["forced"] = True
    if result_cids is not None:
        # as text: plain JSON that the fast encoder takes (expand() makes them links again)
        data["results"] = list(result_cids)
    return data


def expand(record_type: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-task changes a workflow provenance record states, each as :func:`record_data`
    gives it: one for a ``task_state`` record, one per task for a ``task_states`` record, none
    for a record of another type."""
    if record_type == "task_state":
        return [dict(data)]
    if record_type != BATCH_RECORD:
        return []
    out = []
    workers = data.get("worker_ids")
    results = data.get("results")
    for i, task_id in enumerate(data["task_ids"]):
        one: dict[str, Any] = {
            "task_id": task_id, "task_type": data["task_types"][i],
            "old_state": data["old_states"][i], "new_state": data["new_state"],
            "attempt": data["attempts"][i]}
        if workers is not None and workers[i] is not None:
            one["worker_id"] = workers[i]
        if data.get("forced"):
            one["forced"] = True
        if results is not None:
            one["result"] = parse_cid(results[i])
        out.append(one)
    return out
