"""Tools that need no worker and no training: an optimizer traced on a 1-D function, a
model's architecture summed up, and a small stack of layers run on a given input."""

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response

from api import plots
from api.deps import CallerDep, SessionDep
from api.errors import field_error
from api.routes.jobs import visible_uploads, with_upload
from api.routing import Route
from api.schemas import PNG
from core.catalog import CATALOG, resolve
from models.configs.tools import (
    EXAMPLE_1D,
    ArchitectureSummary,
    ForwardRequest,
    ForwardResponse,
    TraceRequest,
    TraceResponse,
)
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
    responses=PNG,
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


FORWARD_EXAMPLES = {
    "conv1d": {
        "summary": "conv1d, relu, max pool of 2 at stride 1, flatten, dense",
        "description": "The conv1d gives [6, 6, 7, 8] (x[i] + 2 x[i+2] + 1), the pool "
        "[6, 7, 8], the dense 6 - 8 + 0.5 = -1.5.",
        "value": EXAMPLE_1D,
    },
    "conv2d": {
        "summary": "a 2x2 kernel over a 3x3 image: [[3, 4], [6, 11]]",
        "value": {
            "input": [[[1, 2, 0], [2, 1, 1], [0, 2, 5]]],
            "layers": [{"type": "conv2d", "weight": [[[[1, 0], [0, 2]]]], "bias": [0]}],
        },
    },
    "seeded": {
        "summary": "weights drawn from a seed, returned with the outputs",
        "value": {
            "input": [[0.5, -1.0, 2.0, 0.0]],
            "layers": [
                {"type": "conv1d", "filters": 2, "kernel": 3, "padding": "same"},
                {"type": "tanh"},
                {"type": "flatten"},
                {"type": "dense", "units": 1},
            ],
            "seed": 0,
        },
    },
}


@router.post("/architectures/forward", response_model=ForwardResponse)
def architecture_forward(
    body: Annotated[ForwardRequest, Body(openapi_examples=FORWARD_EXAMPLES)],
) -> dict:
    """Layers with given weights run on one given input: every layer's output and shape, in
    float64 with the torch modules jobs train with (convolutions are PyTorch's: a
    cross-correlation, the kernel not flipped). A weight or bias left out is drawn from `seed`
    and returned. Bounded: the input's values, the parameters, every output's values and the
    FLOPs of the pass (a 422 of type too_big naming the layer or the input)."""
    from models.admission import TooBig
    from models.base import BadRequest
    from models.forward import forward  # torch is loaded on the first call

    try:
        return forward(body)
    except BadRequest as exc:
        raise field_error(422, exc.field, str(exc)) from exc
    except TooBig as exc:
        raise field_error(422, exc.field, str(exc), "too_big") from exc
