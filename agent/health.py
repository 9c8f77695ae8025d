"""The machine policy's health check, run on the agent.

The policy's bash script runs through the step executor in a folder of its own, with two
helpers defined ahead of it (Octopus' ``Write-Warning`` / ``Fail-HealthCheck``):

* ``warn_healthcheck "message"`` records a warning and carries on: status ``has_warnings``;
* ``fail_healthcheck "message"`` records the failure and ends the script: status
  ``unhealthy``.

``shoal_warn`` / ``shoal_fail`` are the same helpers under shorter names.

A script that exits with another code than 0 (or times out) is ``unhealthy`` too. The
helpers mark their lines with a token drawn for each run, so ordinary output that happens
to look like a marker cannot change the verdict.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.ports import LogLine, StepRequest, StepRunner
from domain.messages import HealthAnswer, HealthCheck

DETAIL_LIMIT = 2000
_TAIL_LINES = 20
_LOG_LIMIT = 256 * 1024


def health_script(script: str, token: str) -> str:
    """``script`` preceded by the definitions of the helpers (both names of each)."""
    return (
        f"warn_healthcheck() {{ printf '%s\\n' \"##shoal-{token}:warn:$*\"; }}\n"
        f"fail_healthcheck() {{ printf '%s\\n' \"##shoal-{token}:fail:$*\"; exit 1; }}\n"
        "shoal_warn() { warn_healthcheck \"$@\"; }\n"
        "shoal_fail() { fail_healthcheck \"$@\"; }\n"
        f"{script}\n"
    )


async def run_health_check(
    runner: StepRunner, check: HealthCheck, work_root: Path, env: Mapping[str, str]
) -> HealthAnswer:
    """Run ``check``'s script with bash under ``work_root`` and judge what it did."""
    token = secrets.token_hex(8)
    lines: list[LogLine] = []

    async def sink(batch: Sequence[LogLine]) -> None:
        lines.extend(batch)

    try:
        request = StepRequest(
            task_id="health-check", step_name="health check", syntax="bash",
            script=health_script(check.script, token), env=dict(env), work_root=work_root,
            timeout_s=check.timeout_s, max_log_bytes=_LOG_LIMIT,
        )
    except ValueError as exc:
        return HealthAnswer("unhealthy", clip(f"the health check cannot run: {exc}"))
    result = await runner.run(request, sink)
    return judge(lines, token, result.outcome == "success", result.reason)


def judge(lines: Sequence[LogLine], token: str, succeeded: bool, reason: str) -> HealthAnswer:
    """The verdict on a health script's output (``token`` marks the helpers' lines)."""
    marker = f"##shoal-{token}:"
    warnings: list[str] = []
    failures: list[str] = []
    output: list[str] = []
    for line in lines:
        if line.stream == "stdout" and line.text.startswith(marker):
            kind, _, message = line.text[len(marker):].partition(":")
            (failures if kind == "fail" else warnings).append(message or kind)
        elif line.stream != "system":
            output.append(line.text)
    tail = "\n".join(output[-_TAIL_LINES:])
    if failures:
        return HealthAnswer("unhealthy", clip("\n".join(failures)))
    if not succeeded:
        detail = "\n".join(part for part in (reason, *warnings, tail) if part)
        return HealthAnswer("unhealthy", clip(detail or "the health check failed"))
    if warnings:
        return HealthAnswer("has_warnings", clip("\n".join(warnings)))
    return HealthAnswer("healthy", clip(tail))


def clip(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, keeping its end (the latest output)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]
