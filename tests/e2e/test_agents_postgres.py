"""A representative subset of the agent tests, again with the server on PostgreSQL: the
same test bodies as tests/e2e/test_agents.py, collected here with a PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import test_agents as agents_tests
from tests.e2e.server import ServerProcess
from tests.e2e.tasks_support import served

pytestmark = pytest.mark.e2e

agents = agents_tests.agents


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    with served(request, tmp_path / "server", "postgres") as s:
        yield s


test_spread = agents_tests.test_steps_run_on_the_pool_agents_and_spread_over_them
test_lost_agent = agents_tests.test_an_agent_killed_mid_step_fails_the_step_as_lost_within_10s
test_server_crash = (
    agents_tests.test_a_result_reported_while_the_server_was_down_is_recorded_after_its_restart)
test_revocation = agents_tests.test_deleting_the_worker_makes_its_agent_exit_by_itself
