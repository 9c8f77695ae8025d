"""Cold start: `shoal server` process start -> first 200 from /api/health.

Baseline in the same run: a bare interpreter that imports the same web stack and
exits, i.e. the part of the start-up Shoal cannot avoid. Prints a table and a JSON line.

    .venv/bin/python ops/bench/coldstart.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHOAL = str(Path(sys.executable).with_name("shoal"))


def start_once(data_dir: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [SHOAL, "server", "--data-dir", str(data_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    url = None
    for line in proc.stdout:
        match = re.search(r'"url":"(http://[^"]+)"', line)
        if match:
            url = match.group(1)
            break
    if url is None:
        raise SystemExit("server did not start")
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.005)
    took = time.perf_counter() - started
    proc.terminate()
    proc.wait(15)
    proc.stdout.close()
    return took


def bare_imports() -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import fastapi, uvicorn, eventsourcing.sqlite, orjson"], check=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first = start_once(Path(tmp) / "first")  # includes the one-time install
        restarts = [start_once(Path(tmp) / "first") for _ in range(args.runs)]
    baseline = statistics.median(bare_imports() for _ in range(args.runs))
    restart = statistics.median(restarts)
    rows = [
        ("first start (installs)", first),
        ("restart (median)", restart),
        ("baseline: bare imports", baseline),
    ]
    print(f"{'measurement':<26}{'seconds':>10}{'x baseline':>12}")
    for name, value in rows:
        print(f"{name:<26}{value:>10.3f}{value / baseline:>12.2f}")
    print(json.dumps({"bench": "coldstart", "first_start_s": round(first, 3),
                      "restart_s": round(restart, 3), "bare_imports_s": round(baseline, 3),
                      "target_s": 3.0}))


if __name__ == "__main__":
    main()
