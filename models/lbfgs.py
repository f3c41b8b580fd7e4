"""L-BFGS for one model or for many at once, with the same arithmetic either way.

The algorithm is torch.optim.LBFGS's: directions from the inverse Hessian of the last
`history_size` pairs (computed in compact form, which gives the two-loop recursion's result in
a few operations instead of a few per pair), steps of lr (the first one scaled by the
gradient), torch's strong-Wolfe line search and its stopping rules, per step at most max_iter
iterations and max_eval evaluations. Here it runs for K models whose flat parameter vectors
are the rows of one (K, P) tensor. Every operation acts on all the rows, or on those of the
models it concerns, at once and gives each row what that row gives alone: elementwise
operations, dot products that torch sums one row at a time (`_dot`), sums over the pairs and
triangular solves of one matrix per row; each model's scalars (its losses, step lengths, the
line search's choices) are its own Python floats. A model
stepped among K is therefore the model stepped alone, to the bit, which a stack of jobs needs
(models/stack.py): L-BFGS turns a last-bit difference into another run
(benchmarks/lbfgs_sensitivity.py). `LBFGS`, the optimizer of one model, is this with K = 1;
its state_dict has torch.optim.LBFGS's keys, so the checkpoints of either resume in the other.
"""

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

C1, C2 = 1e-4, 0.9  # the strong Wolfe conditions (sufficient decrease, curvature)
LS_TOLERANCE = 1e-9  # the line search's own: it stops once its bracket is this narrow
SLOTS = 3  # the gradients a line search keeps: of at most two points, and the one evaluated
# Rows are summed in spans short enough that torch sums each in one thread, however many rows
# there are (it splits a reduction of 32,768 values or more when it has one row only).
SPAN = 16_384


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Each row's dot product: (K, P), (K, P) -> (K,)."""
    if a.shape[-1] <= SPAN:
        return torch.linalg.vecdot(a, b)
    parts = zip(a.split(SPAN, -1), b.split(SPAN, -1), strict=True)
    return torch.stack([torch.linalg.vecdot(x, y) for x, y in parts], -1).sum(-1)


def _abs_sum(a: Tensor) -> Tensor:
    """Each row's sum of magnitudes: (K, P) -> (K,)."""
    if a.shape[-1] <= SPAN:
        return a.abs().sum(-1)
    return torch.stack([part.abs().sum(-1) for part in a.split(SPAN, -1)], -1).sum(-1)


