"""Every scaled sweep recipe of docs/recipes/ (the course's experiments) through the real
service, as `make run` starts it (the API under uvicorn and one Celery worker, embedded
defaults, a fresh temporary ANNLAB_HOME): all sweeps are posted at once and the script waits
for every job to end. Prints, per sweep and in all: its jobs, the seconds from the first POST
to its last job's end, the sum of its jobs' wall times (started to finished), the sum of their
epochs' seconds (the training), and the ratio of the two sums. A stacked job's wall time and
epoch seconds are its stack's, so sums over stacked jobs count a stack's time once per member.

    .venv/bin/python benchmarks/recipes.py [--stack-max N] [--threads N] [--only NAME]
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sweeps import check_alive, service  # noqa: E402

RECIPES = ROOT / "docs" / "recipes"


def sweeps(only: str | None) -> dict[str, dict[str, Any]]:
    """The scaled recipes that are sweeps (a `base`), by name."""
    found = {}
    for path in sorted(RECIPES.glob("*.json")):
        body = json.loads(path.read_text())
        if "base" in body and (only is None or only in path.stem):
            found[path.stem] = body
    return found


def at(text: str) -> datetime:
    """A timestamp of the API (UTC, with or without its offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds(a: str | None, b: str | None) -> float:
    return (at(b) - at(a)).total_seconds() if a and b else 0.0


def report(client: httpx.Client, ids: dict[str, str], posted: datetime) -> bool:
    """Print the table; returns whether a job did not succeed."""
    print(f"{'recipe':30} {'jobs':>4} {'done s':>7} {'wall s':>8} {'epochs s':>8} {'ratio':>6}")
    n, last_done, walls, trained, failed = 0, 0.0, 0.0, 0.0, False
    for name, sweep_id in ids.items():
        sweep = client.get(f"/sweeps/{sweep_id}").json()
        jobs = [client.get(f"/jobs/{j['id']}").json() for c in sweep["cells"] for j in c["jobs"]]
        wall = sum(seconds(j["started_at"], j["finished_at"]) for j in jobs)
        epochs = sum(
            row["seconds"]
            for j in jobs
            for row in client.get(f"/jobs/{j['id']}/metrics").json()["history"]
        )
        last = max(at(j["finished_at"]) for j in jobs if j["finished_at"])
        done = (last - posted).total_seconds()
        bad = [j["id"] for j in jobs if j["status"] != "succeeded"]
        failed = failed or bool(bad)
        ratio = wall / epochs if epochs else float("inf")
        note = f"  not succeeded: {', '.join(bad)}" if bad else ""
        print(f"{name:30} {len(jobs):>4} {done:7.1f} {wall:8.1f} {epochs:8.1f} {ratio:6.2f}{note}")
        n, last_done = n + len(jobs), max(last_done, done)
        walls, trained = walls + wall, trained + epochs
    print(f"{'all':30} {n:>4} {last_done:7.1f} {walls:8.1f} {trained:8.1f} {walls / trained:6.2f}")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-max", type=int, help="ANNLAB_STACK_MAX (default: the service's)")
    parser.add_argument("--threads", type=int, help="ANNLAB_TORCH_THREADS for the worker")
    parser.add_argument("--only", help="the recipes whose name contains this")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the services stop in `finally`
    bodies = sweeps(args.only)
    home = Path(tempfile.mkdtemp(prefix="annlab-recipes-"))
    env = {**os.environ, "ANNLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("DATABASE_URL", "BROKER_URL", "ANNLAB_STACK_MAX", "ANNLAB_TORCH_THREADS"):
        env.pop(name, None)
    if args.stack_max is not None:
        env["ANNLAB_STACK_MAX"] = str(args.stack_max)
    if args.threads is not None:
        env["ANNLAB_TORCH_THREADS"] = str(args.threads)
    with service(home, env) as (client, children):
        ids = {}
        for name, body in bodies.items():
            response = client.post("/sweeps", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"{name}: POST /sweeps {response.status_code} {response.text}")
            ids[name] = response.json()["id"]
        posted = datetime.now(UTC)
        while True:
            counts = [client.get(f"/sweeps/{i}").json()["counts"] for i in ids.values()]
            if all(c["queued"] == 0 and c["running"] == 0 for c in counts):
                break
            check_alive(children)
            time.sleep(1.0)
        failed = report(client, ids, posted)
    if failed:
        print(f"logs kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
