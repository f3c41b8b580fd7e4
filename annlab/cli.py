"""`annlab`: the command line of annlab's API, and of its API keys on the server.

    annlab job submit job.json --follow     queue a job, show its progress bar, print its result
    annlab job list [--status S] [--family F] [--limit N]
    annlab job show|cancel|rerun JOB | job metrics JOB [--plot out.png]
    annlab model list [--family F] | model predict MODEL --inputs inputs.json | model sample MODEL
    annlab dataset list | dataset upload FILE --name NAME
    annlab sweep list [--family F] | sweep submit sweep.json [--follow] | sweep show|table|cancel S
    annlab key create NAME [--admin] | key revoke NAME | key list
    annlab health

One noun per resource (job, model, dataset, sweep, key), then a verb. Every command takes
`--url` and `--api-key` (default: ANNLAB_URL, ANNLAB_API_KEY) and `--json` (print the API's
JSON instead of tables, for scripts). An error answer prints one line that names the failing
field and exits 1. `key` runs on the server: it reads the service's own settings
(DATABASE_URL, ANNLAB_HOME) and writes the database directly, on a migrated database
(`make migrate`); only it imports the server's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from annlab.client import TERMINAL, AnnlabError, APIError, Client, Unreachable

HEADLINE = (
    "test_accuracy",
    "test_mse",
    "test_nmse",
    "test_nmse_mean",
    "test_loss",
    "test_elbo",
    "frechet_distance",
    "train_stable",
)

# soft_wrap: a line is never broken at the console's width, so an error stays one line. Into a
# pipe or a file, tables may be 160 wide (COLUMNS wins), instead of rich's 80, so that a row
# stays one line for grep.
PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(soft_wrap=True, width=PIPE_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False)


class UsageError(Exception):
    """A file or argument this command cannot use (exit 2)."""


# --- formatting ---------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    """Cells as plain text: never read as rich markup (an error may hold brackets)."""
    grid = Table(title=title, title_justify="left")
    for name in columns:  # ids are never cut; long values fold onto more lines
        grid.add_column(name, no_wrap=name == "id", overflow="fold")
    for row in rows:
        grid.add_row(*(Text(fmt(v)) for v in row))
    return grid


def headline(result: Mapping[str, Any] | None) -> str:
    """The figure that says how a job did: test accuracy or error, else its first number."""
    if not result:
        return ""
    for key in HEADLINE:
        if isinstance(result.get(key), int | float):
            return f"{key} {fmt(result[key])}"
    for key, value in result.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{key} {fmt(value)}"
    return ""


def progress_cell(job: Mapping[str, Any]) -> str:
    progress = job.get("progress") or {}
    if job["status"] in ("queued", "succeeded"):
        return ""
    epochs = progress.get("epochs") or "?"
    cell = f"{progress.get('epoch', 0)}/{epochs} ({progress.get('percent', 0):.0f}%)"
    phase = progress.get("phase")
    if job["status"] != "running" or phase in (None, "training"):
        return cell
    if progress.get("phase_steps"):
        phase += f" {progress.get('phase_percent') or 0:.0f}%"
    return f"{cell}, {phase}"


def job_table(job: Mapping[str, Any]) -> Table:
    """A job as key and value: what it is, where it stands, its result figures."""
    spec = job.get("spec") or {}
    rows: list[tuple[str, Any]] = [
        ("id", job["id"]),
        ("family", job["family"]),
        ("dataset", (spec.get("dataset") or {}).get("name")),
        ("status", job["status"]),
    ]
    progress = job.get("progress") or {}
    if job["status"] == "running":
        rows.append(("progress", progress_cell(job)))
        if progress.get("eta_seconds") is not None:
            rows.append(("eta_seconds", progress["eta_seconds"]))
    rows += [("n_params", job.get("n_params")), ("attempts", job.get("attempts"))]
    if job.get("rerun_of"):
        rows.append(("rerun_of", job["rerun_of"]))
    rows += [
        ("created", when(job.get("created_at"))),
        ("started", when(job.get("started_at"))),
        ("finished", when(job.get("finished_at"))),
    ]
    if job.get("error"):
        rows.append(("error", job["error"]))
    for key, value in (job.get("result") or {}).items():
        rows.append((f"result.{key}", value))
    return table(["field", "value"], rows)


def write_bytes(path: str, content: bytes) -> None:
    """To a file, or to stdout for `-` (refused on a terminal: it is a PNG)."""
    if path == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a PNG to a terminal; redirect it, or name a file")
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    else:
        Path(path).write_bytes(content)
        err.print(f"wrote {path} ({len(content)} bytes)")


def load_json(argument: str, what: str) -> Any:
    """JSON from a file, from stdin (`-`), or written inline."""
    if argument == "-":
        source, text = "stdin", sys.stdin.read()
    elif Path(argument).is_file():
        source, text = argument, Path(argument).read_text()
    elif argument.lstrip()[:1] in ("{", "["):
        source, text = f"the inline {what}", argument
    else:
        raise UsageError(f"{what}: no file {argument!r} (and it is not inline JSON)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from exc


def shape(value: Any) -> list[int]:
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return dims


# --- commands -----------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def follow(api: Client, job: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Wait with a progress bar, then show the job; 1 unless it succeeded."""
    try:
        done = api.wait(job["id"], progress=True, poll=args.poll)
    except KeyboardInterrupt:
        err.print(f"stopped following; the job goes on (annlab job cancel {job['id']})")
        return 130
    if args.json:
        emit_json(done)
    else:
        out.print(job_table(done))
    if done["status"] != "succeeded":
        reason = f": {done['error']}" if done.get("error") else ""
        err.print(Text(f"annlab: job {done['id']} {done['status']}{reason}"))
        return 1
    return 0