def _div(a: float, b: float) -> float:
    """a / b as a float32 tensor would give it: inf or nan rather than an error."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _cubic(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The minimizer of the cubic through two points with their slopes, within bounds."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * _div(f1 - f2, x1 - x2)
    d2_square = d1 * d1 - g1 * g2  # d1**2 would raise OverflowError, not give inf
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            at = x2 - (x2 - x1) * _div(g2 + d2 - d1, g2 - g1 + 2 * d2)
        else:
            at = x1 - (x1 - x2) * _div(g1 + d2 - d1, g1 - g2 + 2 * d2)
        return min(max(at, lo), hi)
    return (lo + hi) / 2.0


@dataclasses.dataclass
class _Point:
    t: float
    f: float
    gtd: float
    slot: int  # where its gradient lies (slot 0: the search's start)


class _LineSearch:
    """torch's strong-Wolfe line search for one model, one evaluation at a time: `t` (and the
    gradient's `slot`) is the point to evaluate next; `tell` takes its loss and slope and
    returns whether another evaluation is wanted. Once not, `result` is the point chosen."""

    def __init__(self, t: float, f: float, gtd: float, d_norm: float, max_ls: int):
        self.f0, self.gtd0, self.d_norm, self.max_ls = f, gtd, d_norm, max_ls
        self.prev = _Point(0.0, f, gtd, 0)
        self.bracket: list[_Point] = []
        self.zooming = self.done = self.insufficient = False
        self.ls_iter, self.evals = 0, 0
        self.low = self.high = 0
        self.t, self.slot = t, 1
        self.result: _Point | None = None

    def _free_slot(self) -> int:
        used = {p.slot for p in self.bracket} if self.zooming else {0, self.prev.slot}
        return min(set(range(SLOTS)) - used)

    def tell(self, f: float, gtd: float) -> bool:
        point = _Point(self.t, f, gtd, self.slot)
        self.evals += 1
        if not self.zooming:
            if self.ls_iter < self.max_ls and not self._bracketed(point):
                low, high = self.t + 0.01 * (self.t - self.prev.t), self.t * 10
                prev = self.prev
                self.t = _cubic(prev.t, prev.f, prev.gtd, self.t, f, gtd, bounds=(low, high))
                self.prev = point
                self.ls_iter += 1
                self.slot = self._free_slot()
                return True
            if self.ls_iter == self.max_ls:
                self.bracket = [_Point(0.0, self.f0, self.gtd0, 0), point]
            self.zooming = True
            first, last = self.bracket[0], self.bracket[-1]
            self.low, self.high = (0, 1) if first.f <= last.f else (1, 0)
        else:
            self.ls_iter += 1
            self._narrow(point)
        return self._zoom()

    def _bracketed(self, new: _Point) -> bool:
        """The first phase's tests: whether the bracket (or, done, the point) is found."""
        prev = self.prev
        if new.f > self.f0 + C1 * new.t * self.gtd0 or (self.ls_iter > 1 and new.f >= prev.f):
            self.bracket = [prev, new]
        elif abs(new.gtd) <= -C2 * self.gtd0:
            self.bracket, self.done = [new], True
        elif new.gtd >= 0:
            self.bracket = [prev, new]
        else:
            return False
        return True

    def _narrow(self, new: _Point) -> None:
        bracket, low, high = self.bracket, self.low, self.high
        if new.f > self.f0 + C1 * new.t * self.gtd0 or new.f >= bracket[low].f:
            bracket[high] = new
            self.low, self.high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
            return
        if abs(new.gtd) <= -C2 * self.gtd0:
            self.done = True
        elif new.gtd * (bracket[high].t - bracket[low].t) >= 0:
            bracket[high] = bracket[low]
        bracket[low] = new

    def _zoom(self) -> bool:
        """The zoom phase's next point, or the end of the search."""
        bracket = self.bracket
        if self.done or self.ls_iter >= self.max_ls:
            self.result = bracket[self.low]
            return False
        a, b = bracket
        if abs(b.t - a.t) * self.d_norm < LS_TOLERANCE:
            self.result = bracket[self.low]
            return False
        t = _cubic(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        top, bottom = max(a.t, b.t), min(a.t, b.t)
        eps = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < eps:
            if self.insufficient or t >= top or t <= bottom:
                t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                self.insufficient = False
            else:
                self.insufficient = True
        else:
            self.insufficient = False
        self.t, self.slot = t, self._free_slot()
        return True


@dataclasses.dataclass(frozen=True)
class Settings:
    max_iter: int = 20
    max_eval: int = 25
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    line_search: bool = False

    @classmethod
    def of(cls, group: dict[str, Any]) -> "Settings":
        """From an optimizer's param group (LBFGS's defaults)."""
        search = group["line_search_fn"]
        if search not in (None, "strong_wolfe"):
            raise ValueError(f"unknown line search {search!r}: strong_wolfe or None")
        return cls(
            group["max_iter"],
            group["max_eval"],
            group["tolerance_grad"],
            group["tolerance_change"],
            group["history_size"],
            search is not None,
        )


# `evaluate(which)`: the losses of models `which` at the parameters put last (a list of K, None
# for the others) and their gradients (rows `which` of a (K, P) tensor).
Evaluate = Callable[[list[int]], tuple[list[float | None], Tensor]]


class Batched:
    """The L-BFGS state of K models, a row each, and their steps."""

    def __init__(self, k: int, numel: int, like: Tensor, settings: Settings):
        self.k, self.numel, self.settings = k, numel, settings
        self.like = like.new_zeros(())
        self.func_evals, self.n_iter = [0] * k, [0] * k
        self.t: list[float] = [0.0] * k
        self.prev_loss: list[float] = [0.0] * k
        self.d = like.new_zeros(k, numel)
        self.prev_flat_grad = like.new_zeros(k, numel)
        # Each model's pairs (s, y), H of them with the newest last (a model with fewer has
        # zeros before them), and their products s_i.y_j (i <= j) and y_i.y_j.
        self.s: Tensor | None = None
        self.y: Tensor | None = None
        self.sy: Tensor | None = None
        self.yy: Tensor | None = None
        self.n_old = [0] * k
        self.h_diag = like.new_ones(k)

    # --- a step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(
        self,
        lrs: Sequence[float],
        x: Tensor,
        put: Callable[[Tensor], None],
        evaluate: Evaluate,
    ) -> list[float]:
        """One step of every model: `x` holds their parameters as they stand (K, P); `put(x)`
        gives the models parameters. Returns each model's loss before the step."""
        cfg = self.settings
        everyone = list(range(self.k))
        losses, g = evaluate(everyone)
        loss = [float(v) for v in losses]  # type: ignore[arg-type]
        first = list(loss)
        for k in everyone:
            self.func_evals[k] += 1
        steep = g.abs().amax(-1).tolist()
        live = [k for k in everyone if not steep[k] <= cfg.tolerance_grad]
        if not live:
            return first
        run = _Run(self, lrs, x, g, loss)
        # Rounds: the models whose iteration ended start their next one (one pass finds their
        # directions), then every model in an iteration is evaluated at its next point. A model
        # does not wait for the others' line searches, which differ in length.
        waiting = live
        while waiting or run.searching or run.stepping:
            if waiting:
                run.directions(waiting)
            if run.searching or run.stepping:
                run.evaluate(sorted(run.searching.keys() | run.stepping), put, evaluate)
            waiting = run.finish_iterations()
        put(run.x)
        return first

    # --- the state, as torch.optim.LBFGS keeps it -------------------------------------------

    def export(self, k: int) -> dict[str, Any]:
        """Model k's state under torch.optim.LBFGS's keys (empty before its first step)."""
        if self.func_evals[k] == 0:
            return {}
        state: dict[str, Any] = {"func_evals": self.func_evals[k], "n_iter": self.n_iter[k]}
        if self.n_iter[k] == 0:
            return state
        h, n = self.settings.history_size, self.n_old[k]
        pairs = range(h - n, h) if self.s is not None else range(0)
        s, y, sy, _ = self._history() if self.s is not None else (None,) * 4
        return state | {
            "d": self.d[k].clone(),
            "t": self.t[k],
            "old_dirs": [y[k, i].clone() for i in pairs],  # type: ignore[index]
            "old_stps": [s[k, i].clone() for i in pairs],  # type: ignore[index]
            "ro": [1.0 / sy[k, i, i] for i in pairs],  # type: ignore[index]
            "H_diag": self.h_diag[k].clone(),
            "prev_flat_grad": self.prev_flat_grad[k].clone(),
            "prev_loss": self.prev_loss[k],
        }

    def load(self, k: int, state: dict[str, Any]) -> None:
        """Model k's state from torch.optim.LBFGS's keys (either optimizer's checkpoint)."""
        self.func_evals[k] = int(state.get("func_evals", 0))
        self.n_iter[k] = int(state.get("n_iter", 0))
        if "d" not in state:
            return
        h = self.settings.history_size
        self.d[k] = state["d"]
        self.t[k] = float(state["t"])
        self.prev_flat_grad[k] = state["prev_flat_grad"]
        self.prev_loss[k] = float(state["prev_loss"])
        self.h_diag[k] = float(state["H_diag"])
        dirs, stps = state["old_dirs"][-h:], state["old_stps"][-h:]
        s, y, sy, yy = self._history()
        n = len(dirs)
        s[k], y[k], sy[k], yy[k] = 0.0, 0.0, 0.0, 0.0
        if n:
            y[k, h - n :] = torch.stack(list(dirs))
            s[k, h - n :] = torch.stack(list(stps))
            # The products as the steps took them: each a row's dot product, whatever the
            # other rows (`_dot`), so the same numbers.
            for j in range(h - n, h):
                sy[k, : j + 1, j] = _dot(s[k, : j + 1], y[k, j][None])
                yy[k, :, j] = yy[k, j, :] = _dot(y[k], y[k, j][None])
        self.n_old[k] = n

    def keep(self, rows: Sequence[int]) -> None:
        """Only these models (rows) go on."""
        index = torch.tensor(list(rows), device=self.d.device)
        self.k = len(rows)
        for name in ("func_evals", "n_iter", "t", "prev_loss", "n_old"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])
        for name in ("d", "prev_flat_grad", "h_diag", "s", "y", "sy", "yy"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, index))

    def _history(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """s, y (K, H, P) and their products s.y, y.y (K, H, H)."""
        if self.s is None or self.y is None or self.sy is None or self.yy is None:
            h = self.settings.history_size
            self.s = self.like.new_zeros(self.k, h, self.numel)
            self.y = self.like.new_zeros(self.k, h, self.numel)
            self.sy = self.like.new_zeros(self.k, h, h)
            self.yy = self.like.new_zeros(self.k, h, h)
        return self.s, self.y, self.sy, self.yy


class _Run:
    """One step of K models in rounds: the models that start an iteration find their
    direction (together), then every model in a line search is evaluated at its next point
    (one call), then the searches that ended finish their iteration."""

    def __init__(self, state: Batched, lrs: Sequence[float], x: Tensor, g: Tensor, loss: list):
        self.state, self.lrs, self.x, self.g, self.loss = state, list(lrs), x.clone(), g, loss
        k = state.k
        self.n_iter, self.evals = [0] * k, [1] * k
        self.origin = self.x.clone()  # where each model's line search started
        self.slots: Tensor | None = None  # (K, SLOTS, P): gradients a line search keeps
        self.searching: dict[int, _LineSearch] = {}
        self.stepping: set[int] = set()  # without a line search: evaluated where they stand
        self.ended: list[int] = []  # whose iteration's evaluation is done

    def _mask(self, rows: Iterable[int]) -> Tensor:
        """(K, 1): True at rows `rows` (from bytes: a tensor of a nested list takes 4x longer)."""
        if not self.state.k:
            return torch.zeros(0, 1, dtype=torch.bool, device=self.x.device)
        flags = bytearray(self.state.k)
        for k in rows:
            flags[k] = 1
        return torch.frombuffer(flags, dtype=torch.bool).to(self.x.device).unsqueeze(1)

    def _column(self, values: Sequence[float]) -> Tensor:
        return torch.tensor(values, dtype=self.x.dtype).to(self.x.device).unsqueeze(1)

    def directions(self, rows: list[int]) -> None:
        """Models `rows` start an iteration: their new pair, direction and first step."""
        st, cfg = self.state, self.state.settings
        fresh, going = [], []
        for k in rows:
            self.n_iter[k] += 1
            st.n_iter[k] += 1
            (fresh if st.n_iter[k] == 1 else going).append(k)
        direction = self.g.neg()
        if fresh:  # a model's first iteration forgets its pairs
            index = torch.tensor(fresh, device=st.d.device)
            if st.s is not None:
                for history in st._history():
                    history.index_fill_(0, index, 0.0)
            st.h_diag.index_fill_(0, index, 1.0)
            for k in fresh:
                st.n_old[k] = 0
        if going:
            y = self.g - st.prev_flat_grad
            s = st.d * self._column(st.t)
            ys = _dot(y, s)
            values = ys.tolist()
            added = [k for k in going if values[k] > 1e-10]
            if added:
                self._remember(added, s, y, ys)
            index = torch.tensor(going, device=direction.device)
            direction.index_copy_(0, index, self._direction(going, index))
        chosen = self._mask(rows)
        st.d = torch.where(chosen, direction, st.d)
        st.prev_flat_grad = torch.where(chosen, self.g, st.prev_flat_grad)
        firsts = _abs_sum(self.g).tolist() if fresh else []
        for k in rows:
            st.prev_loss[k] = self.loss[k]
            if st.n_iter[k] == 1:
                st.t[k] = min(1.0, _div(1.0, firsts[k])) * self.lrs[k]
            else:
                st.t[k] = self.lrs[k]
        gtd = _dot(self.g, st.d).tolist()
        rows = [k for k in rows if not gtd[k] > -cfg.tolerance_change]
        if not rows:
            return
        chosen = self._mask(rows)
        if cfg.line_search:
            d_norm = st.d.abs().amax(-1).tolist()
            self.origin = torch.where(chosen, self.x, self.origin)
            if self.slots is None:
                self.slots = self.g.new_zeros(st.k, SLOTS, st.numel)
            start = chosen.expand_as(self.g)
            self.slots[:, 0] = torch.where(start, self.g, self.slots[:, 0])
            for k in rows:
                max_ls = cfg.max_eval - self.evals[k]
                self.searching[k] = _LineSearch(st.t[k], self.loss[k], gtd[k], d_norm[k], max_ls)
            return
        self.x = torch.where(chosen, self.x + self._column(st.t) * st.d, self.x)
        for k in rows:
            if self.n_iter[k] != cfg.max_iter:
                self.stepping.add(k)
            else:
                self.ended.append(k)

    def _remember(self, rows: list[int], s: Tensor, y: Tensor, ys: Tensor) -> None:
        """Each model of `rows` keeps its pair (s, y), the oldest of a full history dropped:
        these rows' history, rolled one place (the oldest comes last), gets the new pair and
        its products there."""
        st = self.state
        everyone = rows == list(range(st.k))
        index = None if everyone else torch.tensor(rows, device=s.device)

        def pick(t: Tensor) -> Tensor:
            return t if index is None else t.index_select(0, index)

        old_s, old_y, old_sy, old_yy = st._history()
        hist_s, hist_y = (pick(t).roll(-1, 1) for t in (old_s, old_y))
        sy, yy = (pick(t).roll((-1, -1), (1, 2)) for t in (old_sy, old_yy))
        hist_s[:, -1], new_y = pick(s), pick(y)
        hist_y[:, -1] = new_y
        sy[:, :, -1] = _dot(hist_s, new_y[:, None])  # s_i.y for every i
        sy[:, -1, :-1] = 0.0
        column = _dot(hist_y, new_y[:, None])
        yy[:, :, -1] = column
        yy[:, -1, :] = column
        if index is None:
            st.s, st.y, st.sy, st.yy = hist_s, hist_y, sy, yy
            st.h_diag = ys / column[:, -1]
        else:
            news = (hist_s, hist_y, sy, yy)
            for old, new in zip((old_s, old_y, old_sy, old_yy), news, strict=True):
                old.index_copy_(0, index, new)
            st.h_diag = st.h_diag.index_copy(0, index, ys.index_select(0, index) / column[:, -1])
        h = st.settings.history_size
        for k in rows:
            st.n_old[k] = min(st.n_old[k] + 1, h)

    def _direction(self, rows: list[int], index: Tensor) -> Tensor:
        """-H g for rows `rows` (`index`), H the inverse Hessian of the pairs in compact form
        (Byrd, Nocedal and Schnabel 1994; Nocedal and Wright 7.24) with H0 = h_diag I: the
        two-loop recursion's result in a few operations over all H pairs instead of a few per
        pair. A row's missing pairs are zeros whose solves give zeros, and every row solves H
        by H, so the arithmetic is a row's own."""
        st = self.state
        history = st._history()
        everyone = rows == list(range(st.k))
        s, y, sy, yy = history if everyone else (t.index_select(0, index) for t in history)
        h = st.settings.history_size
        g, gamma = self.g.index_select(0, index), st.h_diag.index_select(0, index)[:, None]
        first = torch.tensor([h - st.n_old[k] for k in rows], device=sy.device)  # of its pairs
        missing = torch.arange(h, device=sy.device) < first[:, None]
        r = sy.triu() + torch.diag_embed(missing.to(sy.dtype))  # R, 1 where a pair is missing
        p = torch.linalg.solve_triangular(r, _dot(s, g[:, None])[..., None], upper=True)
        middle = torch.diag_embed(sy.diagonal(dim1=1, dim2=2)) + gamma[..., None] * yy
        w = _dot(middle, p.transpose(1, 2)) - gamma * _dot(y, g[:, None])
        c = torch.linalg.solve_triangular(r.transpose(1, 2), w[..., None], upper=False)
        hg = gamma * g + (s * c).sum(1) - gamma * (y * p).sum(1)
        return hg.neg()

    def evaluate(self, rows: list[int], put: Callable[[Tensor], None], evaluate: Evaluate) -> None:
        """Every searching model at its next point, the stepping ones where they stand."""
        st = self.state
        searching = [k for k in rows if k in self.searching]
        x = self.x
        if searching:
            t = [self.searching[k].t if k in self.searching else 0.0 for k in range(st.k)]
            trial = self.origin + self._column(t) * st.d
            x = torch.where(self._mask(searching), trial, x)
        put(x)
        losses, g = evaluate(rows)
        for k in rows:
            st.func_evals[k] += 1
        if searching:
            assert self.slots is not None
            gtd = _dot(g, st.d).tolist()
            index = torch.tensor(searching, device=g.device)
            slot = torch.tensor([self.searching[k].slot for k in searching], device=g.device)
            self.slots[index, slot] = g.index_select(0, index)
            done = []
            for k in searching:
                search = self.searching[k]
                if not search.tell(float(losses[k]), gtd[k]):  # type: ignore[arg-type]
                    done.append(k)
            self._land(done)
        stepped = [k for k in rows if k in self.stepping]
        if stepped:
            mask = self._mask(stepped)
            self.g = torch.where(mask, g, self.g)
            for k in stepped:
                self.loss[k] = float(losses[k])  # type: ignore[arg-type]
                self.evals[k] += 1
                self.stepping.discard(k)
            self.ended += stepped

    def _land(self, rows: list[int]) -> None:
        """Models whose line search ended move to the point it chose."""
        if not rows:
            return
        st = self.state
        assert self.slots is not None
        t = [0.0] * st.k
        slot = [0] * st.k
        for k in rows:
            search = self.searching.pop(k)
            assert search.result is not None
            t[k], slot[k] = search.result.t, search.result.slot
            self.loss[k] = search.result.f
            st.t[k] = t[k]
            self.evals[k] += search.evals
        mask = self._mask(rows)
        self.x = torch.where(mask, self.origin + self._column(t) * st.d, self.x)
        index = torch.arange(st.k, device=self.g.device)
        kept = self.slots[index, torch.tensor(slot, device=self.g.device)]
        self.g = torch.where(mask, kept, self.g)
        self.ended += rows

    def finish_iterations(self) -> list[int]:
        """The stopping rules of the models whose iteration ended; returns those that go on."""
        rows, self.ended = self.ended, []
        if not rows:
            return []
        st, cfg = self.state, self.state.settings
        steep = self.g.abs().amax(-1).tolist()
        moved = (st.d * self._column(st.t)).abs().amax(-1).tolist()
        going = []
        for k in rows:
            if (
                self.n_iter[k] == cfg.max_iter
                or self.evals[k] >= cfg.max_eval
                or steep[k] <= cfg.tolerance_grad
                or moved[k] <= cfg.tolerance_change
                or abs(self.loss[k] - st.prev_loss[k]) < cfg.tolerance_change
            ):
                continue
            going.append(k)
        return going


class LBFGS(torch.optim.Optimizer):
    """torch.optim.LBFGS for one model, with `Batched`'s arithmetic (K = 1), so that the model
    trains alone as it does in a stack."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ):
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval if max_eval is not None else max_iter * 5 // 4,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        Settings.of(self.param_groups[0])  # an unknown line search is refused here
        self._params: list[Tensor] = self.param_groups[0]["params"]
        self._batched: Batched | None = None

    def batched(self, k: int = 1) -> Batched:
        """A fresh state for K models of this optimizer's settings."""
        numel = sum(p.numel() for p in self._params)
        return Batched(k, numel, self._params[0].detach(), Settings.of(self.param_groups[0]))

    def _state(self) -> Batched:
        if self._batched is None:
            self._batched = self.batched()
            saved = self.state.get(self._params[0])
            if saved:  # loaded from a state_dict
                self._batched.load(0, saved)
        return self._batched

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        closure = torch.enable_grad()(closure)
        params = self._params
        sizes = [p.numel() for p in params]
        returned: list[Tensor] = []

        def put(x: Tensor) -> None:
            for p, value in zip(params, x[0].split(sizes), strict=True):
                p.copy_(value.view_as(p))

        def evaluate(which: list[int]) -> tuple[list[float | None], Tensor]:
            loss = closure()
            if not returned:
                returned.append(loss)
            return [float(loss)], flat_grad(params)[None]

        x = torch.cat([p.detach().reshape(-1) for p in params])[None]
        self._state().step([float(self.param_groups[0]["lr"])], x, put, evaluate)
        return returned[0]

    def state_dict(self) -> dict[str, Any]:
        if self._batched is not None:
            self.state[self._params[0]] = self._batched.export(0)
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._batched = None


def flat_grad(params: Sequence[Tensor]) -> Tensor:
    """The parameters' gradients as one vector (zeros where a parameter has none)."""
    return torch.cat(
        [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    )
