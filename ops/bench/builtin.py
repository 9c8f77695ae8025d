"""Built-in worker throughput and pickup latency, through a real `shoal server`.

Measures, on SQLite (default) or PostgreSQL (--postgres URL):
  * trivial steps per second: N ad-hoc `true` scripts queued over HTTP at once, from the
    first POST to the last task finished (the server's task cap is raised to --cap), each
    a task of its own; and the same for the parallel steps of one deployment process
    (--process-steps `true` steps started together), which pays the task's own events once;
  * pickup latency: Task.StepAssigned -> Task.StepStarted (process running), p50/p99,
    from the events' own timestamps; and for tasks queued one at a time, what a user
    waits for: Task.Queued -> Task.StepStarted;
and, in the same run, the raw baseline: spawning `bash script.sh` (a file holding `true`)
with asyncio, --cap at a time, the same N times; and the same loop with each spawn in a
fresh folder holding its script, removed afterwards, which is what a step's working folder
costs on this file system (on a journal-less ext4 that churns inodes, most of a
millisecond of kernel time each). Prints a table and one JSON line.

The client is ops/bench/wire.py, not httpx: on the same two cores as the server, httpx
would spend about as much CPU per task as the server does; the CPU the client did use is
printed too.

    .venv/bin/python ops/bench/builtin.py [--tasks 500] [--cap 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from wire import Wire, own_cpu_s

SHOAL = str(Path(sys.executable).with_name("shoal"))


def start_server(data_dir: Path, cap: int, database_url: str | None) -> tuple[subprocess.Popen[str], str]:
    """A `shoal server` whose log goes to server.log beside its data folder: a file, not a
    pipe this process would have to drain line by line, which costs the measuring process
    CPU (and the GIL) in step with the server's log lines."""
    args = [SHOAL, "server", "--data-dir", str(data_dir), "--port", "0", "--task-cap", str(cap)]
    if database_url:
        args += ["--database-url", database_url]
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    url = None
    while url is None:
        match = re.search(r'"url":"(http://[^"]+)"', log_path.read_text())
        if match:
            url = match.group(1)
        elif proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start; see {log_path}")
        else:
            time.sleep(0.02)
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.02)


async def run_tasks(url: str, key: str, n: int) -> tuple[float, float]:
    """Queue n trivial scripts at once; (seconds until all of them succeeded, this
    process's own CPU seconds meanwhile)."""
    async with Wire(url, key, connections=32) as c:

        async def count(state: str) -> int:
            return int((await c.get("/api/tasks", state=state, take=1))["total"])

        done_before = await count("success")
        cpu, started = own_cpu_s(), time.perf_counter()

        async def submit() -> None:
            await c.post("/api/tasks/script", {"syntax": "bash", "script_body": "true"})

        await asyncio.gather(*(submit() for _ in range(n)))
        # Poll counts only, so measuring does not load the server.
        while await count("success") - done_before < n:
            if await count("failed"):
                raise SystemExit("a task failed; see the server log")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started, own_cpu_s() - cpu


async def run_one_at_a_time(url: str, key: str, n: int) -> set[str]:
    """Queue n trivial scripts one after another, each once the last has ended; their ids."""
    ids: set[str] = set()
    async with Wire(url, key, connections=1) as c:
        for _ in range(n):
            task_id = (await c.post("/api/tasks/script", {"syntax": "bash", "script_body": "true"}))["id"]
            ids.add(task_id)
            # Polling over HTTP is the point here: it is how a client learns the end.
            while (await c.get(f"/api/tasks/{task_id}"))["state"] != "success":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    return ids