def queued(api: Client, job: dict[str, Any], args: argparse.Namespace, what: str) -> int:
    """What submit and rerun answer: the job followed to its end (--follow), or as queued."""
    line = f"queued {job['id']} ({what})"
    if args.follow:
        err.print(line)
        return follow(api, job, args)
    if args.json:
        emit_json(job)
    else:
        out.print(line)
    return 0


def cmd_submit(api: Client, args: argparse.Namespace) -> int:
    job = api.create_job(load_json(args.document, "job document"))
    return queued(api, job, args, f"{job['family']} on {job['spec']['dataset']['name']}")


def cmd_jobs(api: Client, args: argparse.Namespace) -> int:
    page = api.list_jobs(status=args.status, family=args.family, limit=args.limit)
    if args.json:
        emit_json(page)
        return 0
    rows = [
        (
            j["id"],
            j["family"],
            (j.get("spec") or {}).get("dataset", {}).get("name"),
            j["status"],
            progress_cell(j),
            headline(j.get("result")),
            when(j.get("created_at")),
        )
        for j in page["items"]
    ]
    title = f"{len(rows)} of {page['total']} jobs"
    columns = ["id", "family", "dataset", "status", "epoch", "result", "created"]
    out.print(table(columns, rows, title=title))
    return 0


def cmd_show(api: Client, args: argparse.Namespace) -> int:
    job = api.read_job(args.job)
    if args.json:
        emit_json(job)
    else:
        out.print(job_table(job))
    return 0


def cmd_metrics(api: Client, args: argparse.Namespace) -> int:
    if args.plot:
        write_bytes(args.plot, api.read_job_plot(args.job, "learning_curves"))
        if args.plot == "-":
            return 0
    metrics = api.read_metrics(args.job)
    if args.json:
        emit_json(metrics)
        return 0
    history = metrics["history"]
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    rows = [[row.get(key) for key in columns] for row in history]
    trained = sum(1 for row in history if row.get("epoch"))  # epoch 0: the initial weights
    out.print(table(columns, rows, title=f"{trained} epochs of {args.job}"))
    return 0


def cmd_cancel(api: Client, args: argparse.Namespace) -> int:
    job = api.cancel_job(args.job)
    if args.json:
        emit_json(job)
    else:
        ended = "cancelled" if job["status"] == "cancelled" else "asked to stop"
        out.print(f"{job['id']}: {ended} (status {job['status']})")
    return 0


