"""Sweeps (no torch here): a base job, axes of values at dotted paths (a grid, zipped groups,
random samples), repeats over seeds; the jobs they expand to, the fair release of those jobs to
the broker, and the mean/std table of their results.

A sweep's jobs are stored `queued` but not sent. `release` picks, for every sweep, just enough
of them to send that at most `window` wait in the broker; the workers call it (and send those)
when they take up a job and when they end one, and the reaper every few seconds. So a job
submitted after a sweep waits behind a few of the sweep's jobs, not all of them, and two
sweeps' jobs alternate.
"""

import copy
import itertools
import json
import math
import random
import reprlib
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from core.db import FINISHED, Job, Metric, Sweep, utcnow
from core.spec import DATASET_NAME, StrictModel

Path = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
]
Values = Annotated[list[Any], Field(min_length=1, max_length=1000)]
# A mapping keyed by Path: the document says that every key is one (pydantic states the key
# pattern as patternProperties, which on its own lets other keys through).
PATHS_ONLY = {"additionalProperties": False}
MAX_SWEEP_JOBS = 1000  # cells x repeats of one sweep
FAMILY_SEPARATOR = ","  # sweeps.family: the families of a sweep's cells, joined
# How a message quotes an axis value: a long string or list cut short.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_quote = _short.repr


class Range(StrictModel):
    """Random search: values drawn uniformly (or log-uniformly) in [low, high], or from
    `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="draw log-uniformly (low > 0)")
    integer: bool = Field(False, description="round to an integer")
    choices: list[Any] | None = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low and high")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def draw(self, rng: random.Random) -> Any:
        if self.choices is not None:
            return rng.choice(self.choices)
        assert self.low is not None and self.high is not None
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else value


class RandomSearch(StrictModel):
    n: int = Field(ge=1, le=MAX_SWEEP_JOBS, description="points drawn")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    ranges: dict[Path, Range] = Field(min_length=1, max_length=32, json_schema_extra=PATHS_ONLY)


class Halving(StrictModel):
    """Asynchronous successive halving (ASHA, Li et al. 2020): at epochs min_epochs,
    min_epochs * reduction, ... a job goes on only if its `metric` is in the best
    1/reduction of the jobs of its sweep that reached that epoch so far; the others stop
    there and keep their results."""

    metric: str = Field(max_length=64, description="a per-epoch metric of the family")
    min_epochs: int = Field(1, ge=1, le=10_000)
    reduction: int = Field(3, ge=2, le=10)

    def rungs(self, epochs: int) -> list[int]:
        rungs, r = [], self.min_epochs
        while r < epochs:
            rungs.append(r)
            r *= self.reduction
        return rungs


def reported(
    session: Session, sweep_id: str, fold: int, epoch: int, *, besides: str
) -> list[dict[str, Any]]:
    """The metric rows that a sweep's jobs other than `besides` recorded at (fold, epoch)."""
    return list(
        session.scalars(
            select(Metric.values)
            .join(Job, Job.id == Metric.job_id)
            .where(Job.sweep_id == sweep_id, Job.id != besides)
            .where(Metric.epoch == epoch, Metric.fold == fold)
        )
    )


# What the document states of a sweep's base; the rest of it is checked as POST /jobs checks a
# job (a 422 on base.<field>).
BASE_SCHEMA = {
    "type": "object",
    "required": ["family", "dataset"],
    "properties": {
        "family": {"type": "string"},
        "dataset": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": DATASET_NAME}},
        },
    },
}
# One of these makes more than one job (the validator below says so in words).
SOMETHING_TO_SWEEP = [
    {"required": ["axes"], "properties": {"axes": {"minProperties": 1}}},
    {"required": ["zip"], "properties": {"zip": {"minItems": 1}}},
    {"required": ["random"]},
    {"required": ["repeats"], "properties": {"repeats": {"minimum": 2}}},
]


