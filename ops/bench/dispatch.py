"""Dispatch to external agents: pickup latency and throughput, through a real `shoal
server` and real `shoal agent` processes over the server's embedded nats-server.

Measures:
  * pickup latency, one task at a time, for a listening and for a polling agent:
    Task.StepAssigned -> Task.StepStarted (the agent has the script running and its
    "started" report is recorded), p50/p99 from the events' own timestamps;
  * trivial steps per second: N `true` scripts queued at once into a pool of --agents
    polling agents (capacity --capacity each), first POST to last task finished;
and, in the same run, the raw baseline: a bare NATS request/reply round trip on loopback
(NatsBus to NatsBus through its own nats-server). Prints a table and one JSON line.
The client is ops/bench/wire.py (see builtin.py for why); its CPU is printed too.

    .venv/bin/python ops/bench/dispatch.py [--tasks 400] [--quiet 100] [--agents 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from builtin import pct, pickup_latencies, start_server
from wire import Wire, own_cpu_s

from adapters.nats import EmbeddedNats, EmbeddedNatsConfig, NatsBus

SHOAL = str(Path(sys.executable).with_name("shoal"))


def start_agent(url: str, key: str, home: Path, name: str, pool: str, style: str,
                capacity: int) -> subprocess.Popen[str]:
    subprocess.run(
        [SHOAL, "agent", "register-worker", "--server", url, "--api-key", key, "--name", name,
         "--worker-pool", pool, "--comms-style", style, "--home", str(home),
         "--capacity", str(capacity)],
        check=True, capture_output=True, text=True,
    )
    with (home.parent / f"{name}.log").open("w") as log:  # a file, not a pipe to drain
        return subprocess.Popen(
            [SHOAL, "agent", "run", "--home", str(home), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )


def wait_online(c: httpx.Client, pool: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = c.get("/api/workers", params={"pool": pool}).json()["items"]
        if sum(w["is_online"] for w in items) >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"agents of pool {pool} did not come online")


async def quiet_pickups(url: str, key: str, pool: str, n: int) -> set[str]:
    """n trivial scripts, each queued once the last has ended; their task ids."""
    ids: set[str] = set()
    async with Wire(url, key, connections=1) as c:
        for _ in range(n):
            task_id = (await c.post("/api/tasks/script", {
                "syntax": "bash", "script_body": "true", "worker_pool_id": pool}))["id"]
            ids.add(task_id)
            while (await c.get(f"/api/tasks/{task_id}"))["state"] != "success":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    return ids


async def burst(url: str, key: str, pool: str, n: int) -> tuple[float, float]:
    """n trivial scripts queued at once; (seconds until all succeeded, this process's
    own CPU seconds meanwhile)."""
    async with Wire(url, key, connections=32) as c:

        async def count(state: str) -> int:
            return int((await c.get("/api/tasks", state=state, take=1))["total"])

        before = await count("success")
        cpu, started = own_cpu_s(), time.perf_counter()

        async def submit() -> None:
            await c.post("/api/tasks/script", {
                "syntax": "bash", "script_body": "true", "worker_pool_id": pool})

        await asyncio.gather(*(submit() for _ in range(n)))
        while await count("success") - before < n:
            if await count("failed"):
                raise SystemExit("a task failed; see the server log")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started, own_cpu_s() - cpu


async def bare_round_trips(folder: Path, n: int) -> list[float]:
    """Request/reply between two connections through a nats-server of its own."""
    server = EmbeddedNats(EmbeddedNatsConfig(folder))
    await server.start()
    replier, requester = NatsBus(), NatsBus()
    try:
        await replier.start(server.url, "bench-replier")
        await requester.start(server.url, "bench-requester")

        async def echo(msg: object) -> None:
            await msg.respond(b"ok")  # type: ignore[attr-defined]

        await replier.subscribe("bench.echo", echo)
        times = []
        for _ in range(n + 50):
            t0 = time.perf_counter()
            await requester.request("bench.echo", b"x", timeout=2.0)
            times.append(time.perf_counter() - t0)
        return times[50:]
    finally:
        await requester.stop()
        await replier.stop()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--quiet", type=int, default=100, help="tasks run one at a time, per style")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="bursts measured; the median is reported")
    args = parser.parse_args()
    agents: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = start_server(root / "data", max(32, args.agents * args.capacity), None)
        key = (root / "data" / "admin-api-key").read_text().strip()
        try:
            with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=30) as c:
                for pool in ("listen", "poll", "farm"):
                    c.post("/api/worker-pools", json={"name": pool}).raise_for_status()
                agents.append(start_agent(url, key, root / "l1", "l1", "listen", "listening", 4))
                agents.append(start_agent(url, key, root / "p1", "p1", "poll", "polling", 4))
                for i in range(args.agents):
                    agents.append(start_agent(url, key, root / f"f{i}", f"f{i}", "farm", "polling",
                                              args.capacity))
                for pool, n in (("listen", 1), ("poll", 1), ("farm", args.agents)):
                    wait_online(c, pool, n)
            pickups = {}
            for pool in ("listen", "poll"):
                asyncio.run(quiet_pickups(url, key, pool, 10))  # warm-up
                ids = asyncio.run(quiet_pickups(url, key, pool, args.quiet))
                pickups[pool] = pickup_latencies(url, key, ids)
            asyncio.run(burst(url, key, "farm", min(40, args.tasks)))  # warm-up
            # Several bursts, one after another: one run on a virtual machine moves by a
            # fifth either way; the median of several less so.
            bursts = [asyncio.run(burst(url, key, "farm", args.tasks)) for _ in range(args.repeat)]
            burst_runs = [took for took, _ in bursts]
            client_ms = statistics.median(cpu for _, cpu in bursts) / args.tasks * 1000
        finally:
            for agent in agents:
                agent.send_signal(signal.SIGTERM)
            for agent in agents:
                agent.wait(20)
            proc.terminate()
            proc.wait(20)
        bare = asyncio.run(bare_round_trips(root / "bare", 1000))
    steps_runs = [args.tasks / took for took in burst_runs]
    steps_s = statistics.median(steps_runs)
    bare_p50 = pct(bare, 0.5) * 1000
    rows = [
        ("bare NATS request/reply p50 (ms)", bare_p50, None),
        ("bare NATS request/reply p99 (ms)", pct(bare, 0.99) * 1000, None),
    ]
    for style, pool in (("listening", "listen"), ("polling", "poll")):
        rows.append((f"pickup p50, {style} (ms)", pct(pickups[pool], 0.5) * 1000, bare_p50))
        rows.append((f"pickup p99, {style} (ms)", pct(pickups[pool], 0.99) * 1000, None))
    print(f"{'measurement':<40}{'value':>12}{'x bare p50':>12}")
    for name, value, base in rows:
        ratio = f"{value / base:>12.1f}" if base else ""
        print(f"{name:<40}{value:>12.2f}{ratio}")
    print(f"{f'trivial steps/s, {args.agents} polling agents':<40}{steps_s:>12.0f}"
          f"   (median of {', '.join(f'{s:.0f}' for s in steps_runs)})")
    print(f"(the bench's own client used {client_ms:.2f} ms of CPU per task on the same cores)")
    print(json.dumps({
        "bench": "dispatch", "store": "sqlite", "tasks": args.tasks, "agents": args.agents,
        "capacity": args.capacity, "repeat": args.repeat, "steps_per_s": round(steps_s, 1),
        "steps_per_s_runs": [round(s, 1) for s in steps_runs],
        "client_cpu_ms_per_task": round(client_ms, 3),
        "bare_nats_rtt_p50_ms": round(bare_p50, 3),
        "bare_nats_rtt_p99_ms": round(pct(bare, 0.99) * 1000, 3),
        **{f"pickup_{s}_{q}_ms": round(pct(pickups[p], v) * 1000, 2)
           for s, p in (("listening", "listen"), ("polling", "poll"))
           for q, v in (("p50", 0.5), ("p99", 0.99))},
        "targets": {"pickup_p50_ms": 10, "pickup_p99_ms": 50, "steps_per_s": 200},
    }))


if __name__ == "__main__":
    main()
