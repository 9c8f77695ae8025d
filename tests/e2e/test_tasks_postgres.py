"""A representative subset of the task tests, again on PostgreSQL: the same test bodies
as the SQLite modules, collected here with a PostgreSQL server as their `srv`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import test_processes as processes
from tests.e2e import test_server_steps as server_steps
from tests.e2e import test_tasks as tasks
from tests.e2e import test_tasks_logs as logs
from tests.e2e.tasks_support import OptionServer, served

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OptionServer]:
    with served(request, tmp_path_factory.mktemp("shoal"), "postgres") as s:
        yield s


admin = server_steps.admin

test_script_runs_on_the_built_in_worker = tasks.test_script_runs_on_the_built_in_worker_in_a_private_folder
test_cancel = tasks.test_cancel_stops_a_running_step_and_its_processes
test_hundred_thousand_lines = (
    logs.test_hundred_thousand_lines_arrive_complete_in_order_while_the_server_stays_responsive)
test_binary_output = logs.test_binary_output_is_logged_and_the_read_models_go_on
test_parallel = processes.test_with_previous_steps_run_at_the_same_time
test_conditions = processes.test_a_failure_skips_success_steps_and_runs_failure_and_always_steps
test_intervention = server_steps.test_approved_intervention_continues_and_names_who_decided