class SweepSpec(StrictModel):
    model_config = ConfigDict(json_schema_extra={"anyOf": SOMETHING_TO_SWEEP})

    base: dict[str, Any] = Field(
        description="a job document, as for POST /jobs", json_schema_extra=BASE_SCHEMA
    )
    axes: dict[Path, Values] = Field(
        {},
        max_length=32,
        json_schema_extra=PATHS_ONLY,
        description="a grid: values per dotted path into the job document "
        '(e.g. "model.hidden.0": [25, 50, 100], "train.optimizer.name": ["sgd", "adam"])',
    )
    zip: list[Annotated[dict[Path, Values], Field(min_length=1, json_schema_extra=PATHS_ONLY)]] = (
        Field(
            [],
            max_length=16,
            description="groups of paths whose values change together (equal lengths); each group "
            "is one more axis of the grid",
        )
    )
    random: RandomSearch | None = Field(
        None, description="n random points, crossed with the grid (if any)"
    )
    repeats: int = Field(1, ge=1, le=100, description="runs of each cell, seeds seed..seed+k-1")
    paired: bool = Field(
        True,
        description="every cell of a repeat uses the same seed: the same initial weights "
        "where the cells' models are the same, and the same data order; false: every job "
        "gets a seed of its own",
    )
    halving: Halving | None = None

    @model_validator(mode="after")
    def _something_to_sweep(self) -> Self:
        if not (self.axes or self.zip or self.random) and self.repeats == 1:
            raise ValueError("give axes, zip, random or repeats > 1: there is nothing to sweep")
        return self


class SweepProblem(ValueError):
    """A sweep that cannot run; `field` names where (`axes.model.hidden.0`, `zip.1`...), `type`
    what failed (pydantic's type where the base itself fails validation)."""

    def __init__(self, field: str, message: str, type_: str = "sweep_invalid"):
        super().__init__(message)
        self.field = field
        self.type = type_


