"""The ``workflow_tasks`` table.

Tasks follow the rule of :mod:`rubix_integration.stores.replicated`: ``task_id`` is the stable
key; every write sets ``origin_node`` to the writing store's id and takes the next hybrid logical
clock stamp as ``change_version`` (from the sequence the store keeps on its clock on PostgreSQL,
from the store's clock under the write lock on SQLite); tasks are never deleted, a removal would
set ``deleted_at``.

``due_at_us`` is when the task can next be claimed: the time it becomes available for a pending or
retrying task, the lease expiry for a running one, ``NULL`` once finished. One partial index over
claimable tasks in claim order (priority, then age) serves every claim (a running task whose
lease ran out is claimable again through it); another, over the lease expiry of running tasks,
finds the stalled tasks on their last attempt without scanning the table. Every claim and
completion rewrites the indexed columns of its rows, so each index costs every state change:
there is no other (schema version 4 dropped :data:`DROPPED_INDEXES`, which no query used).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from rubix_integration.provenance.models import JSON_TYPE
from rubix_integration.stores.models import ReplicatedMixin

__all__ = ["CHANGE_SEQUENCE", "DROPPED_INDEXES", "LEASE_INDEX", "TASK_TABLE", "WorkflowTaskRow"]

#: The partial index over the lease expiry of running tasks (schema version 3).
LEASE_INDEX = "ix_workflow_tasks_lease"

#: Indexes of earlier schema versions that no query used (dropped by the step to version 4).
DROPPED_INDEXES = ("ix_workflow_tasks_due", "ix_workflow_tasks_state")

#: Change versions of task rows on PostgreSQL, kept on the store's hybrid logical clock.
CHANGE_SEQUENCE = sa.Sequence("workflow_tasks_change_version_seq", metadata=SQLModel.metadata)


class WorkflowTaskRow(ReplicatedMixin, table=True):
    """One task as stored."""

    __tablename__ = "workflow_tasks"
    __table_args__ = (
        sa.Index("ix_workflow_tasks_claim", sa.text("priority DESC"), "created_at_us", "task_id",
                 postgresql_where=sa.text("due_at_us IS NOT NULL"),
                 sqlite_where=sa.text("due_at_us IS NOT NULL")),
        # stalled work: the running tasks whose lease ran out, found without a table scan
        sa.Index(LEASE_INDEX, "lease_expires_at_us",
                 postgresql_where=sa.text("state = 'running'"),
                 sqlite_where=sa.text("state = 'running'")),
    )

    task_id: str = Field(primary_key=True, max_length=255)
    task_type: str = Field(max_length=200, index=True)
    state: str = Field(max_length=16)
    priority: int = Field(default=0)
    data: Any = Field(sa_column=sa.Column(JSON_TYPE, nullable=False))
    tags: Any = Field(sa_column=sa.Column(JSON_TYPE, nullable=False))
    required_caps: Any = Field(sa_column=sa.Column(JSON_TYPE, nullable=False))
    preferred_caps: Any = Field(sa_column=sa.Column(JSON_TYPE, nullable=False))
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=3)
    created_at_us: int = Field(sa_type=sa.BigInteger)
    updated_at_us: int = Field(sa_type=sa.BigInteger)
    due_at_us: int | None = Field(default=None, sa_type=sa.BigInteger)
    worker_id: str | None = Field(default=None, max_length=255)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at_us: int | None = Field(default=None, sa_type=sa.BigInteger)
    result: Any = Field(default=None, sa_column=sa.Column(JSON_TYPE, nullable=True))
    error: str | None = Field(default=None, sa_type=sa.Text)
    finished_at_us: int | None = Field(default=None, sa_type=sa.BigInteger)


#: The Core table of :class:`WorkflowTaskRow`.
TASK_TABLE: sa.Table = SQLModel.metadata.tables[WorkflowTaskRow.__tablename__]
