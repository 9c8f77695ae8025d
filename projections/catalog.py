"""Every projection the server keeps, in one list (the runner and replay share it)."""

from __future__ import annotations

from projections.artifacts import ArtifactList
from projections.audit import AuditLog
from projections.base import Projection
from projections.credentials import AgentCredentials
from projections.environments import EnvironmentList
from projections.membership import Membership
from projections.packages import PackageList
from projections.policies import PolicyList
from projections.pools import PoolList
from projections.projects import ProjectList
from projections.targets import TargetList
from projections.tasklogs import TaskLogs
from projections.tasks import TaskList
from projections.workers import WorkerList


def all_projections() -> list[Projection]:
    """Fresh instances of every projection."""
    return [
        PoolList(), WorkerList(), Membership(), PolicyList(), ProjectList(),
        TaskList(), TaskLogs(), AuditLog(), AgentCredentials(), PackageList(), ArtifactList(),
        EnvironmentList(), TargetList(),
    ]
