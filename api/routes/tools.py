"""Tools that need no worker and no training: an optimizer traced on a 1-D function, and a
model's architecture summed up."""

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response

from api import plots
from api.deps import CallerDep, SessionDep
from api.errors import field_error
from api.routes.jobs import visible_uploads, with_upload
from api.routing import Route
from core.catalog import CATALOG, resolve
from models.configs.tools import ArchitectureSummary, TraceRequest, TraceResponse
from models.specs import JobSpec

router = APIRouter(route_class=Route, tags=["tools"])


def _trace(body: TraceRequest) -> dict:
    from models.trace import trace  # torch is loaded on the first trace

    try:
        return trace(body)
    except ValueError as exc:  # the path left the finite numbers
        raise HTTPException(422, str(exc)) from exc


@router.post("/optimizers/trace", response_model=TraceResponse)
def optimizer_trace(body: TraceRequest) -> dict:
    """The optimizer a job would use, stepped `steps` times on a 1-D function from x0: per step
    the gradient g, the optimizer's moments (m, v, and Adam's bias-corrected m_hat, v_hat) and
    the new x."""
    return _trace(body)


@router.post(
    "/optimizers/trace.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def optimizer_trace_png(body: TraceRequest) -> Response:
    """The same trace drawn as the path of x on the function."""
    from models.trace import curve

    answer = _trace(body)
    xs = [body.x0] + [s["x"] for s in answer["steps"]]
    fs = [answer["f0"]] + [s["f"] for s in answer["steps"]]
    low, high = min(xs), max(xs)
    margin = max(1.0, 0.2 * (high - low))
    grid = [low - margin + (high - low + 2 * margin) * i / 399 for i in range(400)]
    title = f"{body.optimizer.name} (lr {body.optimizer.lr:g}) on {body.function}"
    png = plots.path_on_curve(grid, curve(body, grid), xs, fs, title)
    return Response(png, media_type="image/png")


@router.post("/architectures/summary", response_model=ArchitectureSummary)
def architecture_summary(
    spec: Annotated[JobSpec, Body()], session: SessionDep, caller: CallerDep
) -> dict:
    """The model a job document would train, without training it: each layer's output shape
    and parameters (the total is PyTorch's count of the built model), the receptive field and
    jump of its conv/pool stack, and the memory a training step at train.batch_size needs.
    The dataset's data is not needed, only its shape."""
    from models.admission import TooBig, check_params
    from models.registry import REGISTRY  # noqa: F401 - loads torch and every family
    from models.summary import summarize

    uploads = None
    if spec.dataset.name not in CATALOG:
        uploads = visible_uploads(session, caller, [spec.dataset.name])
        spec = with_upload(spec, uploads)
    info = resolve(spec.dataset, uploads)
    try:
        check_params(spec, info)
    except TooBig as exc:
        raise field_error(422, exc.field, str(exc), "too_big") from exc
    return summarize(spec, info)
