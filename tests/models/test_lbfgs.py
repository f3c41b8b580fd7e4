"""models/lbfgs.py: torch's L-BFGS, whose models stepped together are each the model alone."""

import pytest
import torch
from torch import nn

from models.lbfgs import LBFGS, SPAN, Batched, flat_grad


def problem(
    seed: int, width: int = 20, n: int = 120
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 1-width-1 tanh MLP and noisy sine points of its own."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.linspace(-3, 3, n).unsqueeze(1)
    y = torch.sin(x) + 0.15 * torch.randn(x.shape, generator=generator)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1)), x, y


def train_alone(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, cls: type = LBFGS, **kw: object
) -> tuple[list[float], torch.optim.Optimizer]:
    optimizer = cls(model.parameters(), **kw)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        optimizer.step(closure)
        with torch.no_grad():
            losses.append(nn.functional.mse_loss(model(x), y).item())
    return losses, optimizer


def train_together(
    problems: list[tuple[nn.Module, torch.Tensor, torch.Tensor]],
    steps: int,
    lrs: list[float],
    keep: tuple[int, list[int]] | None = None,
    **kw: object,
) -> tuple[list[list[float]], Batched]:
    """The models stepped as one `Batched`, each loss and gradient from its own model; `keep`
    (after step n, these models): the others leave then, as a stack's stopped members do."""
    live = list(range(len(problems)))
    params = [list(m.parameters()) for m, _, _ in problems]
    sizes = [p.numel() for p in params[0]]
    state = LBFGS(params[0], **kw).batched(len(problems))

    def put(x: torch.Tensor) -> None:
        for i, row in zip(live, x, strict=True):
            for p, value in zip(params[i], row.split(sizes), strict=True):
                p.copy_(value.view_as(p))

    def evaluate(which: list[int]) -> tuple[list[float | None], torch.Tensor]:
        losses: list[float | None] = [None] * len(live)
        grads = torch.zeros(len(live), sum(sizes))
        for row in which:
            model, x, y = problems[live[row]]
            model.zero_grad()
            with torch.enable_grad():
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
            losses[row], grads[row] = loss.item(), flat_grad(params[live[row]])
        return losses, grads

    curves: list[list[float]] = [[] for _ in problems]
    for step in range(steps):
        if keep is not None and step == keep[0]:
            state.keep([live.index(i) for i in keep[1]])
            live = list(keep[1])
        x = torch.stack([torch.cat([p.detach().reshape(-1) for p in params[i]]) for i in live])
        state.step([lrs[i] for i in live], x, put, evaluate)
        with torch.no_grad():
            for i in live:
                model, x, y = problems[i]
                curves[i].append(nn.functional.mse_loss(model(x), y).item())
    return curves, state


@pytest.mark.parametrize(
    ("search", "threads", "width"),
    [("strong_wolfe", 1, 20), ("strong_wolfe", 2, 20), (None, 1, 20), ("strong_wolfe", 2, SPAN)],
)
def test_models_stepped_together_are_each_the_model_alone(
    search: str | None, threads: int, width: int
) -> None:
    """To the bit, losses and weights, after steps whose line searches take different numbers
    of evaluations per model and with a learning rate of each one's own; with two threads too,
    and with more parameters than one span of a row sum (3 x SPAN + 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps = 6 if width == SPAN else 12
        lrs = [1.0, 0.5, 0.8] if search else [0.05, 0.02, 0.1]
        settings = {"line_search_fn": search, "history_size": 7, "max_iter": 10}
        alone = []
        for seed, lr in enumerate(lrs):
            model, x, y = problem(seed, width)
            curve, _ = train_alone(model, x, y, steps, lr=lr, **settings)
            alone.append((curve, model))
        together = [problem(seed, width) for seed in range(len(lrs))]
        curves, _ = train_together(together, steps, lrs, **settings)
    finally:
        torch.set_num_threads(before)
    for (curve, model), got, (twin, _, _) in zip(alone, curves, together, strict=True):
        assert got == curve
        assert all(
            torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
        )
    assert len({tuple(c) for c in curves}) == len(lrs)  # three different runs


def test_it_follows_torchs_lbfgs() -> None:
    """The same algorithm as torch.optim.LBFGS: on least squares both reach the minimum, and on
    a small MLP their first steps agree to within rounding (they round differently, and L-BFGS
    carries a last-bit difference further with every step)."""
    torch.manual_seed(0)
    a, b = torch.randn(50, 8), torch.randn(50, 1)
    finals = []
    for cls in (torch.optim.LBFGS, LBFGS):
        model = nn.Linear(8, 1)
        torch.nn.init.zeros_(model.weight)
        curve, _ = train_alone(model, a, b, 5, cls, line_search_fn="strong_wolfe")
        finals.append(curve[-1])
    best = torch.linalg.lstsq(torch.cat([a, torch.ones(50, 1)], 1), b).solution
    optimum = nn.functional.mse_loss(torch.cat([a, torch.ones(50, 1)], 1) @ best, b).item()
    assert finals == pytest.approx([optimum, optimum], rel=1e-5)

    curves = []
    for cls in (torch.optim.LBFGS, LBFGS):
        model, x, y = problem(3)
        curve, _ = train_alone(model, x, y, 2, cls, line_search_fn="strong_wolfe")
        curves.append(curve)
    assert curves[1] == pytest.approx(curves[0], rel=1e-3)


def test_its_state_is_torchs_and_resumes_to_the_bit() -> None:
    """A state_dict has torch.optim.LBFGS's keys and loads into it; one saved after two steps
    and loaded into a fresh optimizer steps on exactly as the one that was not saved; a model's
    state exported from a stack is the state it has alone."""
    model, x, y = problem(4)
    twin, _, _ = problem(4)
    settings = {"line_search_fn": "strong_wolfe", "history_size": 5}
    _, optimizer = train_alone(model, x, y, 2, **settings)
    saved = optimizer.state_dict()
    keys = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag"}
    assert keys | {"prev_flat_grad", "prev_loss"} <= set(saved["state"][0])
    torch.optim.LBFGS(twin.parameters(), **settings).load_state_dict(saved)

    twin.load_state_dict(model.state_dict())
    resumed = LBFGS(twin.parameters(), **settings)
    resumed.load_state_dict(saved)
    for net, opt in ((model, optimizer), (twin, resumed)):

        def closure(net: nn.Module = net, opt: torch.optim.Optimizer = opt) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )

    alone_model, ax, ay = problem(1)
    _, alone = train_alone(alone_model, ax, ay, 3, **settings)
    _, state = train_together([problem(0), problem(1)], 3, [1.0, 1.0], **settings)
    exported, own = state.export(1), alone.state_dict()["state"][0]
    assert set(exported) == set(own)
    for key, value in own.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(exported[key], value, strict=True))
        elif isinstance(value, torch.Tensor):
            assert torch.equal(exported[key], value)
        else:
            assert exported[key] == value


def test_models_that_leave_leave_the_others_as_they_were() -> None:
    """Two of three models go on after the third leaves (a stopped or cancelled member): each
    still the model alone, to the bit."""
    settings = {"line_search_fn": "strong_wolfe", "history_size": 6}
    alone = []
    for seed in (0, 2):
        model, x, y = problem(seed)
        alone.append(train_alone(model, x, y, 6, **settings)[0])
    curves, _ = train_together(
        [problem(seed) for seed in range(3)], 6, [1.0] * 3, keep=(3, [0, 2]), **settings
    )
    assert [curves[0], curves[2]] == alone and len(curves[1]) == 3
