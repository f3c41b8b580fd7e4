"""Sweeps: a grid (or random search) of settings x repeated seeds, queued as jobs that the
workers take in turn with everyone else's (core/sweeps.py), and the table and pictures an
assignment asks for."""

import csv
import io
import json
import statistics
import uuid
import zipfile
from collections import defaultdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api import plots
from api.auth import Caller
from api.deps import MAX_OFFSET, CallerDep, SessionDep, SettingsDep
from api.errors import field_error
from api.examples import SWEEP_EXAMPLES, SWEEP_TABLE_EXAMPLE
from api.idempotency import KeyHeader, earlier, remember, scoped
from api.routes.jobs import train_feature_nets, within_quota
from api.routing import Route
from api.schemas import PNG, Problem, SweepCreate, SweepPublic, SweepsPublic, SweepTable, answers
from core.catalog import CATALOG, is_available, resolve
from core.db import FINISHED, Job, Metric, Sweep
from core.jobs import new_job, request_cancel
from core.spec import STORED
from core.sweeps import (
    FAMILY_SEPARATOR,
    SweepProblem,
    best_over_epochs,
    expand,
    families_of,
    jobs_of,
    of_family,
    progress,
    report_table,
    table,
    training_seconds,
)
from core.uploads import upload_infos
from models.specs import SPECS, parse_job_spec
from workers.dispatch import release_sweeps

router = APIRouter(
    route_class=Route,
    prefix="/sweeps",
    tags=["sweeps"],
    responses={
        404: {"model": Problem, "description": "no such sweep"},
    },
)
PLOTS = ("curves", "metric")