def _set(document: dict[str, Any], full: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (list items by index) in the document as the user wrote it, where
    `full` (the same document with every default filled in) has that path. Sections the user
    left out are added empty, so that the defaults that go with the new value still apply
    (an axis over train.optimizer.name gets each optimizer's own default lr); a list is
    copied whole before one item changes. KeyError if `full` has no such path."""
    *parents, last = path.split(".")
    node, known = document, full
    for part in parents:
        known = _child(known, part, path)
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node.get(part), dict | list):
            node[part] = copy.deepcopy(known) if isinstance(known, list) else {}
        node = node[part]
    if isinstance(known, list):
        node[_index(known, last, path)] = value
    elif isinstance(known, dict) and last in known:
        node[last] = value
    else:
        raise KeyError(path)


def _index(node: list, part: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise KeyError(path)
    return int(part)


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if isinstance(node, dict) and isinstance(node.get(part), dict | list):
        return node[part]
    raise KeyError(path)


Cell = dict[str, Any]  # path -> value


def cells_of(spec: SweepSpec) -> list[Cell]:
    """The grid (axes and zipped groups) crossed with the random points, in a fixed order."""
    axes: list[list[Cell]] = [[{path: v} for v in values] for path, values in spec.axes.items()]
    for k, group in enumerate(spec.zip):
        lengths = {path: len(values) for path, values in group.items()}
        if len(set(lengths.values())) > 1:
            raise SweepProblem(f"zip.{k}", f"zipped paths must have as many values: {lengths}")
        if not group:
            raise SweepProblem(f"zip.{k}", "a zipped group needs at least one path")
        rows = zip(*group.values(), strict=True)
        axes.append([dict(zip(group, values, strict=True)) for values in rows])
    if spec.random is not None:
        rng = random.Random(spec.random.seed)
        points = [
            {path: r.draw(rng) for path, r in spec.random.ranges.items()}
            for _ in range(spec.random.n)
        ]
        axes.append(points)
    combos = itertools.product(*axes)
    return [dict(kv for part in combo for kv in part.items()) for combo in combos]


def expand(
    spec: SweepSpec, normalize: Callable[[dict[str, Any]], dict[str, Any]], max_jobs: int
) -> tuple[list[Cell], list[list[dict[str, Any]]]]:
    """The cells and, per cell, one job document per repeat, each validated by `normalize`
    (which returns the job as stored, or raises ValidationError). SweepProblem names the
    axis and value of the first cell that fails."""
    try:
        base = normalize(spec.base)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ("", "family") if first["type"].startswith("union_tag") else first["loc"]
        where = ".".join(str(p) for p in loc[1:])
        raise SweepProblem(
            f"base.{where}" if where else "base", first["msg"], first["type"]
        ) from exc
    cells = cells_of(spec)
    if len(cells) * spec.repeats > max_jobs:
        raise SweepProblem(
            "axes",
            f"{len(cells)} cells x {spec.repeats} repeats = {len(cells) * spec.repeats} jobs; "
            f"a sweep may have at most {max_jobs}",
        )
    documents = []
    references: dict[str, dict[str, Any]] = {}
    for index, cell in enumerate(cells):
        document = copy.deepcopy(spec.base)
        # Whole values (a family, a section) first; the paths into a section then go into the
        # one the cell set, checked against that document's defaults (its family's).
        ordered = sorted(cell, key=lambda path: path.count("."))
        shown = ", ".join(f"{p}={_quote(v)}" for p, v in cell.items())
        full = base
        for k, path in enumerate(ordered):
            if k and "." in path and "." not in ordered[k - 1]:
                full = _reference(document, base, normalize, references)
            try:
                _set(document, full, path, cell[path])
            except KeyError:
                which = f"cell {index} ({shown}): " if full is not base else ""
                raise SweepProblem(
                    _axis_field(spec, path),
                    f"{which}{path!r} is not a field of the job document (paths go through its "
                    "sections and list items, e.g. model.hidden.0)",
                ) from None
        try:
            document = normalize(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            tag = first["type"].startswith("union_tag")
            culprit = "family" if tag and "family" in cell else _culprit(cell, first["loc"])
            message = f"cell {index} ({shown}): {first['msg']}"
            if culprit == "family" and not tag and "model" not in cell:
                message += "; a cell of another family needs a model section of its own: "
                message += 'zip "family" with "model"'
            raise SweepProblem(_axis_field(spec, culprit), message) from exc
        except SweepProblem as exc:  # e.g. a dataset that is not here
            where = exc.field.removeprefix("base.")
            raise SweepProblem(
                _axis_field(spec, _culprit(cell, ("", *where.split(".")))),
                f"cell {index} ({shown}): {exc}",
            ) from exc
        runs = []
        for repeat in range(spec.repeats):
            run = copy.deepcopy(document)
            offset = repeat if spec.paired else repeat * len(cells) + index
            seed = document["train"]["seed"]
            run["train"]["seed"] = seed + offset
            if run["train"]["seed"] > 2**31 - 1:
                raise SweepProblem(
                    "repeats", f"cell {index}: seed {seed} + {offset} is past 2^31 - 1"
                )
            runs.append(run)
        documents.append(runs)
    return cells, documents


def _reference(
    document: dict[str, Any],
    base: dict[str, Any],
    normalize: Callable[[dict[str, Any]], dict[str, Any]],
    seen: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """What paths into `document` are checked against: the document with its defaults (those
    of its own family) filled in, or the base's where it does not validate yet (the cell's
    own check says why)."""
    key = json.dumps(document, sort_keys=True)
    if key not in seen:
        try:
            seen[key] = normalize(document)
        except (ValidationError, SweepProblem):
            seen[key] = base
    return seen[key]


def _culprit(cell: Cell, loc: tuple[Any, ...]) -> str:
    """The cell's path that the validation error is about: the one on its way, else the
    family where the cell sets one, else the first."""
    where = ".".join(str(p) for p in loc[1:])
    for path in cell:
        if where.startswith(path) or path.startswith(where):
            return path
    return "family" if "family" in cell else next(iter(cell), "base")


def _axis_field(spec: SweepSpec, path: str) -> str:
    if path in spec.axes:
        return f"axes.{path}"
    for k, group in enumerate(spec.zip):
        if path in group:
            return f"zip.{k}.{path}"
    if spec.random is not None and path in spec.random.ranges:
        return f"random.ranges.{path}"
    return path


def families_of(sweep: Sweep) -> list[str]:
    """The families of the sweep's cells, in the order of its cells."""
    return sweep.family.split(FAMILY_SEPARATOR)


def of_family(family: str) -> ColumnElement[bool]:
    """Sweeps with a cell of `family`."""
    return or_(
        Sweep.family == family,
        Sweep.family.startswith(family + FAMILY_SEPARATOR, autoescape=True),
        Sweep.family.endswith(FAMILY_SEPARATOR + family, autoescape=True),
        Sweep.family.contains(FAMILY_SEPARATOR + family + FAMILY_SEPARATOR, autoescape=True),
    )


# --- the fair release -------------------------------------------------------------------------


def release(session: Session, window: int) -> list[str]:
    """Per unfinished sweep, enough of its unsent jobs that `window` of them wait in the broker
    (queued and sent), the first repeat of every cell first; the caller sends them and marks
    those the broker took (core.jobs.mark_sent). Every sweep has a window of its own, so sweeps
    take turns in the broker's queue, and a single job sent meanwhile waits behind a window of
    each. Two callers at once may both send a job: the second message finds it taken."""
    waiting = dict(
        session.execute(
            select(Job.sweep_id, func.count())
            .where(Job.sweep_id.is_not(None), Job.status == "queued")
            .where(Job.dispatched_at.is_not(None))
            .group_by(Job.sweep_id)
        ).all()
    )
    held = session.scalars(
        select(Job.sweep_id)
        .where(Job.sweep_id.is_not(None), Job.status == "queued", Job.dispatched_at.is_(None))
        .distinct()
    ).all()
    due = []
    for sweep_id in sorted(held):
        free = window - waiting.get(sweep_id, 0)
        if free > 0:
            due += session.scalars(
                select(Job.id)
                .where(
                    Job.sweep_id == sweep_id, Job.status == "queued", Job.dispatched_at.is_(None)
                )
                .order_by(Job.sweep_repeat, Job.sweep_cell)
                .limit(free)
            ).all()
    return due


# --- progress and the table -------------------------------------------------------------------


def jobs_of(session: Session, sweep_id: str) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.sweep_cell, Job.sweep_repeat)
        )
    )


