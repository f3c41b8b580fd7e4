"""Sweeps: a grid (or random search) of settings x repeated seeds, queued as jobs that the
workers take in turn with everyone else's (core/sweeps.py), and the table and pictures an
assignment asks for."""

import csv
import io
import json
import statistics
import uuid
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
    format: Literal["json", "csv"] | None = Query(
        None, description="csv, or json; by default the request's Accept header decides"
    ),
) -> Any:
    """One row per cell: its axis values, n_params, the mean and std over its repeats of every
    final figure of the results, of each per-epoch metric's best value and the epoch it was
    reached, and of the training seconds, and how many repeats succeeded. Filled in as jobs
    finish. In CSV, an axis value that is a list or an object (a model section) is JSON."""
    sweep = get_sweep(session, caller, sweep_id)
    columns, rows = _table(session, sweep)
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if not wants_csv:
        return SweepTable(columns=columns, rows=rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _scalar(v) for k, v in row.items()} for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="sweep-{sweep.id}.csv"'},
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
) -> Response:
    """`curves`: a per-epoch `metric` (default: the first cell's selection metric) per cell
    whose family reports it, the mean over repeats with a band of one std; `metric`: a figure
    of the table (default: the first test figure) against the sweep's `axis` (default: its
    first), mean with std error bars, one line per value of the other axes, on a log axis when
    the values are log-spaced."""
    sweep = get_sweep(session, caller, sweep_id)
    if name not in PLOTS:
        raise HTTPException(404, f"no plot {name!r}; plots: {', '.join(PLOTS)}")
    jobs = jobs_of(session, sweep.id)
    labels = [
        ", ".join(f"{p}={_scalar(v)}" for p, v in cell.items()) or "all" for cell in sweep.cells
    ]
    title = f"sweep {sweep.id[:8]} ({', '.join(families_of(sweep))})"
    if name == "curves":
        firsts: dict[str, Job] = {}  # each family's first job
        for job in jobs:
            firsts.setdefault(job.family, job)
        specs = [SPECS[j.family].model_validate(j.spec, context=STORED) for j in firsts.values()]
        reported = list(dict.fromkeys(m for spec in specs for m in spec.metrics()))
        metric = metric or specs[0].selection_metric()
        if metric not in reported:
            verb = "reports" if len(specs) == 1 else "report"
            raise field_error(
                422, "metric", f"{', '.join(firsts)} {verb} per epoch: {', '.join(reported)}"
            )
        rows = session.execute(
            select(Metric.job_id, Metric.epoch, Metric.values)
            .where(Metric.job_id.in_([j.id for j in jobs]), Metric.fold == 0)
            .order_by(Metric.epoch)
        ).all()
        cell_of = {j.id: j.sweep_cell for j in jobs}
        per_cell: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for job_id, epoch, values in rows:
            if isinstance(values.get(metric), int | float):
                per_cell[cell_of[job_id]][epoch].append(values[metric])
        if not per_cell:
            raise HTTPException(409, f"sweep {sweep.id} has no finished epoch yet")
        series = {}
        for cell, epochs in sorted(per_cell.items()):
            xs = sorted(epochs)
            means = [statistics.fmean(epochs[e]) for e in xs]
            stds = [statistics.stdev(epochs[e]) if len(epochs[e]) > 1 else 0.0 for e in xs]
            series[labels[cell]] = (xs, means, stds)
        png = plots.bands(series, title, xlabel="epoch", ylabel=metric)
        return Response(png, media_type="image/png")

    columns, rows = _table(session, sweep)
    paths = list(dict.fromkeys(p for cell in sweep.cells for p in cell))
    if not paths:
        raise HTTPException(409, f"sweep {sweep.id} has no axis to draw against")
    axis = axis or paths[0]
    if axis not in paths:
        raise field_error(422, "axis", f"the sweep's axes: {', '.join(paths)}")
    figures = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    metric = metric or next((f for f in figures if f.startswith("test_")), figures[0])
    if metric not in figures:
        raise field_error(422, "metric", f"the table's figures: {', '.join(figures)}")
    others = [p for p in paths if p != axis]
    lines: dict[str, tuple[list[Any], list[float], list[float]]] = {}
    for row in rows:
        if row[f"{metric}_mean"] is None:
            continue
        label = ", ".join(f"{p}={_scalar(row[p])}" for p in others) or metric
        xs, means, stds = lines.setdefault(label, ([], [], []))
        xs.append(_scalar(row[axis]))
        means.append(row[f"{metric}_mean"])
        stds.append(row[f"{metric}_std"] or 0.0)
    if not lines:
        raise HTTPException(409, f"sweep {sweep.id} has no finished job yet")
    ranges = (sweep.spec.get("random") or {}).get("ranges", {})
    log = ranges.get(axis, {}).get("log", False) or _log_spaced([c.get(axis) for c in sweep.cells])
    png = plots.errorbars(lines, title, xlabel=axis, ylabel=metric, log=log)
    return Response(png, media_type="image/png")