def get_sweep(session: SessionDep, caller: Caller, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or not caller.sees(sweep.owner_id):
        raise HTTPException(404, f"no sweep {sweep_id!r}")
    return sweep


def public(sweep: Sweep, jobs: list[Any], *, cells: bool = False) -> SweepPublic:
    """A sweep with its jobs' progress: `jobs` are Job rows, or without `cells` any rows with
    their sweep_cell, status, started_at and finished_at."""
    state = progress(sweep, jobs)
    by_cell: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        by_cell[job.sweep_cell].append(job)
    detail = None
    if cells:
        detail = [
            {
                "cell": k,
                "values": values,
                "jobs": [
                    {"repeat": j.sweep_repeat, "id": j.id, "status": j.status} for j in by_cell[k]
                ],
            }
            for k, values in enumerate(sweep.cells)
        ]
    return SweepPublic(
        id=sweep.id,
        family=sweep.family,
        families=families_of(sweep),
        status=state["status"],
        spec=sweep.spec,
        n_cells=len(sweep.cells),
        repeats=sweep.spec.get("repeats", 1),
        n_jobs=len(jobs),
        counts=state["counts"],
        cells_done=state["cells_done"],
        eta_seconds=state["eta_seconds"],
        cancel_requested=sweep.cancel_requested,
        created_at=sweep.created_at,
        cells=detail,
    )


def _architecture(document: dict[str, Any]) -> str:
    """What a stored job's model is built from (its repeats differ in their seeds only)."""
    return json.dumps([document[k] for k in ("family", "task", "model", "dataset")])


def _normalizer(
    session: SessionDep, settings: SettingsDep, caller: Caller, counts: dict[str, int]
) -> Any:
    """A job document as POST /jobs would store it; datasets must be here, uploads known.
    Each model's parameter count goes into `counts`, by _architecture."""
    checked: set[str] = set()

    def normalize(document: dict[str, Any]) -> dict[str, Any]:
        name = (document.get("dataset") or {}).get("name") if isinstance(document, dict) else None
        uploads = upload_infos(session, [name], caller.owner) if isinstance(name, str) else {}
        spec = parse_job_spec(document, uploads=uploads)
        if spec.dataset.name not in checked:
            checked.add(spec.dataset.name)
            info = CATALOG.get(spec.dataset.name)
            if info is not None and not is_available(info, settings):
                raise SweepProblem(
                    "base.dataset.name",
                    f"dataset {info.name!r} is not available here: {info.how_to_get}",
                )
            if info is None and not uploads:
                raise SweepProblem(
                    "base.dataset.name", f"no uploaded dataset {spec.dataset.name!r}"
                )
        info = resolve(spec.dataset, uploads or None)
        try:
            check(spec, info, settings.worker_memory_bytes)
        except TooBig as exc:
            raise SweepProblem(f"base.{exc.field}", str(exc)) from exc
        stored = spec.model_dump(mode="json")
        counts[_architecture(stored)] = count_parameters(spec, info)
        return stored

    from models.admission import TooBig, check  # loads torch (models are built on "meta")
    from models.registry import REGISTRY  # noqa: F401 - every family registered
    from models.summary import count_parameters

    return normalize


@router.post("", status_code=202, response_model=SweepPublic, responses=answers(429))
def create_sweep(
    body: Annotated[SweepCreate, Body(openapi_examples=SWEEP_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: KeyHeader = None,
) -> SweepPublic:
    """Queue every cell x repeat as a job after checking each one as POST /jobs would (a cell
    that would be refused is a 422 naming its axis and value; nothing is queued). The jobs
    are sent to the workers a few at a time, in turn with other work. With an
    Idempotency-Key, a retry of the same request answers with the same sweep."""
    payload = body.model_dump(mode="json")
    idempotency_key = scoped(caller, idempotency_key)
    if (previous := earlier(session, "sweeps", idempotency_key, payload)) is not None:
        return public(session.get(Sweep, previous), jobs_of(session, previous))
    counts: dict[str, int] = {}
    try:
        normalize = _normalizer(session, settings, caller, counts)
        cells, documents = expand(body, normalize, settings.max_sweep_jobs)
    except SweepProblem as exc:
        raise field_error(422, exc.field, str(exc), exc.type) from exc
    # A cell's repeats differ only in their seeds.
    specs = [SPECS[runs[0]["family"]].model_validate(runs[0]) for runs in documents]
    families = list(dict.fromkeys(spec.family for spec in specs))
    if body.halving is not None:
        metric = body.halving.metric
        for spec in specs:
            if metric not in spec.metrics():
                every = "every cell's family must report it; " if len(families) > 1 else ""
                raise field_error(
                    422,
                    "halving.metric",
                    f"{every}{spec.family} does not report {metric!r}; it reports "
                    f"{', '.join(spec.metrics())}",
                )
        epochs = max(spec.total_epochs() for spec in specs)
        if not body.halving.rungs(epochs):
            raise field_error(
                422,
                "halving.min_epochs",
                f"min_epochs {body.halving.min_epochs} leaves no epoch to stop at in a run of "
                f"{epochs}",
            )
    sweep = Sweep(
        id=uuid.uuid4().hex,
        spec=payload,
        cells=cells,
        family=FAMILY_SEPARATOR.join(families),
        owner_id=caller.owner,
    )
    within_quota(session, settings, caller, sum(len(runs) for runs in documents))
    session.add(sweep)
    session.flush()
    for cell, runs in enumerate(documents):
        # Seeds are what a stack's members have of their own.
        key = specs[cell].stack_key(caller.owner)
        for repeat, document in enumerate(runs):
            new_job(
                session,
                document,
                owner_id=caller.owner,
                sweep=(sweep.id, cell, repeat),
                n_params=counts[_architecture(document)],
                stack_key=key,
            )
    remember(session, "sweeps", idempotency_key, payload, sweep.id)
    try:
        session.commit()
    except IntegrityError:  # the same key committed by a request racing this one
        session.rollback()
        previous = earlier(session, "sweeps", idempotency_key, payload)
        return public(session.get(Sweep, previous), jobs_of(session, previous))
    firsts = {(spec.family, spec.dataset.name): spec for spec in specs}
    train_feature_nets(settings, firsts.values(), caller.owner)
    release_sweeps(settings)
    return public(sweep, jobs_of(session, sweep.id))


@router.get("", response_model=SweepsPublic)
def list_sweeps(
    session: SessionDep,
    caller: CallerDep,
    family: Annotated[
        str | None, Query(max_length=32, description="sweeps with a cell of this family")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SweepsPublic:
    """Newest first, filtered by family (a sweep across families is found by each)."""
    query = caller.only_own(select(Sweep), Sweep.owner_id)
    if family is not None:
        query = query.where(of_family(family))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    sweeps = session.scalars(
        query.order_by(Sweep.created_at.desc(), Sweep.id).limit(limit).offset(offset)
    ).all()
    # The progress of the page's sweeps from one query over the columns it reads (a query per
    # sweep, loading whole jobs, took 66 ms for 50 sweeps of 20 jobs).
    rows = session.execute(
        select(Job.sweep_id, Job.sweep_cell, Job.status, Job.started_at, Job.finished_at).where(
            Job.sweep_id.in_([s.id for s in sweeps])
        )
    ).all()
    jobs: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        jobs[row.sweep_id].append(row)
    items = [public(s, jobs[s.id]) for s in sweeps]
    return SweepsPublic(items=items, total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepPublic)
def read_sweep(
    sweep_id: Annotated[str, Path(max_length=64)], session: SessionDep, caller: CallerDep
) -> SweepPublic:
    """Progress (jobs queued, running, succeeded, failed, cancelled; an ETA) and each cell's
    values and jobs."""
    sweep = get_sweep(session, caller, sweep_id)
    return public(sweep, jobs_of(session, sweep.id), cells=True)


@router.post(
    "/{sweep_id}/cancel", status_code=202, response_model=SweepPublic, responses=answers(409)
)
def cancel_sweep(
    sweep_id: Annotated[str, Path(max_length=64)], session: SessionDep, caller: CallerDep
) -> SweepPublic:
    """Queued jobs end `cancelled` at once, running ones within a few seconds."""
    sweep = get_sweep(session, caller, sweep_id)
    jobs = jobs_of(session, sweep.id)
    if all(j.status in FINISHED for j in jobs):
        raise HTTPException(409, f"sweep {sweep.id} already ended")
    sweep.cancel_requested = True
    for job in jobs:
        if job.status not in FINISHED:
            request_cancel(session, job.id)
    session.commit()
    return public(sweep, jobs_of(session, sweep.id))


def _table(session: SessionDep, sweep: Sweep) -> tuple[list[str], list[dict[str, Any]]]:
    jobs = jobs_of(session, sweep.id)
    done = [j for j in jobs if j.status == "succeeded"]
    seconds = training_seconds(session, [j.id for j in done])
    # Each cell's per-epoch metrics and their directions, from its family (repeats differ
    # only in their seeds).
    metrics: dict[int, dict[str, str]] = {}
    for job in done:
        if job.sweep_cell not in metrics:
            metrics[job.sweep_cell] = (
                SPECS[job.family].model_validate(job.spec, context=STORED).metrics()
            )
    best = best_over_epochs(session, {j.id: metrics[j.sweep_cell] for j in done})
    return table(sweep.cells, jobs, seconds, best)


@router.get(
    "/{sweep_id}/table",
    response_model=SweepTable,
    responses={
        200: {"content": {"text/csv": {}, "application/json": {"example": SWEEP_TABLE_EXAMPLE}}}
    },
)
def read_sweep_table(
    sweep_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    caller: CallerDep,
    request: Request,
    format: Literal["json", "csv", "markdown", "latex"] | None = Query(
        None,
        description="json, csv, markdown or latex (booktabs); by default the request's Accept "
        "header decides between json and csv",
    ),
    precision: Annotated[
        int, Query(ge=1, le=12, description="markdown, latex: significant digits")
    ] = 3,
) -> Any:
    """One row per cell: its axis values, n_params, the mean and std over its repeats of every
    final figure of the results, of each per-epoch metric's best value and the epoch it was
    reached, and of the training seconds, and how many repeats succeeded. Filled in as jobs
    finish (a std needs two). In CSV, an axis value that is a list or an object (a model
    section) is JSON. Markdown and LaTeX show mean ± std per figure with the best of each
    column in bold (highest or lowest, as the family's metric directions say) and n."""
    sweep = get_sweep(session, caller, sweep_id)
    columns, rows = _table(session, sweep)
    if format in ("markdown", "latex"):
        text = report_table(columns, rows, _directions(session, sweep), format, precision)
        media = "text/markdown" if format == "markdown" else "application/x-latex"
        return Response(text, media_type=f"{media}; charset=utf-8")
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if not wants_csv:
        return SweepTable(columns=columns, rows=rows)
    return Response(
        _csv(columns, rows),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="sweep-{sweep.id}.csv"'},
    )


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _scalar(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _directions(session: SessionDep, sweep: Sweep) -> dict[str, str]:
    """The per-epoch metrics of the sweep's families and whether each is better high or low."""
    directions: dict[str, str] = {}
    seen: set[str] = set()
    for job in jobs_of(session, sweep.id):
        if job.family not in seen:
            seen.add(job.family)
            directions |= SPECS[job.family].model_validate(job.spec, context=STORED).metrics()
    return directions


@router.get(
    "/{sweep_id}/report.zip",
    response_class=Response,
    responses={
        200: {
            "description": "a zip of the table, the figures, the sweep and its jobs' provenance",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def read_sweep_report(
    sweep_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    caller: CallerDep,
    precision: Annotated[int, Query(ge=1, le=12, description="significant digits")] = 3,
) -> Response:
    """What a report needs, in one zip: the table as CSV, Markdown and LaTeX; the curves and
    the metric figure as PNG and SVG (once a job has finished an epoch); the sweep's document
    (`sweep.json`); and each job's status, document, result and provenance
    (`jobs/<id>.json`)."""
    sweep = get_sweep(session, caller, sweep_id)
    columns, rows = _table(session, sweep)
    directions = _directions(session, sweep)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("table.csv", _csv(columns, rows))
        for style, suffix in (("markdown", "md"), ("latex", "tex")):
            archive.writestr(
                f"table.{suffix}", report_table(columns, rows, directions, style, precision)
            )
        for name in PLOTS:
            for fmt in ("png", "svg"):
                try:
                    archive.writestr(f"{name}.{fmt}", _figure(session, sweep, name, fmt=fmt))
                except HTTPException as exc:  # nothing to draw yet
                    if exc.status_code != 409:
                        raise
        archive.writestr("sweep.json", json.dumps(sweep.spec, indent=2))
        for job in jobs_of(session, sweep.id):
            record = {
                "id": job.id,
                "cell": job.sweep_cell,
                "status": job.status,
                "spec": job.spec,
                "result": job.result,
                "error": job.error,
                "provenance": job.provenance,
            }
            archive.writestr(f"jobs/{job.id}.json", json.dumps(record, indent=2, default=str))
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"content-disposition": f'attachment; filename="sweep-{sweep.id}.zip"'},
    )


def _scalar(value: Any) -> Any:
    """A list or an object as compact JSON, for a CSV field or a label."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else value


def _log_spaced(values: list[Any]) -> bool:
    """Positive numbers whose neighbours are in a constant ratio of 2 or more (25, 50, 100;
    1e-3, 1e-2, 1e-1): drawn on a log axis."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return False
    numbers = sorted(set(values))
    if len(numbers) < 3 or numbers[0] <= 0:
        return False
    ratios = [b / a for a, b in zip(numbers, numbers[1:], strict=False)]
    return min(ratios) >= 2 and max(ratios) / min(ratios) < 1.5


def _groups(sweep: Sweep) -> list[list[str]]:
    """The sweep's axes as drawn: each zipped group is one axis (an optimizer with its lr)."""
    paths = list(dict.fromkeys(p for cell in sweep.cells for p in cell))
    zipped = [list(group) for group in sweep.spec.get("zip") or []]
    inside = {p for group in zipped for p in group}
    groups = [[p] for p in paths if p not in inside] + [g for g in zipped if set(g) <= set(paths)]
    return sorted(groups, key=lambda g: paths.index(g[0]))


def _value(row: dict[str, Any], group: list[str]) -> Any:
    """A cell's value on an axis: the value itself, or the zipped group's values as one label."""
    if len(group) == 1:
        return row.get(group[0])
    return ", ".join(f"{p.rsplit('.', 1)[-1]}={_scalar(row.get(p))}" for p in group)


def _named(row: dict[str, Any], group: list[str], equals: str = "=") -> str:
    """`model.hidden.0=8`; a zipped group names its own paths: `name=sgd, lr=0.1`."""
    if len(group) > 1:
        return _value(row, group)
    return f"{group[0]}{equals}{_scalar(row.get(group[0]))}"


def _group_named(sweep: Sweep, name: str | None, field: str) -> list[str] | None:
    if name is None:
        return None
    for group in _groups(sweep):
        if name in group:
            return group
    paths = ", ".join(p for g in _groups(sweep) for p in g)
    raise field_error(422, field, f"the sweep's axes: {paths}")


def _curves(
    session: SessionDep,
    sweep: Sweep,
    metric: str | None,
    panel: str | None,
    scale: str,
) -> tuple[dict[str, plots.Series], str, str, bool]:
    """Per-epoch means and stds over each cell's repeats, in panels by one axis (`panel`:
    default the first of two or more), failed and cancelled runs left out (counted in the
    title). Returns (panels, title, metric, log)."""
    jobs = jobs_of(session, sweep.id)
    families = list(dict.fromkeys(job.family for job in jobs))
    directions = _directions(session, sweep)
    if metric is None:
        first = jobs[0]
        metric = SPECS[first.family].model_validate(first.spec, context=STORED).selection_metric()
    if metric not in directions:
        verb = "reports" if len(families) == 1 else "report"
        raise field_error(
            422, "metric", f"{', '.join(families)} {verb} per epoch: {', '.join(directions)}"
        )
    groups = _groups(sweep)
    by_panel = _group_named(sweep, panel, "panel")
    if by_panel is None and len(groups) >= 2:
        by_panel = groups[0]
    left_out = [j for j in jobs if j.status in ("failed", "cancelled")]
    drawn = [j for j in jobs if j.status not in ("failed", "cancelled")]
    rows = session.execute(
        select(Metric.job_id, Metric.epoch, Metric.values)
        .where(Metric.job_id.in_([j.id for j in drawn]), Metric.fold == 0)
        .order_by(Metric.epoch)
    ).all()
    cell_of = {j.id: j.sweep_cell for j in drawn}
    per_cell: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job_id, epoch, values in rows:
        if isinstance(values.get(metric), int | float):
            per_cell[cell_of[job_id]][epoch].append(values[metric])
    if not per_cell:
        raise HTTPException(409, f"sweep {sweep.id} has no finished epoch yet")
    panels: dict[str, plots.Series] = {}
    others = [g for g in groups if g != by_panel]
    for cell, epochs in sorted(per_cell.items()):
        values = sweep.cells[cell]
        name = "" if by_panel is None else _named(values, by_panel, " = ")
        label = ", ".join(_named(values, g) for g in others) or metric
        xs = sorted(epochs)
        means = [statistics.fmean(epochs[e]) for e in xs]
        stds = [statistics.stdev(epochs[e]) if len(epochs[e]) > 1 else None for e in xs]
        panels.setdefault(name, {})[label] = (xs, means, stds)
    positive = all(m > 0 for series in panels.values() for _, ms, _ in series.values() for m in ms)
    log = scale == "log" or (scale == "auto" and directions[metric] == "min" and positive)
    title = f"sweep {sweep.id[:8]} ({', '.join(families_of(sweep))}): {metric}"
    if left_out:
        title += f"; {len(left_out)} failed or cancelled run{'s' * (len(left_out) > 1)} left out"
    return panels, title, metric, log


def _metric_lines(
    session: SessionDep, sweep: Sweep, metric: str | None, axis: str | None
) -> tuple[dict[str, tuple[list[Any], list[float], list[float]]], str, str, bool]:
    """A table figure's mean and std per cell against one axis (a zipped group is one axis),
    a line per value of the other axes. Returns (lines, xlabel, metric, log)."""
    columns, rows = _table(session, sweep)
    groups = _groups(sweep)
    if not groups:
        raise HTTPException(409, f"sweep {sweep.id} has no axis to draw against")
    group = _group_named(sweep, axis, "axis") or groups[0]
    figures = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    metric = metric or next((f for f in figures if f.startswith("test_")), figures[0])
    if metric not in figures:
        raise field_error(422, "metric", f"the table's figures: {', '.join(figures)}")
    others = [g for g in groups if g != group]
    lines: dict[str, tuple[list[Any], list[float], list[float]]] = {}
    for row in rows:
        if row[f"{metric}_mean"] is None:
            continue
        label = ", ".join(_named(row, g) for g in others) or metric
        xs, means, stds = lines.setdefault(label, ([], [], []))
        x = _value(row, group)
        xs.append(x if len(group) > 1 else _scalar(x))
        means.append(row[f"{metric}_mean"])
        stds.append(row[f"{metric}_std"] or 0.0)
    if not lines:
        raise HTTPException(409, f"sweep {sweep.id} has no finished job yet")
    ranges = (sweep.spec.get("random") or {}).get("ranges", {})
    path = group[0]
    log = len(group) == 1 and (
        ranges.get(path, {}).get("log", False) or _log_spaced([c.get(path) for c in sweep.cells])
    )
    return lines, " / ".join(group), metric, log


Scale = Literal["auto", "linear", "log"]


@router.get(
    "/{sweep_id}/plots/{name}.png",
    response_class=Response,
    responses=PNG | answers(409),
)
def read_sweep_plot(
    sweep_id: Annotated[str, Path(max_length=64)],
    name: str,
    session: SessionDep,
    caller: CallerDep,
    metric: Annotated[str | None, Query(max_length=64)] = None,
    axis: Annotated[str | None, Query(max_length=200)] = None,
    panel: Annotated[
        str | None, Query(max_length=200, description="curves: one panel per value of this axis")
    ] = None,
    scale: Annotated[
        Scale, Query(description="curves: the y scale; auto: log for a positive loss")
    ] = "auto",
) -> Response:
    """`curves`: a per-epoch `metric` (default: the first cell's selection metric), the mean
    over each cell's repeats with a band of one std (none for a single run, clipped at zero
    for a metric never negative), as small multiples: one panel per value of `panel`'s axis
    (default: the first axis when there are two or more), a line per value of the others, each
    with its own colour and line style; failed and cancelled runs are left out and counted.
    `metric`: a figure of the table (default: the first test figure) against the sweep's
    `axis` (default: its first; a zipped group is one axis), mean with std error bars, one line
    per value of the other axes, values in the order the sweep gives them, on a log axis when
    they are log-spaced."""
    sweep = get_sweep(session, caller, sweep_id)
    if name not in PLOTS:
        raise HTTPException(404, f"no plot {name!r}; plots: {', '.join(PLOTS)}")
    return Response(
        _figure(session, sweep, name, metric, axis, panel, scale), media_type="image/png"
    )


def _figure(
    session: SessionDep,
    sweep: Sweep,
    name: str,
    metric: str | None = None,
    axis: str | None = None,
    panel: str | None = None,
    scale: str = "auto",
    fmt: str = "png",
) -> bytes:
    if name == "curves":
        panels, title, metric, log = _curves(session, sweep, metric, panel, scale)
        return plots.bands(panels, title, xlabel="epoch", ylabel=metric, log=log, fmt=fmt)
    lines, xlabel, metric, log = _metric_lines(session, sweep, metric, axis)
    title = f"sweep {sweep.id[:8]} ({', '.join(families_of(sweep))})"
    return plots.errorbars(lines, title, xlabel=xlabel, ylabel=metric, log=log, fmt=fmt)