def progress(sweep: Sweep, jobs: list[Job], now: datetime | None = None) -> dict[str, Any]:
    """Counts by status, the sweep's status, and an ETA from the jobs finished so far."""
    now = now or utcnow()
    counts = {s: 0 for s in ("queued", "running", "succeeded", "failed", "cancelled")}
    for job in jobs:
        counts[job.status] += 1
    unfinished = counts["queued"] + counts["running"]
    durations = [
        (j.finished_at - j.started_at).total_seconds()
        for j in jobs
        if j.status == "succeeded" and j.started_at and j.finished_at
    ]
    eta = None
    if unfinished and durations:
        parallel = max(1, counts["running"])
        eta = statistics.fmean(durations) * unfinished / parallel
    if unfinished:
        status = "running" if counts["running"] or counts["queued"] < len(jobs) else "queued"
    elif sweep.cancel_requested:
        status = "cancelled"
    elif counts["succeeded"] == len(jobs):
        status = "succeeded"
    else:
        status = "failed"
    by_cell: dict[int, list[str]] = defaultdict(list)
    for job in jobs:
        by_cell[job.sweep_cell].append(job.status)
    cells_done = sum(all(s in FINISHED for s in statuses) for statuses in by_cell.values())
    return {"status": status, "counts": counts, "cells_done": cells_done, "eta_seconds": eta}