async def run_process(url: str, key: str, n: int, repeats: int = 3) -> float:
    """A deployment process of n parallel `true` steps (one group), run `repeats` times;
    the median steps per second, first POST to the task's end."""
    async with Wire(url, key, connections=1) as c:
        project = (await c.post("/api/projects", {"name": f"bench-{n}"}))["id"]
        steps = [{"name": f"s{i}", "action": "script", "syntax": "bash", "script_body": "true",
                  "start": "after_previous" if i == 0 else "with_previous"} for i in range(n)]
        status, answer = await c.request("PUT", f"/api/projects/{project}/process", {"steps": steps})
        if status >= 300:
            raise SystemExit(f"could not set the process: {status} {answer}")
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            task = (await c.post(f"/api/projects/{project}/runs", {}))["id"]
            # Polling over HTTP is the point here: it is how a client learns the end.
            while (state := (await c.get(f"/api/tasks/{task}"))["state"]) in (  # noqa: ASYNC110
                    "queued", "executing"):
                await asyncio.sleep(0.01)
            if state != "success":
                raise SystemExit(f"the process run ended {state}; see the server log")
            rates.append(n / (time.perf_counter() - started))
        return sorted(rates)[len(rates) // 2]


def events(url: str, key: str, kind: str) -> dict[tuple[str, str], datetime]:
    """When each event of ``kind`` happened, by (task id, step; "" for a task's own)."""
    out: dict[tuple[str, str], datetime] = {}
    after = 0
    while True:
        page = httpx.get(f"{url}/api/events", headers={"X-Api-Key": key},
                         params={"type": kind, "after": after, "limit": 1000}).json()
        for e in page["items"]:
            out[(e["aggregate_id"], e["data"].get("step", ""))] = datetime.fromisoformat(e["timestamp"])
        if page["next"] is None:
            return out
        after = page["next"]


def pickup_latencies(url: str, key: str, only: set[str] | None = None) -> list[float]:
    """Step assigned -> its process running, in seconds."""
    assigned = events(url, key, "Task.StepAssigned")
    started = events(url, key, "Task.StepStarted")
    return [
        (started[k] - assigned[k]).total_seconds()
        for k in started
        if k in assigned and (only is None or k[0] in only)
    ]


def queued_to_running(url: str, key: str, only: set[str]) -> list[float]:
    """Task queued -> its step's process running, in seconds: what a user waits for."""
    queued = events(url, key, "Task.Queued")
    started = events(url, key, "Task.StepStarted")
    return [(at - queued[(task, "")]).total_seconds()
            for (task, _), at in started.items() if task in only]


async def bare_spawns(n: int, cap: int, folder: Path, fresh_folders: bool = False) -> float:
    """Seconds to run `bash script.sh` (`true`) n times, cap at a time. With
    ``fresh_folders``, each in a folder of its own holding its script, made before and
    removed after, as a step's working folder is: what the file system alone costs."""
    script = folder / "script.sh"
    script.write_text("true\n")
    sem = asyncio.Semaphore(cap)

    async def one() -> None:
        async with sem:
            cwd = Path(tempfile.mkdtemp(prefix="step-", dir=folder)) if fresh_folders else folder
            own = cwd / "script.sh"
            if fresh_folders:
                own.write_text("true\n")
            proc = await asyncio.create_subprocess_exec(
                "/bin/bash", str(own), cwd=cwd,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await proc.communicate()
            if fresh_folders:
                own.unlink()
                cwd.rmdir()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--quiet", type=int, default=100, help="tasks run one at a time")
    parser.add_argument("--process-steps", type=int, default=200,
                        help="parallel steps of one deployment process")
    parser.add_argument("--postgres", default=None, help="postgresql://… (default: SQLite)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="bursts (and bare spawn loops) measured; the median is reported")
    args = parser.parse_args()
    database_url, schema = args.postgres, None
    if database_url:
        import psycopg

        # A schema of its own, dropped afterwards, so runs never see each other's tasks.
        schema = f"bench_builtin_{os.getpid()}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        database_url += ("&" if "?" in database_url else "?") + f"schema={schema}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        proc, url = start_server(data, args.cap, database_url)
        try:
            key = (data / "admin-api-key").read_text().strip()
            asyncio.run(run_tasks(url, key, min(20, args.tasks)))  # warm-up
            # Bursts on the same server, one after another: a single run on a shared or
            # virtual machine moves by a fifth either way; the median of several less so.
            bursts = [asyncio.run(run_tasks(url, key, args.tasks)) for _ in range(args.repeat)]
            burst_runs = [took for took, _ in bursts]
            client_ms = statistics.median(cpu for _, cpu in bursts) / args.tasks * 1000
            burst = pickup_latencies(url, key)
            quiet_ids = asyncio.run(run_one_at_a_time(url, key, args.quiet))
            quiet = pickup_latencies(url, key, quiet_ids)
            waited = queued_to_running(url, key, quiet_ids)
            process_s = asyncio.run(run_process(url, key, args.process_steps))
        finally:
            proc.terminate()
            proc.wait(20)
        bare_runs = [asyncio.run(bare_spawns(args.tasks, args.cap, Path(tmp)))
                     for _ in range(args.repeat)]
        folder_runs = [asyncio.run(bare_spawns(args.tasks, args.cap, Path(tmp), fresh_folders=True))
                       for _ in range(args.repeat)]
    if schema is not None:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    steps_runs = [args.tasks / took for took in burst_runs]
    steps_s = statistics.median(steps_runs)
    bare_s = statistics.median(args.tasks / took for took in bare_runs)
    folder_s = statistics.median(args.tasks / took for took in folder_runs)
    store = "postgresql" if args.postgres else "sqlite"
    rows = [
        ("pickup p50, one at a time (ms)", pct(quiet, 0.5) * 1000),
        ("pickup p99, one at a time (ms)", pct(quiet, 0.99) * 1000),
        ("queued -> running p50, one at a time (ms)", pct(waited, 0.5) * 1000),
        ("queued -> running p99, one at a time (ms)", pct(waited, 0.99) * 1000),
        (f"pickup p50, burst of {args.tasks} (ms)", pct(burst, 0.5) * 1000),
        (f"pickup p99, burst of {args.tasks} (ms)", pct(burst, 0.99) * 1000),
    ]
    print(f"median of {args.repeat} bursts of {args.tasks}: "
          + ", ".join(f"{s:,.0f}" for s in steps_runs) + " steps/s")
    print(f"(the bench's own client used {client_ms:.2f} ms of CPU per task on the same cores)")
    print(f"{'measurement':<44}{'value':>14}{'baseline':>14}{'ratio':>8}")
    print(f"{'trivial steps/s (' + store + ')':<44}{steps_s:>14,.0f}{bare_s:>14,.0f}"
          f"{steps_s / bare_s:>8.0%}")
    print(f"{f'  same, {args.process_steps} steps of one process':<44}{process_s:>14,.0f}"
          f"{bare_s:>14,.0f}{process_s / bare_s:>8.0%}")
    print(f"{'  same, against spawns in fresh folders':<44}{steps_s:>14,.0f}{folder_s:>14,.0f}"
          f"{steps_s / folder_s:>8.0%}")
    for name, value in rows:
        print(f"{name:<44}{value:>14.1f}")
    print(json.dumps({
        "bench": "builtin", "store": store, "tasks": args.tasks, "task_cap": args.cap,
        "repeat": args.repeat, "steps_per_s": round(steps_s, 1),
        "steps_per_s_runs": [round(s, 1) for s in steps_runs],
        "bare_spawns_per_s": round(bare_s, 1),
        "ratio": round(steps_s / bare_s, 3),
        "bare_folder_spawns_per_s": round(folder_s, 1),
        "ratio_to_folder_spawns": round(steps_s / folder_s, 3),
        "client_cpu_ms_per_task": round(client_ms, 3),
        "process_steps_per_s": round(process_s, 1), "process_ratio": round(process_s / bare_s, 3),
        "pickup_quiet_p50_ms": round(pct(quiet, 0.5) * 1000, 2),
        "pickup_quiet_p99_ms": round(pct(quiet, 0.99) * 1000, 2),
        "queued_to_running_quiet_p50_ms": round(pct(waited, 0.5) * 1000, 2),
        "queued_to_running_quiet_p99_ms": round(pct(waited, 0.99) * 1000, 2),
        "pickup_burst_p50_ms": round(pct(burst, 0.5) * 1000, 2),
        "pickup_burst_p99_ms": round(pct(burst, 0.99) * 1000, 2),
        "targets": {"steps_per_s": 200, "ratio": 0.5, "pickup_p99_ms": 50},
    }))


if __name__ == "__main__":
    main()
