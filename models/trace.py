"""An optimizer traced on a 1-D function (POST /optimizers/trace): the torch optimizer a job
would use, stepped on one parameter, with its state (moments, buffers) read after each step."""

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from core import expression
from models.configs.tools import FunctionExpression, TraceRequest
from models.training import make_optimizer

# The functions an expression may call (core.expression.FUNCTIONS).
CALLS: dict[str, Callable[[Tensor], Tensor]] = {
    "exp": torch.exp,
    "log": torch.log,
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
}


def function(request: TraceRequest) -> Callable[[Tensor], Tensor]:
    match request.function:
        case FunctionExpression(expression=text):
            tree = expression.parse(text)
            # + 0 x: a constant expression still has a gradient (0) and x's shape.
            return lambda x: expression.evaluate(tree, x, CALLS, x.new_tensor) + 0 * x
        case "relu":
            return torch.relu
        case "sigmoid":
            return torch.sigmoid
        case "abs":
            return torch.abs
        case "quadratic":
            return torch.square
        case "bump":
            depth = 1.0 - request.height
            return lambda x: 1 - torch.exp(-(x**2)) - depth * torch.exp(-((x - 3) ** 2))
    raise ValueError(f"unknown function {request.function!r}")


def _value(state: dict[str, Any], key: str) -> float | None:
    return float(state[key]) if key in state else None


def trace(request: TraceRequest) -> dict[str, Any]:
    """Every step's gradient, the optimizer's state after it, and the new x, in float64."""
    f = function(request)
    x = torch.tensor([request.x0], dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer(request.optimizer, 0.0, [x])
    beta1, beta2 = request.optimizer.betas
    adam = request.optimizer.name == "adam"
    with torch.no_grad():
        f0 = float(f(x))
    if not math.isfinite(f0):
        raise ValueError(f"f(x0) is {f0}: x0 = {request.x0:g} is outside the function's domain")
    steps = []
    for t in range(1, request.steps + 1):
        optimizer.zero_grad()
        f(x).sum().backward()
        g = float(x.grad)
        if not math.isfinite(g):
            raise ValueError(f"f'(x) is {g} at x = {float(x):g} (step {t})")
        optimizer.step()
        state = optimizer.state[x]
        m = _value(state, "exp_avg") if adam else _value(state, "momentum_buffer")
        v = _value(state, "exp_avg_sq") if adam else _value(state, "square_avg")
        with torch.no_grad():
            now, value = float(x), float(f(x))
        if not math.isfinite(now) or not math.isfinite(value):
            raise ValueError(f"x left the finite numbers at step {t}; use a smaller lr")
        steps.append(
            {
                "step": t,
                "g": g,
                "m": m,
                "v": v,
                "m_hat": m / (1 - beta1**t) if adam else None,
                "v_hat": v / (1 - beta2**t) if adam else None,
                "v_max": _value(state, "max_exp_avg_sq"),
                "g_avg": _value(state, "grad_avg"),
                "u": _value(state, "acc_delta"),
                "x": now,
                "f": value,
            }
        )
    return {
        "function": request.function,
        "optimizer": request.optimizer,
        "x0": request.x0,
        "f0": f0,
        "steps": steps,
    }


@torch.no_grad()
def curve(request: TraceRequest, xs: list[float]) -> list[float]:
    """f at xs, to draw the path on."""
    return function(request)(torch.tensor(xs, dtype=torch.float64)).tolist()
