"""Two seed grids through the real service, stacked against one job at a time: the API under
uvicorn and one Celery worker, started as `make run` starts them (workers.launch.commands), on
the embedded defaults (SQLite and kombu's SQLite broker) in a fresh temporary ANNLAB_HOME for
each (grid, mode) run, with ANNLAB_STACK_MAX=1 (off: every job trains alone) and then the
service's default or --stack-max (on). A fresh service per run means the worker's dataset cache
starts empty each time, in both modes. Wall time runs from the POST /sweeps response to the
last job's end as the service recorded it (its finished_at; GET /sweeps/{id}, polled every 0.5
s, tells when every job has ended, but would add up to a poll's interval). Prints a table of
wall seconds and the ratio off / on, and the worst relative difference between a job's test
figures stacked and alone (jobs matched by (cell, repeat); a std over folds against the folds'
mean), which should be under 1e-3. With --repeat N the two modes run N times each, alternately
(off, on, off, on, ...), and the ratio printed is the median of each pair's (a host whose speed
drifts moves both runs of a pair alike); the wall times are the medians. A stack's key leaves
out a job's seeds, noise and hidden widths (core.spec, stack_key), not its lag: the time-series
grid stacks the 5 widths x 5 folds of each lag; the regression grid the 3 noises x 4 repeats of
each optimizer and width (LBFGS's stacks by width: padding would change its sums).

    .venv/bin/python benchmarks/sweeps.py [--grid ts|regression|both] [--scale 1.0]
        [--threads N] [--stack-max N] [--repeat N]
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.spec import DATASET_EPOCHS, DEFAULT_EPOCHS  # noqa: E402
from workers.launch import commands, stop_all  # noqa: E402

TOLERANCE = 1e-3
GRIDS: dict[str, dict[str, Any]] = {
    "ts": {
        "base": {
            "family": "mlp",
            "dataset": {"name": "mackey_glass", "n_points": 2000, "kfold": 5},
            "model": {"hidden": [10]},
        },
        "axes": {"dataset.lag": [10, 30, 50, 75, 100], "model.hidden.0": [10, 30, 50, 75, 100]},
        "repeats": 1,
    },
    "regression": {
        "base": {"family": "mlp", "dataset": {"name": "function1d"}, "model": {"hidden": [10]}},
        "axes": {
            "dataset.noise": [0, 0.15, 0.5],
            "train.optimizer.name": ["gd", "sgd", "nesterov", "adam", "lbfgs"],
            "model.hidden.0": [10, 30, 50],
        },
        "repeats": 4,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def service(
    home: Path, env: dict[str, str], worker_env: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Client, dict[str, subprocess.Popen]]]:
    """The API and one worker as `make run` starts them (workers.launch.commands) over `home`,
    its database migrated, their logs in `home`; a client of the API once both are ready, and
    the processes. Stopped on the way out."""
    alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(alembic, cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    children: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands("127.0.0.1", port).items():
            with open(home / f"{name}.log", "ab") as log:
                children[name] = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=(worker_env or env) if name == "worker" else env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_for("the API", lambda: healthy(client))
            wait_for("the worker", lambda: b" ready." in (home / "worker.log").read_bytes())
            yield client, children
    finally:
        stop_all(children)


def check_alive(children: dict[str, subprocess.Popen]) -> None:
    for name, child in children.items():
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited with {child.returncode}")


def run_sweep(
    body: dict[str, Any], home: Path, stack_max: int | None, threads: int | None
) -> tuple[float, dict[tuple[int, int], dict[str, Any]], list[int]]:
    """Wall seconds of the sweep on a fresh service, each job (by (cell, repeat)), and the
    size of each stack the worker trained (from its log)."""
    env = {**os.environ, "ANNLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_STACK_MAX"):
        env.pop(name, None)
    if stack_max is not None:
        env["ANNLAB_STACK_MAX"] = str(stack_max)
    worker_env = env | ({"ANNLAB_TORCH_THREADS": str(threads)} if threads else {})
    with service(home, env, worker_env) as (client, children):
        response = client.post("/sweeps", json=body)
        started = time.time()  # the worker's clock too: finished_at is on this machine's
        if response.status_code != 202:
            raise RuntimeError(f"POST /sweeps: {response.status_code} {response.text}")
        sweep_id = response.json()["id"]
        while True:
            sweep = client.get(f"/sweeps/{sweep_id}").json()
            counts = sweep["counts"]
            if counts["queued"] == 0 and counts["running"] == 0:
                break
            check_alive(children)
            time.sleep(0.5)
        jobs = {
            (cell["cell"], job["repeat"]): client.get(f"/jobs/{job['id']}").json()
            for cell in sweep["cells"]
            for job in cell["jobs"]
        }
        ended = [datetime.fromisoformat(j["finished_at"]) for j in jobs.values()]
        wall = max(e.timestamp() for e in ended) - started
    log = (home / "worker.log").read_text(errors="replace")
    return wall, jobs, [int(n) for n in re.findall(r"trains in a stack of (\d+)", log)]


def relative(a: float, b: float, *scales: float) -> float:
    scale = max(abs(a), abs(b), *(abs(s) for s in scales))
    return abs(a - b) / scale if scale else 0.0


def compare(
    off: dict[tuple[int, int], dict[str, Any]], on: dict[tuple[int, int], dict[str, Any]]
) -> tuple[float, str, list[str]]:
    """The worst relative difference of a test figure, where it was, and the jobs not alike."""
    worst, where, problems = 0.0, "-", []
    for key, alone in sorted(off.items()):
        stacked = on.get(key)
        if stacked is None or alone["status"] != "succeeded" or stacked["status"] != "succeeded":
            state = stacked["status"] if stacked else "missing"
            problems.append(f"{key}: off {alone['status']}, on {state}")
            continue
        for figure, value in (alone.get("result") or {}).items():
            if not figure.startswith("test_") or not isinstance(value, int | float):
                continue
            other = (stacked.get("result") or {}).get(figure)
            if not isinstance(other, int | float):
                problems.append(f"{key}: {figure} missing when stacked")
                continue
            # A spread over folds is measured against the figure it spreads: the folds' mean
            # (the std of five nearly equal numbers is itself near 0).
            means = [
                r.get(figure.removesuffix("_std") + "_mean", 0.0)
                if figure.endswith("_std")
                else 0.0
                for r in (alone.get("result") or {}, stacked.get("result") or {})
            ]
            difference = relative(float(value), float(other), *map(float, means))
            if difference > worst or where == "-":
                worst, where = difference, f"cell {key[0]} repeat {key[1]} {figure}"
            if difference > TOLERANCE:
                problems.append(f"{key}: {figure} alone {value!r} stacked {other!r}")
    return worst, where, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=["ts", "regression", "both"], default="both")
    parser.add_argument("--scale", type=float, default=1.0, help="epochs x this (default 1)")
    parser.add_argument("--threads", type=int, help="ANNLAB_TORCH_THREADS for the worker")
    parser.add_argument("--stack-max", type=int, help="ANNLAB_STACK_MAX when on (default: unset)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode, alternately")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the services stop in `finally`
    grids = list(GRIDS) if args.grid == "both" else [args.grid]
    print(f"epochs x {args.scale}, threads {args.threads or 'default'}, stack max {args.stack_max}")
    rows: list[tuple[str, int, float, float, float, float, str]] = []
    for grid in grids:
        body = GRIDS[grid]
        default = DATASET_EPOCHS.get(body["base"]["dataset"]["name"], DEFAULT_EPOCHS)
        epochs = max(1, round(default * args.scale))
        print(f"{grid}: {epochs} epochs")
        if args.scale != 1.0:
            body = {**body, "base": {**body["base"], "train": {"epochs": epochs}}}
        walls: dict[str, list[float]] = {"off": [], "on": []}
        results: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
        for _ in range(args.repeat):
            for mode, stack_max in (("off", 1), ("on", args.stack_max)):
                home = Path(tempfile.mkdtemp(prefix=f"annlab-sweeps-{grid}-{mode}-"))
                try:
                    wall, results[mode], stacks = run_sweep(body, home, stack_max, args.threads)
                except BaseException:
                    print(f"{grid} {mode}: stopped; logs in {home}", file=sys.stderr)
                    raise
                walls[mode].append(wall)
                failed = [k for k, j in results[mode].items() if j["status"] != "succeeded"]
                n, largest = len(results[mode]), max(stacks, default=0)
                stacked = f"{sum(stacks)} in {len(stacks)} stacks of jobs (largest {largest})"
                print(f"{grid} {mode}: {n} jobs in {wall:.1f} s; {stacked}", flush=True)
                if failed:
                    print(f"  {len(failed)} did not succeed; logs kept in {home}")
                else:
                    shutil.rmtree(home, ignore_errors=True)
        worst, where, problems = compare(results["off"], results["on"])
        for problem in problems:
            print(f"  {grid}: {problem}")
        ratios = [off / on for off, on in zip(walls["off"], walls["on"], strict=True)]
        if len(ratios) > 1:
            print(f"{grid}: ratios " + ", ".join(f"{r:.2f}" for r in ratios))
        off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
        rows.append((grid, len(results["off"]), off, on, statistics.median(ratios), worst, where))
    header = f"{'grid':10} {'jobs':>5} {'off s':>8} {'on s':>8} {'off/on':>7} {'worst rel':>10}"
    print(f"{header}  where")
    for grid, n, off, on, ratio, worst, where in rows:
        print(f"{grid:10} {n:>5} {off:8.1f} {on:8.1f} {ratio:7.2f} {worst:10.2e}  {where}")


if __name__ == "__main__":
    main()