def training_seconds(session: Session, job_ids: list[str]) -> dict[str, float]:
    """Per job, the seconds its epochs took (the sum of its metric rows' `seconds`)."""
    rows = session.execute(
        select(Metric.job_id, func.sum(Metric.seconds))
        .where(Metric.job_id.in_(job_ids))
        .group_by(Metric.job_id)
    ).all()
    return {job_id: float(total) for job_id, total in rows}


Best = dict[str, tuple[float, float]]  # metric -> (best value, the epoch it was reached)


def best_over_epochs(
    session: Session, directions: Mapping[str, Mapping[str, str]]
) -> dict[str, Best]:
    """Per job (job id -> its per-epoch metrics, each "min" or "max"), per metric: the best
    value over its epochs >= 1 (epoch 0, where recorded, holds the initial weights) and the
    first epoch that reached it; for a cross-validated job, the means over its folds of each
    fold's. One query for all the jobs, which reads the metrics out of the rows' JSON."""
    names = list(dict.fromkeys(name for metrics in directions.values() for name in metrics))
    if not names:
        return {}
    rows = session.execute(
        select(
            Metric.job_id,
            Metric.fold,
            Metric.epoch,
            *(Metric.values[name].as_float() for name in names),
        )
        .where(Metric.job_id.in_(list(directions)), Metric.epoch >= 1)
        .order_by(Metric.epoch)
    ).all()
    best: dict[tuple[str, int, str], tuple[float, int]] = {}
    for job_id, fold, epoch, *values in rows:
        for name, value in zip(names, values, strict=True):
            direction = directions[job_id].get(name)
            if direction is None or not _numeric(value):
                continue
            seen = best.get((job_id, fold, name))
            if seen is None or (value > seen[0] if direction == "max" else value < seen[0]):
                best[job_id, fold, name] = (value, epoch)
    folds: dict[str, dict[str, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    for (job_id, _, name), reached in best.items():
        folds[job_id][name].append(reached)
    return {
        job_id: {
            name: (statistics.fmean(v for v, _ in reached), statistics.fmean(e for _, e in reached))
            for name in directions[job_id]
            if (reached := by_name.get(name))
        }
        for job_id, by_name in folds.items()
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """The mean and the sample std; no std for a single value."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def table(
    cells: list[Cell],
    jobs: list[Job],
    seconds: Mapping[str, float],
    best: Mapping[str, Best] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per cell: its axis values, n_params, then for every numeric figure of the
    results, the best value of every per-epoch metric (`best`, from best_over_epochs) and the
    epoch it was reached, and `seconds` (the training time), its mean and sample standard
    deviation over the repeats that succeeded (None for fewer than two), and how many did.
    Returns (columns, rows)."""
    best = best or {}
    by_cell: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        by_cell[job.sweep_cell].append(job)
    paths = list(dict.fromkeys(path for cell in cells for path in cell))
    figures: list[str] = []
    for job in jobs:
        for key, value in (job.result or {}).items():
            if _numeric(value) and key not in figures and key != "seconds":
                figures.append(key)
    metrics = list(dict.fromkeys(name for job in jobs for name in best.get(job.id, {})))
    rows = []
    for index, cell in enumerate(cells):
        done = [j for j in by_cell[index] if j.status == "succeeded"]
        row: dict[str, Any] = {"cell": index, **{p: cell.get(p) for p in paths}}
        row["n_params"] = next((j.n_params for j in by_cell[index] if j.n_params), None)
        for figure in figures:
            values = [j.result[figure] for j in done if _numeric(j.result.get(figure))]
            row[f"{figure}_mean"], row[f"{figure}_std"] = _mean_std(values)
        for name in metrics:
            reached = [best[j.id][name] for j in done if name in best.get(j.id, {})]
            row[f"best_{name}_mean"], row[f"best_{name}_std"] = _mean_std(
                [value for value, _ in reached]
            )
            row[f"best_{name}_epoch_mean"], row[f"best_{name}_epoch_std"] = _mean_std(
                [epoch for _, epoch in reached]
            )
        values = [seconds[j.id] for j in done if j.id in seconds]
        row["seconds_mean"], row["seconds_std"] = _mean_std(values)
        row["succeeded"] = len(done)
        row["repeats"] = len(by_cell[index])
        rows.append(row)
    columns = ["cell", *paths, "n_params"]
    columns += [f"{f}_{s}" for f in figures for s in ("mean", "std")]
    columns += [
        f"best_{name}{e}_{s}" for name in metrics for e in ("", "_epoch") for s in ("mean", "std")
    ]
    columns += ["seconds_mean", "seconds_std", "succeeded", "repeats"]
    return columns, rows


def direction_of(figure: str, metrics: Mapping[str, str]) -> str | None:
    """Whether a table figure is better high ("max") or low ("min"), from the families' metric
    directions: best_<metric> as its metric, a final figure (test_accuracy, val_loss_mean) as
    the per-epoch metric of the same name, seconds low; None where no side is better (an
    epoch, a count)."""
    if figure == "seconds":
        return "min"
    if figure.startswith("best_"):
        return None if figure.endswith("_epoch") else metrics.get(figure[len("best_") :])
    base = figure.removesuffix("_mean").removesuffix("_std")
    for prefix in ("test_", "val_", "train_"):
        if base.startswith(prefix):
            name = base[len(prefix) :]
            for split in ("val_", "train_"):
                if f"{split}{name}" in metrics:
                    return metrics[f"{split}{name}"]
    return metrics.get(base)


_LATEX = str.maketrans(
    {c: f"\\{c}" for c in "&%$#_{}"}
    | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
)


def report_table(
    columns: list[str],
    rows: list[dict[str, Any]],
    metrics: Mapping[str, str],
    style: str,
    precision: int = 3,
) -> str:
    """The table as Markdown or LaTeX (booktabs): each cell's axis values and n_params, then
    each figure as mean ± std to `precision` significant digits (the mean alone for one run),
    the best mean of each figure in bold, and n (succeeded / repeats)."""
    figures = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    fixed = [
        c
        for c in columns
        if c not in ("succeeded", "repeats") and not c.endswith(("_mean", "_std"))
    ]
    best: dict[str, float] = {}
    for figure in figures:
        means = [r[f"{figure}_mean"] for r in rows if r[f"{figure}_mean"] is not None]
        direction = direction_of(figure, metrics)
        if means and direction is not None and len(rows) > 1:
            best[figure] = max(means) if direction == "max" else min(means)

    def number(value: float) -> str:
        return f"{value:.{precision}g}"

    def text(value: Any) -> str:
        shown = (
            json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else value
        )
        shown = "" if shown is None else str(shown)
        return shown.translate(_LATEX) if style == "latex" else shown.replace("|", "\\|")

    header = [*fixed, *figures, "n"]
    lines = []
    for row in rows:
        cells = [text(row.get(c)) for c in fixed]
        for figure in figures:
            mean, std = row[f"{figure}_mean"], row[f"{figure}_std"]
            if mean is None:
                cells.append("")
                continue
            pm = r" $\pm$ " if style == "latex" else " ± "
            shown = number(mean) + ("" if std is None else pm + number(std))
            if best.get(figure) == mean:
                shown = rf"\textbf{{{shown}}}" if style == "latex" else f"**{shown}**"
            cells.append(shown)
        cells.append(f"{row['succeeded']}/{row['repeats']}")
        lines.append(cells)
    if style == "latex":
        names = [text(h) for h in header]
        spec = "l" * len(fixed) + "r" * (len(figures) + 1)
        body = [" & ".join(cells) + r" \\" for cells in lines]
        return "\n".join(
            [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(names) + r" \\", r"\midrule"]
            + body
            + [r"\bottomrule", r"\end{tabular}", ""]
        )
    rule = ["---" if i < len(fixed) else "---:" for i in range(len(header))]
    return (
        "\n".join(
            "| " + " | ".join(cells) + " |" for cells in [[text(h) for h in header], rule, *lines]
        )
        + "\n"
    )
