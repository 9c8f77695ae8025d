"""SSH worker: per-step cost of `SshStepRunner.run` for `true`, against a throw-away sshd.

In the same run, on the same sshd:
* bare asyncssh: `conn.run("true")` on an already open connection (the floor for one step:
  one channel, one remote command);
* bare ssh: `ssh -p PORT -i KEY host true` as a subprocess (a new connection each time).

Measured: sequential steps (pickup = call -> on_started, and the whole step), N each; then
concurrent steps with capacity 8 (steps/s). Target: per-step time <= 2x the bare asyncssh
round trip. Note the remote login shell's start-up (e.g. a ~/.bashrc) is part of both.
Prints a table and one JSON line.

    .venv/bin/python ops/bench/ssh.py [--steps 200] [--capacity 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.ssh import SshConnections, SshStepRunner, SshTarget
from agent.ports import LogLine, StepRequest
from tests.ssh_support import SSHD, running_sshd


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def quiet(batch: Sequence[LogLine]) -> None:
    pass


async def measure(target: SshTarget, steps: int, capacity: int) -> dict[str, float]:
    connections = SshConnections()
    runner = SshStepRunner(connections, "bench", target, capacity)
    request = StepRequest("bench", "true", "bash", "true", {}, Path(tempfile.gettempdir()))
    try:
        conn = await connections.get("bench", target)
        for _ in range(5):  # warm up both paths
            await runner.run(request, quiet)
            await conn.run("true", check=True)
        bare: list[float] = []
        for _ in range(steps):
            began = time.perf_counter()
            await conn.run("true", check=True)
            bare.append(time.perf_counter() - began)
        whole: list[float] = []
        pickup: list[float] = []
        for _ in range(steps):
            began = time.perf_counter()

            async def started(pid: int, began: float = began) -> None:
                pickup.append(time.perf_counter() - began)

            result = await runner.run(request, quiet, on_started=started)
            if result.outcome != "success":
                raise SystemExit(f"step failed: {result}")
            whole.append(time.perf_counter() - began)
        began = time.perf_counter()
        results = await asyncio.gather(*(runner.run(request, quiet) for _ in range(steps)))
        concurrent_s = time.perf_counter() - began
        if any(r.outcome != "success" for r in results):
            raise SystemExit("a concurrent step failed")
        began = time.perf_counter()
        sem = asyncio.Semaphore(capacity)

        async def one() -> None:
            async with sem:
                await conn.run("true", check=True)

        await asyncio.gather(*(one() for _ in range(steps)))
        bare_concurrent_s = time.perf_counter() - began
        return {
            "bare_p50": statistics.median(bare), "bare_p99": pct(bare, 0.99),
            "step_p50": statistics.median(whole), "step_p99": pct(whole, 0.99),
            "pickup_p50": statistics.median(pickup), "pickup_p99": pct(pickup, 0.99),
            "steps_per_s": steps / concurrent_s, "bare_per_s": steps / bare_concurrent_s,
            "connects": connections.connects,
        }
    finally:
        await connections.close()


def bare_ssh(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--ssh-runs", type=int, default=20)
    args = parser.parse_args()
    if not Path(SSHD).exists():
        raise SystemExit(f"{SSHD} is missing: install openssh-server (ops/test does, as root)")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-ssh-") as tmp, running_sshd(Path(tmp)) as sshd:
        target = SshTarget(sshd.host, sshd.port, sshd.user, sshd.fingerprint, sshd.private_key)
        m = asyncio.run(measure(target, args.steps, args.capacity))
        ssh_times = bare_ssh(sshd.ssh_command("true"), args.ssh_runs)
    ratio = m["step_p50"] / m["bare_p50"]
    ms = 1000.0
    print(f"SSH worker, {args.steps} steps of `true` (capacity {args.capacity}, "
          f"{int(m['connects'])} connection)")
    print(f"{'measurement':<40}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'bare asyncssh run(true), open conn':<40}{m['bare_p50'] * ms:>10.1f}{m['bare_p99'] * ms:>10.1f}")
    print(f"{'SshStepRunner.run pickup (on_started)':<40}{m['pickup_p50'] * ms:>10.1f}"
          f"{m['pickup_p99'] * ms:>10.1f}")
    print(f"{'SshStepRunner.run whole step':<40}{m['step_p50'] * ms:>10.1f}{m['step_p99'] * ms:>10.1f}")
    print(f"{'bare `ssh host true` (new connection)':<40}{statistics.median(ssh_times) * ms:>10.1f}"
          f"{pct(ssh_times, 0.99) * ms:>10.1f}")
    print(f"concurrent: {m['steps_per_s']:.1f} steps/s (bare asyncssh run: {m['bare_per_s']:.1f}/s)")
    print(f"per-step / bare asyncssh round trip: {ratio:.2f}x (target <= 2x: "
          f"{'met' if ratio <= 2 else 'MISSED'})")
    print(json.dumps({
        "bench": "ssh", "steps": args.steps, "capacity": args.capacity,
        "bare_asyncssh_p50_ms": round(m["bare_p50"] * ms, 2),
        "step_p50_ms": round(m["step_p50"] * ms, 2), "step_p99_ms": round(m["step_p99"] * ms, 2),
        "pickup_p50_ms": round(m["pickup_p50"] * ms, 2), "pickup_p99_ms": round(m["pickup_p99"] * ms, 2),
        "bare_ssh_p50_ms": round(statistics.median(ssh_times) * ms, 2),
        "steps_per_s": round(m["steps_per_s"], 1), "bare_asyncssh_per_s": round(m["bare_per_s"], 1),
        "ratio_to_bare_asyncssh": round(ratio, 2), "target_ratio": 2.0, "target_met": ratio <= 2,
    }))


if __name__ == "__main__":
    main()
