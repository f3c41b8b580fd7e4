"""Tools that need no worker and no training: an optimizer traced on a 1-D function."""

from fastapi import APIRouter, HTTPException, Response

from api import plots
from models.configs.trace import TraceRequest, TraceResponse

router = APIRouter(tags=["tools"])


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