def cmd_rerun(api: Client, args: argparse.Namespace) -> int:
    return queued(api, api.rerun_job(args.job), args, f"a rerun of {args.job}")


def cmd_predict(api: Client, args: argparse.Namespace) -> int:
    given = load_json(args.inputs, "inputs")
    inputs = given["inputs"] if isinstance(given, dict) and "inputs" in given else given
    if not isinstance(inputs, list):
        raise UsageError('inputs: a JSON list of examples, or {"inputs": [...]}')
    answer = api.predict(args.job, inputs, raw=args.raw or None, attention=args.attention or None)
    if args.json:
        emit_json(answer)
        return 0
    probabilities = answer.get("probabilities")
    names = answer.get("class_names")
    rows = []
    for i, output in enumerate(answer["outputs"]):
        row: list[Any] = [i, output]
        if names:
            row.append(names[i])
        if probabilities:
            row.append(max(probabilities[i]))
        rows.append(row)
    columns = ["#", "output"] + (["class"] if names else []) + (["p"] if probabilities else [])
    out.print(table(columns, rows))
    return 0


def cmd_sample(api: Client, args: argparse.Namespace) -> int:
    if args.output:
        picture = api.read_image(args.job, "samples", n=args.n, seed=args.seed, steps=args.steps)
        write_bytes(args.output, picture)
        return 0
    answer = api.sample(args.job, args.n, seed=args.seed, steps=args.steps)
    if args.json:
        emit_json(answer)
    else:
        dims = shape(answer["samples"])
        out.print(
            f"{dims[0]} samples of shape {tuple(dims[1:])}; -o grid.png draws them, "
            "--json prints them"
        )
    return 0


def cmd_models(api: Client, args: argparse.Namespace) -> int:
    page = api.list_models(family=args.family, limit=args.limit)
    if args.json:
        emit_json(page)
        return 0
    rows = [
        (
            m["id"],
            m["family"],
            m["dataset"],
            m.get("n_params"),
            headline(m.get("result")),
            ", ".join(m["verbs"]),
        )
        for m in page["items"]
    ]
    columns = ["id", "family", "dataset", "n_params", "result", "verbs"]
    out.print(table(columns, rows, title=f"{len(rows)} of {page['total']} models"))
    return 0


def cmd_datasets(api: Client, args: argparse.Namespace) -> int:
    listing = api.list_datasets()
    if args.json:
        emit_json(listing)
        return 0
    rows = [
        (
            d["name"],
            d["kind"],
            "x".join(map(str, d["input_shape"])),
            d.get("n_classes") or d.get("target_dim"),
            d.get("n_train"),
            d.get("n_test"),
            d["available"],
        )
        for d in listing["items"]
    ]
    columns = ["name", "kind", "input", "classes/targets", "train", "test", "here"]
    out.print(table(columns, rows))
    for d in listing["items"]:
        if not d["available"] and d.get("how_to_get"):
            out.print(Text(f"{d['name']}: {d['how_to_get']}"))
    return 0


def cmd_upload(api: Client, args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise UsageError(f"no file {args.file!r}")
    info = api.upload_dataset(args.file, args.name, kind=args.kind)
    if args.json:
        emit_json(info)
    else:
        out.print(table(["field", "value"], list(info.items())))
        out.print(f'jobs use it as {{"dataset": {{"name": "{info["name"]}"}}}}')
    return 0


def sweep_rows(sweeps: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for s in sweeps:
        counts = s.get("counts") or {}
        ended = sum(counts.get(status, 0) for status in TERMINAL)
        rows.append(
            (
                s["id"],
                s["family"],
                s["status"],
                s["n_cells"],
                f"{ended}/{s['n_jobs']}",
                s.get("eta_seconds"),
                when(s.get("created_at")),
            )
        )
    return rows


SWEEP_COLUMNS = ["id", "family", "status", "cells", "jobs ended", "eta_seconds", "created"]


def cmd_sweeps(api: Client, args: argparse.Namespace) -> int:
    page = api.list_sweeps(family=args.family, limit=args.limit)
    if args.json:
        emit_json(page)
    else:
        title = f"{len(page['items'])} of {page['total']} sweeps"
        out.print(table(SWEEP_COLUMNS, sweep_rows(page["items"]), title=title))
    return 0


def print_sweep_table(api: Client, sweep_id: str) -> None:
    """A row per cell: its values, n_params, mean ± std of the test figures and the seconds
    (of every figure when there is no test figure), repeats that succeeded."""
    result = api.read_sweep_table(sweep_id)
    columns = result["columns"]
    figures = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    shown = [f for f in figures if f.startswith("test_") or f == "seconds"]
    shown = shown if len(shown) > 1 else figures
    fixed = [
        c
        for c in columns
        if c not in ("succeeded", "repeats") and not c.endswith(("_mean", "_std"))
    ]
    rows = []
    for row in result["rows"]:
        values = [row.get(c) for c in fixed]
        for figure in shown:
            mean, std = row.get(f"{figure}_mean"), row.get(f"{figure}_std")
            text = "" if mean is None else f"{mean:.4g}"
            values.append(text if std is None else f"{text} ± {std:.2g}")
        values.append(f"{row.get('succeeded')}/{row.get('repeats')}")
        rows.append(values)
    title = "mean ± std over the repeats (every figure: --json or --csv)"
    out.print(table([*fixed, *shown, "succeeded"], rows, title=title))


def cmd_sweep(api: Client, args: argparse.Namespace) -> int:
    if args.action == "submit":
        sweep = api.create_sweep(load_json(args.document, "sweep document"))
        if not args.follow:
            if args.json:
                emit_json(sweep)
            else:
                out.print(f"queued sweep {sweep['id']}: {sweep['n_jobs']} jobs")
            return 0
        err.print(f"queued sweep {sweep['id']}: {sweep['n_jobs']} jobs")
        try:
            done = api.wait_sweep(sweep["id"], poll=args.poll)
        except KeyboardInterrupt:
            err.print(f"stopped following; the sweep goes on (annlab sweep cancel {sweep['id']})")
            return 130
        if args.json:
            emit_json(api.read_sweep_table(done["id"]))
        else:
            print_sweep_table(api, done["id"])
        return 0 if done["counts"].get("succeeded") == done["n_jobs"] else 1
    if args.action == "show":
        sweep = api.read_sweep(args.sweep)
        if args.json:
            emit_json(sweep)
        else:
            out.print(table(SWEEP_COLUMNS, sweep_rows([sweep])))
            out.print(table(["status", "jobs"], list(sweep["counts"].items())))
        return 0
    if args.action == "table":
        if args.csv:
            sys.stdout.write(api.read_sweep_table(args.sweep, "csv"))
        elif args.json:
            emit_json(api.read_sweep_table(args.sweep))
        else:
            print_sweep_table(api, args.sweep)
        return 0
    sweep = api.cancel_sweep(args.sweep)
    if args.json:
        emit_json(sweep)
    else:
        out.print(f"sweep {sweep['id']}: cancel requested (status {sweep['status']})")
    return 0


def cmd_health(api: Client, args: argparse.Namespace) -> int:
    health = api.healthz()
    if args.json:
        emit_json(health)
    else:
        out.print(table(["part", "state"], list(health.items())))
    return 0 if health.get("status") == "ok" else 1


def cmd_key(args: argparse.Namespace) -> int:
    """On the server: keys in the service's database (its settings, not --url)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from core import keys
    from core.db import session_scope
    from core.settings import get_settings

    url = get_settings().database_url
    try:
        with session_scope(url) as session:
            if args.action == "create":
                try:
                    key = keys.create(session, args.name, admin=args.admin)
                except ValueError as exc:
                    print(f"annlab: {exc}", file=sys.stderr)
                    return 2
                print(key)
                print(
                    f"a key for {args.name!r}{' (admin)' if args.admin else ''}; it is not "
                    "shown again. Send it as Authorization: Bearer <key>",
                    file=sys.stderr,
                )
            elif args.action == "revoke":
                if not keys.revoke(session, args.name):
                    print(f"annlab: no active key named {args.name!r}", file=sys.stderr)
                    return 1
            else:
                rows = keys.active(session)
                if args.json:
                    emit_json(
                        [
                            {
                                "name": r.name,
                                "admin": r.admin,
                                "created_at": r.created_at.isoformat(),
                            }
                            for r in rows
                        ]
                    )
                for row in [] if args.json else rows:
                    admin = "admin" if row.admin else ""
                    print(f"{row.name}\t{row.created_at:%Y-%m-%d %H:%M}\t{admin}".rstrip())
    except (OperationalError, ProgrammingError) as exc:
        print(
            f"annlab: the database is not ready ({exc.orig}); run `make migrate`", file=sys.stderr
        )
        return 1
    return 0


# --- the parser ---------------------------------------------------------------------------------


def global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """--url, --api-key, --json: accepted before and after the command. After it they default
    to SUPPRESS, so that a command's parser does not undo what was given before it."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument("--url", default=default(None), help="the API (env ANNLAB_URL)")
    parser.add_argument("--api-key", default=default(None), help="the API key (env ANNLAB_API_KEY)")
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON (for scripts)",
    )


# The spellings before one noun per resource: each names its replacement and exits 2.
RENAMED = {
    "submit": "job submit",
    "jobs": "job list",
    "show": "job show",
    "cancel": "job cancel",
    "rerun": "job rerun",
    "metrics": "job metrics",
    "predict": "model predict",
    "sample": "model sample",
    "models": "model list",
    "datasets": "dataset list",
    "upload": "dataset upload",
    "sweeps": "sweep list",
    "keys": "key",
}


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, after_command=True)
    lines = __doc__.splitlines()
    top = argparse.ArgumentParser(
        prog="annlab",
        description=lines[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(lines[2 : lines.index("", 2)]),
    )
    global_options(top, after_command=False)
    nouns = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def resource(name: str, help: str) -> argparse._SubParsersAction:
        noun = nouns.add_parser(name, help=help, description=help, parents=[common])
        return noun.add_subparsers(dest="action", required=True)

    def verb(
        verbs: argparse._SubParsersAction, name: str, run: Callable[..., int], help: str
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(run=run)
        return sub

    def following(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--follow", "-f", action="store_true", help=f"show progress until the {what} ends"
        )
        sub.add_argument("--poll", type=float, default=1.0, help="seconds between polls (1)")

    job = resource("job", "jobs: submit, list, show, metrics, cancel, rerun")
    submit = verb(job, "submit", cmd_submit, "queue a job from a JSON document")
    submit.add_argument("document", help="a .json file, - for stdin, or inline JSON")
    following(submit, "job")

    jobs = verb(job, "list", cmd_jobs, "list jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", *sorted(TERMINAL)])
    jobs.add_argument("--family")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (20)")

    for name, run, help in (
        ("show", cmd_show, "a job: status, progress, result, error"),
        ("cancel", cmd_cancel, "stop a queued or running job"),
    ):
        verb(job, name, run, help).add_argument("job", help="the job id")

    rerun = verb(job, "rerun", cmd_rerun, "queue a job's document again")
    rerun.add_argument("job")
    following(rerun, "job")

    metrics = verb(job, "metrics", cmd_metrics, "a job's per-epoch metrics")
    metrics.add_argument("job")
    metrics.add_argument(
        "--plot", metavar="PNG", help="also write the learning curves to this file (- for stdout)"
    )

    model = resource("model", "trained models: list, predict, sample")
    models = verb(model, "list", cmd_models, "trained models and their verbs")
    models.add_argument("--family")
    models.add_argument("--limit", type=int, default=20)

    predict = verb(model, "predict", cmd_predict, "a trained model's outputs for some inputs")
    predict.add_argument("job", metavar="MODEL", help="the model (its job's id)")
    predict.add_argument(
        "--inputs",
        required=True,
        help='a JSON file (a list of examples or {"inputs": [...]}), - for stdin, or inline JSON',
    )
    predict.add_argument("--raw", action="store_true", help="inputs in the dataset's own scale")
    predict.add_argument("--attention", action="store_true", help="ViT: attention maps too")

    sample = verb(model, "sample", cmd_sample, "new examples from a generative model")
    sample.add_argument("job", metavar="MODEL", help="the model (its job's id)")
    sample.add_argument("-n", type=int, help="how many (the API's default: 16; a grid: 10)")
    sample.add_argument("--seed", type=int)
    sample.add_argument("--steps", type=int, help="rbm, dbm: Gibbs steps")
    sample.add_argument("-o", "--output", metavar="PNG", help="write them as a grid picture")

    dataset = resource("dataset", "datasets: list, upload")
    verb(dataset, "list", cmd_datasets, "built-in and uploaded datasets")
    upload = verb(
        dataset, "upload", cmd_upload, "upload a dataset (.npz with X, y; or a .csv series)"
    )
    upload.add_argument("file")
    upload.add_argument("--name", required=True, help="jobs use upload:<name>")
    upload.add_argument("--kind", choices=["classification", "regression"])

    sweep = resource("sweep", "sweeps: list, submit, show, table, cancel")
    sweeps = verb(sweep, "list", cmd_sweeps, "list sweeps, newest first")
    sweeps.add_argument("--family", help="the sweeps with a cell of this family")
    sweeps.add_argument("--limit", type=int, default=20)
    sweep_submit = verb(sweep, "submit", cmd_sweep, "queue a sweep")
    sweep_submit.add_argument("document", help="a .json file, - for stdin, or inline JSON")
    following(sweep_submit, "sweep")
    for action, help in (
        ("show", "counts by status, eta"),
        ("table", "mean and std per cell"),
        ("cancel", "cancel every job not ended"),
    ):
        sub = verb(sweep, action, cmd_sweep, help)
        sub.add_argument("sweep", help="the sweep id")
        if action == "table":
            sub.add_argument("--csv", action="store_true", help="print CSV")

    health = nouns.add_parser(
        "health",
        help="whether the database and the broker answer",
        description="whether the database and the broker answer",
        parents=[common],
    )
    health.set_defaults(run=cmd_health)

    key = resource("key", "API keys (on the server: its database): create, revoke, list")
    create = verb(key, "create", cmd_key, "make a key and print it")
    create.add_argument("name", help="the owner of what the key creates")
    create.add_argument("--admin", action="store_true", help="sees and manages everything")
    revoke = verb(
        key, "revoke", cmd_key, "the key stops working (within ANNLAB_KEY_CACHE_SECONDS, 1 s)"
    )
    revoke.add_argument("name")
    verb(key, "list", cmd_key, "active keys (names, never the keys)")
    return top


def renamed(argv: Sequence[str]) -> tuple[str, str] | None:
    """(old, new) for a command given in a spelling before one noun per resource, else None."""
    words = iter(argv)
    for word in words:
        if word in ("--url", "--api-key"):
            next(words, None)
        elif not word.startswith("-"):
            return (word, RENAMED[word]) if word in RENAMED else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if spelling := renamed(argv):
        err.print(f"annlab: `annlab {spelling[0]}` is spelled `annlab {spelling[1]}`")
        return 2
    args = parser().parse_args(argv)
    if args.run is cmd_key:
        return cmd_key(args)
    api = Client(args.url, args.api_key)
    try:
        return args.run(api, args)
    except Unreachable as exc:
        err.print(Text(f"annlab: no answer from {api.base_url} ({exc.__cause__ or exc})"))
        return 1
    except APIError as exc:
        err.print(Text("annlab: " + " ".join(str(exc).split())))
    except BrokenPipeError:  # `annlab ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UsageError, OSError) as exc:
        err.print(Text(f"annlab: {exc}"))
        return 2
    except AnnlabError as exc:
        err.print(Text(f"annlab: {exc}"))
    finally:
        api.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
