"""Training many small models as one: a stack.

Jobs with the same stack key (core.spec.JobSpecBase.stack_key: one model shape, data shape,
optimizer, batch size and epochs) train together, each fold of each job a member. The members'
parameters are stacked along a new first dimension and one pass runs every member's forward and
loss on its own batch (the trainer's stacked_batch_loss where it has one, an MLP's batched
products; else torch.func.vmap of its batch_loss); the gradient of the summed losses is each
member's own gradient (the members share no parameter), and one optimizer steps the stacked
tensors, whose update is elementwise. What a member has of its own is applied per member: its
learning rate (every optimizer here moves a parameter by lr x an update that does not depend on
lr, so the update is scaled per member), its weight decay and L1 penalty, its data order and
noise (its own trainer's order of the epoch; `_Feed` takes every member's batch in one indexing
operation where none draws noise, else its own trainer draws it, with its own random stream),
its early stopping and successive halving (its own callbacks), its evaluation (its own trainer,
whose parameters are views into the stack; its epoch 0 on its own model, before the stack is
built) and its checkpoint, in the format of a job trained alone, so either kind of run resumes
the other's.

LBFGS, whose line search turns a last-bit difference into another run, steps a stack as
models/lbfgs.py's `Batched`, and a member's every number is the one it has alone, to the bit.
An LBFGS model whose stacked form gives each model its own bits in a stack of any size (an
MLP whose layers each have one input or one output: elementwise operations and reductions over
a model's own rows) trains alone on that form for a stack of one
(SupervisedTrainer.member_loss), so on one thread one pass gives every member of its stack its
loss and one backward pass every member's gradient. Other LBFGS members each compute their loss
on their own trainer, on views of the stacked parameters. The optimizer's arithmetic runs for
all members at once.

No database here: the worker passes `Hooks` that write rows and checkpoints and hear of
cancels and stops (workers/stacked.py).
"""

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from core.datasets import Split, Splits, fold_bounds, fold_splits
from core.spec import FULL_BATCH, JobSpecBase
from models import loop
from models.base import Batch, Family, Trainer
from models.lbfgs import LBFGS, Batched
from models.loop import Callback, Diverged, EpochEnd, Position
from models.supervised import SupervisedTrainer, stacks_exactly
from models.training import make_optimizer, penalty

PROGRESS_SECONDS = 0.25  # between two progress reports of a stack's jobs
FUSED = frozenset({"gd", "sgd", "momentum", "nesterov", "adam"})  # torch has fused kernels


FIELDS = dataclasses.fields(Batch)


class _Apply(nn.Module):
    """Runs a function with `model`'s parameters swapped for a member's (functional_call)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


# The members' training splits are copied into one tensor for `_Feed` up to this size (a copy
# beside what models/admission.py counts for them).
FEED_BYTES = 64 * 1024**2


class _Feed:
    """Every member's batch of a step in a few indexing operations, not one per member: the
    members' training splits in one tensor (shared ones once), each member's order of the
    epoch as its trainer draws it (Trainer.order), and one index_select. Only for trainers that
    take their batches as Trainer.batch does without noise or augmentation (the same
    examples, so the same steps); `of` is None for a stack it does not serve."""

    def __init__(self, x: Tensor, y: Tensor, offsets: Tensor, trainers: Sequence[Trainer]):
        self.x, self.y, self.offsets, self.trainers = x, y, offsets, list(trainers)
        self.sizes = [len(t.splits.train) for t in self.trainers]
        self.alike = len(set(self.sizes)) == 1  # every batch of one size across the stack
        self.batch_size = self.trainers[0].batch_size
        self.epoch: int | None = None
        self.orders: Tensor | None = None  # each member's order of `epoch`, padded

    @classmethod
    def of(cls, trainers: Sequence[Trainer]) -> "_Feed | None":
        plain = all(
            type(t).batch is Trainer.batch
            and t.spec.train.augment is None
            and not t.spec.train.input_noise
            and t.batch_size == trainers[0].batch_size
            for t in trainers
        )
        if not plain:
            return None
        splits: dict[int, Split] = {}  # distinct training splits, by their inputs' identity
        for t in trainers:
            splits.setdefault(id(t.splits.train.x), t.splits.train)
        parts = list(splits.values())
        if len(parts) > 1:
            size = sum(p.x.numel() * p.x.element_size() for p in parts)
            if size > FEED_BYTES or len({(p.x.shape[1:], p.y.shape[1:]) for p in parts}) > 1:
                return None
        x = parts[0].x if len(parts) == 1 else torch.cat([p.x for p in parts])
        y = parts[0].y if len(parts) == 1 else torch.cat([p.y for p in parts])
        starts, at = {}, 0
        for key, part in splits.items():
            starts[key] = at
            at += len(part)
        offsets = torch.tensor([starts[id(t.splits.train.x)] for t in trainers], device=x.device)
        return cls(x, y, offsets, trainers)

    def batch(self, epoch: int, index: int) -> Batch | None:
        """The members' batches `index` of `epoch`, stacked; None when they are not all of one
        size (an epoch's last batch, where the members' splits differ in size)."""
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.sizes[0])
        if not self.alike and any(min(start + self.batch_size, n) != stop for n in self.sizes):
            return None
        if self.orders is None or self.epoch != epoch:
            longest = max(self.sizes)
            # Trainer.order depends on the seed and the split's size alone: members that share
            # both (a sweep's cells of one repeat) share one draw.
            drawn: dict[tuple[int, int], int] = {}
            orders, rows = [], []
            for t, size in zip(self.trainers, self.sizes, strict=True):
                key = (t.spec.train.seed, size) if type(t).order is Trainer.order else (t,)
                if key not in drawn:
                    drawn[key] = len(orders)
                    orders.append(nn.functional.pad(t.order(epoch), (0, longest - size)))
                rows.append(drawn[key])
            self.orders = torch.stack(orders)[rows]
            self.epoch = epoch
        positions = self.orders[:, start:stop]  # in each member's own split
        flat = (positions + self.offsets[:, None]).flatten()
        k, b = positions.shape
        x = self.x.index_select(0, flat).view(k, b, *self.x.shape[1:])
        y = self.y.index_select(0, flat).view(k, b, *self.y.shape[1:])
        return Batch(x=x, y=y, clean=x, index=positions)


class Stack:
    """The stacked parameters of K trainers' models and the one optimizer that steps them."""

    def __init__(self, trainers: Sequence[Trainer]):
        self.trainers = list(trainers)
        self.template = self.trainers[0]
        model = self.template.model
        self.names = [name for name, _ in model.named_parameters()]
        self.buffer_names = [name for name, _ in model.named_buffers()]
        # Members of different widths (MLP hidden sizes) are zero-padded to the widest: a
        # member's tensor is the leading block of its slice, the rest stays zero (its gradient
        # is masked), so the padding adds exact zeros to every sum.
        self.shapes = [
            {n: tuple(_tensor(t.model, n).shape) for n in (*self.names, *self.buffer_names)}
            for t in self.trainers
        ]
        with torch.no_grad():
            self.params = {n: self._stacked(n).requires_grad_() for n in self.names}
            self.buffers = {n: self._stacked(n) for n in self.buffer_names}
        self.masks = self._masks()
        self.apply = _Apply(model)
        self.holders = [_holders(t.model, self.names) for t in self.trainers]
        self.loss = vmap(self._member_loss)
        self.optimizer = self._optimizer(list(self.params.values()))
        self.lbfgs = self._lbfgs()
        self.feed = _Feed.of(self.trainers)
        # Whether an MLP's layers of one input or output run as batched products: timed at
        # the first step (`_choose_products`). An LBFGS stack keeps the other form, the one an
        # LBFGS model computes alone (SupervisedTrainer.member_loss).
        self.products: bool | None = None if self.optimizer is not None else False
        self._point()
        self.refresh()

    def _optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer | None:
        """One optimizer over the stacked tensors; None for LBFGS (`_lbfgs`)."""
        opt = self.template.spec.optimizer_for("model")
        if opt.name == "lbfgs":
            return None
        # On the CPU, torch's fused kernels step a stacked tensor in one pass (SGD's are the
        # same to the bit, Adam's within a few ulps); on CUDA the default (foreach) stands.
        fused = params[0].device.type == "cpu" and opt.name in FUSED
        return make_optimizer(opt, 0.0, params, fused=fused)

    def _lbfgs(self) -> Batched | None:
        """LBFGS's state of every member, stepped as one on the CPU. On CUDA, whose sums may
        split a row by how many rows there are, each member steps its own optimizer (None)."""
        own = self.template.optimizers["model"]
        on_cpu = self.params[self.names[0]].device.type == "cpu"
        if not isinstance(own, LBFGS) or not on_cpu or self.masks:
            return None
        return own.batched(len(self.trainers))

    @contextlib.contextmanager
    def _unrolled(self) -> Iterator[None]:
        """A module with a fused op that vmap cannot batch (nn.LSTM) runs its plain-operation
        form meanwhile (its `vmapped` flag)."""
        flagged = [m for m in self.template.model.modules() if hasattr(m, "vmapped")]
        for module in flagged:
            module.vmapped = True
        try:
            yield
        finally:
            for module in flagged:
                module.vmapped = False

    def _vmapped(self, *args: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The members' losses."""
        with self._unrolled():
            return self.loss(*args)

    def _member_loss(
        self, params: dict[str, Tensor], x: Tensor, y: Tensor, clean: Tensor, index: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        batch = Batch(x=x, y=y, clean=clean, index=index)
        return functional_call(self.apply, params, (self.template.batch_loss, batch))

    def _stacked(self, name: str) -> Tensor:
        tensors = [_tensor(t.model, name).detach() for t in self.trainers]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) == 1:
            return torch.stack(tensors)
        widest = [max(sizes) for sizes in zip(*shapes, strict=True)]
        stacked = tensors[0].new_zeros((len(tensors), *widest))
        for k, tensor in enumerate(tensors):
            stacked[k][self._block(k, name)] = tensor
        return stacked

    def _block(self, k: int, name: str) -> tuple[slice, ...]:
        """Where member k's own tensor `name` lies in its slice of the stack."""
        return tuple(slice(0, size) for size in self.shapes[k][name])

    def _masks(self) -> dict[str, Tensor]:
        """1 where a padded parameter is a member's own, 0 in its padding."""
        masks = {}
        for name, stacked in self.params.items():
            if any(shape[name] != stacked.shape[1:] for shape in self.shapes):
                mask = torch.zeros_like(stacked, requires_grad=False)
                for k in range(len(self.trainers)):
                    mask[k][self._block(k, name)] = 1.0
                masks[name] = mask
        return masks

    def _point(self) -> None:
        """Each member's parameters become views of its block of the stack."""
        for k, trainer in enumerate(self.trainers):
            for name in self.names:
                view = self.params[name].data[k][self._block(k, name)]
                _tensor(trainer.model, name).data = view
            for name in self.buffer_names:
                view = self.buffers[name].data[k][self._block(k, name)]
                _tensor(trainer.model, name).data = view

    def refresh(self) -> None:
        """Read each member's learning rate (its schedules move it), weight decay and L1."""
        device = self.params[self.names[0]].device
        lrs = [t.optimizers["model"].param_groups[0]["lr"] for t in self.trainers]
        decays = [t.spec.train.weight_decay for t in self.trainers]
        l1 = [t.spec.train.l1 for t in self.trainers]
        self.l1, self.any_l1 = torch.tensor(l1, device=device), any(l1)
        self.lr_scale = self.decay = None
        if self.optimizer is None:  # each member's own optimizer has its own rate
            return
        group = self.optimizer.param_groups[0]
        # Alike across the stack, they are the optimizer's own, as for a model trained alone.
        group["lr"] = lrs[0]
        if len(set(lrs)) > 1:
            group["lr"] = max(lrs)
            self.lr_scale = torch.tensor([lr / group["lr"] for lr in lrs], device=device)
        group["weight_decay"] = decays[0]
        if len(set(decays)) > 1:
            group["weight_decay"] = 0.0
            self.decay = torch.tensor(decays, device=device)

    def _losses(self, batch: Batch, members: list[int]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The forward pass of some members (indices into the stack) on their batches, stacked
        along a first dimension: their losses, their sums, and their L1 penalties (on the
        weights, not the biases)."""
        which, params = self._of(members, batch.x.device)

        def pick(t: Tensor) -> Tensor:
            return t if which is None else t.index_select(0, which)

        found = self.template.stacked_batch_loss(params, batch, bool(self.products))
        if found is None:
            params = {f"model.{n}": t for n, t in params.items()}
            found = self._vmapped(params, batch.x, batch.y, batch.clean, batch.index)
        losses, extra = found
        penalties = torch.zeros_like(losses)
        if self.any_l1:
            weights = [pick(p) for p in self.params.values() if p.dim() > 2]
            penalties = penalties + pick(self.l1) * sum(w.abs().flatten(1).sum(1) for w in weights)
        return losses, extra, penalties

    def _of(self, members: Sequence[int], device: torch.device) -> tuple[Tensor | None, dict]:
        """The index of some members (None: every member) and their stacked parameters and
        buffers."""
        tensors = {**self.params, **self.buffers}
        if len(members) == len(self.trainers):
            return None, tensors
        which = torch.tensor(list(members), device=device)
        return which, {n: t.index_select(0, which) for n, t in tensors.items()}

    def step(self, batches: Sequence[Batch] | Batch) -> dict[str, Tensor]:
        """One step of every member on its own batch (a list, or one Batch whose tensors are
        the members' stacked: `feed`); returns each member's sums over its batch (tensors of
        K values: `loss` x examples, `count`, and the family's own)."""
        if not self.template.model.training:
            self.template.model.train()
        assert self.optimizer is not None  # LBFGS: lbfgs_step
        for p in self.params.values():  # zero_grad(set_to_none=True), without its profiling
            p.grad = None
        groups: list[tuple[list[int], Batch]] = []
        if isinstance(batches, Batch):
            groups.append((list(range(len(self.trainers))), batches))
        else:
            for members in _by_size(batches, range(len(batches))):
                groups.append((members, _stacked_batch([batches[i] for i in members])))
        if self.products is None:
            self.products = self._choose_products(*groups[0])
        found = []
        for members, batch in groups:
            losses, extra, penalties = self._losses(batch, members)
            (losses.sum() + penalties.sum()).backward()
            found.append((members, {"loss": losses.detach()} | extra))
        for name, mask in self.masks.items():  # the padding stays zero
            self.params[name].grad.mul_(mask)
        if self.decay is not None:  # L2 as torch's optimizers add it, per member
            for p in self.params.values():
                p.grad.add_(_along(self.decay, p) * p.detach())
        scaled = self.lr_scale is not None
        before = [p.detach().clone() for p in self.params.values()] if scaled else []
        self.optimizer.step()
        if self.lr_scale is not None:
            with torch.no_grad():
                for p, old in zip(self.params.values(), before, strict=True):
                    p.copy_(old + _along(self.lr_scale, p) * (p - old))
        device = self.params[self.names[0]].device
        if len(groups) == 1:
            counts = torch.full(
                (len(self.trainers),), float(groups[0][1].y.shape[1]), device=device
            )
        else:
            counts = torch.zeros(len(self.trainers), device=device)
            for members, batch in groups:
                counts[members] = float(batch.y.shape[1])
        return _sums(counts, found)

    def lbfgs_step(self, batches: Sequence[Batch]) -> dict[str, Tensor]:
        """One LBFGS step of every member on its own batch. An evaluation computes the
        members' losses as their trainers do (batch_loss, which for LBFGS is the stacked form
        of a stack of one, and the penalties), and one backward pass gives every member's
        gradient; the optimizer's arithmetic runs for all at once (`lbfgs`). Returns each
        member's sums, as `step` does."""
        assert self.lbfgs is not None
        k, names = len(self.trainers), self.names
        opt = self.template.spec.optimizer_for("model")
        firsts: list[tuple[Tensor, dict[str, Any]] | None] = [None] * k
        for trainer in self.trainers:
            trainer.model.train()
        fed = self._one_batch(batches)
        penalized = any(t.spec.train.l1 or t.spec.train.weight_decay for t in self.trainers)

        def own(i: int, views: dict[str, tuple[Tensor, ...]]) -> list[Tensor]:
            return [views[n][i] for n in names]

        def apart(which: list[int]) -> list[tuple[Tensor, Any]]:
            """Each member's loss on its own views of the stacked parameters."""
            views = {n: self.params[n].unbind(0) for n in names}
            found = []
            for i in which:
                with _swapped(self.holders[i], own(i, views)):
                    found.append(self.trainers[i].batch_loss(batches[i]))
            return found

        def together(which: list[int], fed: Batch) -> list[tuple[Tensor, Any]] | None:
            """The members' losses in one stacked pass: each member's to the bit as its
            stack of one computes them (`_one_batch` says where)."""
            index, params = self._of(which, fed.x.device)
            if index is not None:
                fed = Batch(*(getattr(fed, f.name).index_select(0, index) for f in FIELDS))
            found = self.template.stacked_batch_loss(params, fed)
            if found is None:
                return None
            losses, sums = found
            return [
                (losses[j], {name: value[j] for name, value in sums.items()})
                for j in range(len(which))
            ]

        def evaluate(which: list[int]) -> tuple[list[float | None], Tensor]:
            nonlocal fed
            for p in self.params.values():
                p.grad = None
            with torch.enable_grad():
                found = together(which, fed) if fed is not None else None
                if found is None:
                    fed = None
                    found = apart(which)
                totals = []
                views = {n: self.params[n].unbind(0) for n in names} if penalized else {}
                for i, (loss, sums) in zip(which, found, strict=True):
                    extra = penalty(own(i, views), opt, self.trainers[i].spec) if penalized else 0.0
                    # A penalty of 0.0 adds nothing to any bit of the loss or its gradient.
                    totals.append(loss if isinstance(extra, float) and not extra else loss + extra)
                    if firsts[i] is None:
                        firsts[i] = (loss.detach(), sums)
                stacked = torch.stack(totals)
                stacked.sum().backward()
            grads = torch.cat([p.grad.reshape(k, -1) for p in self.params.values()], 1)
            losses: list[float | None] = [None] * k
            for i, value in zip(which, stacked.tolist(), strict=True):
                losses[i] = value
            return losses, grads

        sizes = [self.params[n][0].numel() for n in names]

        def put(x: Tensor) -> None:
            for name, part in zip(names, x.split(sizes, 1), strict=True):
                self.params[name].data.copy_(part.reshape(self.params[name].shape))

        x = torch.cat([self.params[n].detach().reshape(k, -1) for n in names], 1)
        lrs = [t.optimizers["model"].param_groups[0]["lr"] for t in self.trainers]
        self.lbfgs.step(lrs, x, put, evaluate)
        stats = []
        for trainer, batch, first in zip(self.trainers, batches, firsts, strict=True):
            trainer.after_step("model")
            assert first is not None
            loss, sums = first
            n = len(batch.y)
            stats.append({"loss": loss * n, "count": float(n), **sums})
        return _by_member(stats, x.device)

    def _choose_products(self, members: list[int], batch: Batch) -> bool:
        """Whether the stack's forward and backward passes take less time with every layer a
        batched matrix product than with its layers of one input or output as broadcast
        products or sums of products (which is faster depends on the machine's CPU and its
        math library): both timed, alternately, on the first batch. Their figures differ in
        float32 summation order only."""
        took: dict[bool, float] = {False: math.inf, True: math.inf}
        _, params = self._of(members, batch.x.device)
        with torch.no_grad():
            if self.template.stacked_batch_loss(params, batch, True) is None:
                return False  # no stacked forward: vmapped
        for form in (False, True, False, True, False, True):
            self.products = form
            start = time.perf_counter()
            losses, _, penalties = self._losses(batch, members)
            (losses.sum() + penalties.sum()).backward()
            took[form] = min(took[form], time.perf_counter() - start)
        for p in self.params.values():
            p.grad = None
        return took[True] < took[False]

    def _one_batch(self, batches: Sequence[Batch]) -> Batch | None:
        """The members' batches stacked, where one stacked pass gives each member the bits of
        its own: a model whose stacked form promises them (an MLP's `stacks_exactly`), on one
        thread (more may split a member's sums by how many members there are), batches of
        one shape."""
        if not stacks_exactly(self.template.model) or torch.get_num_threads() != 1:
            return None
        if len({(b.x.shape, b.y.shape) for b in batches}) > 1:
            return None
        return _stacked_batch(batches)

    @torch.inference_mode()
    def evaluate(self, which: Sequence[int], splits: Sequence[Split]) -> list[dict[str, float]]:
        """The figures of members `which` (indices into the stack) on their splits, as each
        one's trainer.evaluate gives them: supervised members whose splits are of one size and
        fit in one evaluation chunk in one pass (stacked or vmapped; equal to their own
        evaluation within float32 reduction order, as their stacked steps are), the others each
        on its own model (LBFGS members, whose every figure is the one they have alone, to the
        bit)."""
        found: dict[int, dict[str, float]] = {}
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(which):
            trainer, n = self.trainers[k], len(splits[i])
            batched = type(trainer).evaluate is SupervisedTrainer.evaluate and not trainer.bf16
            batched = batched and self.optimizer is not None
            if batched and n <= trainer.eval_chunk:
                groups.setdefault(n, []).append(i)
            else:
                found[i] = trainer.evaluate(splits[i])
        for members in groups.values():
            if len(members) == 1:
                found[members[0]] = self.trainers[which[members[0]]].evaluate(splits[members[0]])
                continue
            figures = self._evaluate([which[i] for i in members], [splits[i] for i in members])
            found |= dict(zip(members, figures, strict=True))
        return [found[i] for i in range(len(which))]

    def _evaluate(self, which: list[int], splits: list[Split]) -> list[dict[str, float]]:
        template = self.template
        assert isinstance(template, SupervisedTrainer)
        device = self.params[self.names[0]].device
        index = torch.tensor(which, device=device)
        params = {f"model.{n}": p.detach().index_select(0, index) for n, p in self.params.items()}
        params |= {f"model.{n}": b.index_select(0, index) for n, b in self.buffers.items()}

        def member(params: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            def figures(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
                outputs = template.model(template.inputs(x)).float()
                correct = (
                    (outputs.argmax(1) == y).sum() if template.classify else outputs.new_zeros(())
                )
                return template.loss(outputs, y), correct

            return functional_call(self.apply, params, (figures, x, y))

        template.model.eval()
        xs = torch.stack([split.x for split in splits])
        ys = torch.stack([split.y for split in splits])
        plain = {name.removeprefix("model."): t for name, t in params.items()}
        found = template.stacked_figures(plain, xs, ys, products=bool(self.products))
        if found is not None:
            losses, right = found
            correct = right if right is not None else torch.zeros_like(losses)
        else:
            with self._unrolled():
                losses, correct = vmap(member)(params, xs, ys)
        return [
            template.figures(loss, right, split)
            for loss, right, split in zip(losses.tolist(), correct.tolist(), splits, strict=True)
        ]

    # --- a member's optimizer state, as the optimizer of a model trained alone holds it -----

    def optimizer_state(self, k: int) -> dict[str, Any]:
        """Member k's optimizer state_dict, the same as a job trained alone saves."""
        saved = self.trainers[k].optimizers["model"].state_dict()
        if self.lbfgs is not None:
            state = self.lbfgs.export(k)
            return saved | {"state": {0: state}} if state else saved
        if self.optimizer is None:  # its own optimizer, which holds its own state
            return saved
        state: dict[int, dict[str, Any]] = {}
        for i, (name, p) in enumerate(self.params.items()):
            values = self.optimizer.state.get(p)
            if values:
                block = self._block(k, name)
                state[i] = {
                    key: (v[k][block].clone() if _sliced(v, p) else v.clone())
                    if isinstance(v, Tensor)
                    else v
                    for key, v in values.items()
                }
        return saved | {"state": state}

    def absorb_optimizer_states(self) -> None:
        """Move the state the members' own optimizers were loaded with (a resumed run) into
        the stacked optimizer (or LBFGS's `lbfgs`; on CUDA each member's own keeps it)."""
        if self.lbfgs is not None:
            for k, trainer in enumerate(self.trainers):
                own = trainer.optimizers["model"]
                saved = own.state.get(own.param_groups[0]["params"][0])
                if saved:
                    self.lbfgs.load(k, saved)
                own.state.clear()
            return
        if self.optimizer is None:
            return
        for name, stacked in self.params.items():
            states = [
                t.optimizers["model"].state.get(_tensor(t.model, name)) for t in self.trainers
            ]
            if not all(states):
                continue
            first = states[0]
            self.optimizer.state[stacked] = {
                key: self._padded(name, [s[key] for s in states], stacked)
                if isinstance(v, Tensor) and v.dim() > 0
                else (v.clone() if isinstance(v, Tensor) else v)
                for key, v in first.items()
            }
        for trainer in self.trainers:
            trainer.optimizers["model"].state.clear()

    def _padded(self, name: str, tensors: list[Tensor], like: Tensor) -> Tensor:
        stacked = torch.zeros_like(like, requires_grad=False)
        for k, tensor in enumerate(tensors):
            stacked[k][self._block(k, name)] = tensor
        return stacked

    def keep(self, members: Sequence[int]) -> None:
        """Only these members go on; the others keep their weights as they are now."""
        kept = set(members)
        for k, trainer in enumerate(self.trainers):
            if k not in kept:
                for name in (*self.names, *self.buffer_names):
                    tensor = _tensor(trainer.model, name)
                    tensor.data = tensor.data.clone()
        if not members:
            self.trainers = []
            return
        if self.lbfgs is not None:
            self.lbfgs.keep(members)
        device = self.params[self.names[0]].device
        which = torch.tensor(list(members), device=device)
        old = self.optimizer.state if self.optimizer is not None else {}
        params = {}
        with torch.no_grad():
            for name, p in self.params.items():
                params[name] = p.detach().index_select(0, which).requires_grad_()
            self.buffers = {n: b.index_select(0, which) for n, b in self.buffers.items()}
        self.optimizer = self._optimizer(list(params.values()))
        for name, p in self.params.items():
            if p in old and self.optimizer is not None:
                self.optimizer.state[params[name]] = {
                    key: v.index_select(0, which) if _sliced(v, p) else v
                    for key, v in old[p].items()
                }
        self.params = params
        self.masks = {n: m.index_select(0, which) for n, m in self.masks.items()}
        self.shapes = [self.shapes[k] for k in members]
        self.trainers = [self.trainers[k] for k in members]
        self.template = self.trainers[0]
        self.apply = _Apply(self.template.model)
        self.holders = [self.holders[k] for k in members]
        self.feed = _Feed.of(self.trainers)
        self._point()
        self.refresh()


def _stacked_batch(batches: Sequence[Batch]) -> Batch:
    """Batches of one size as one, stacked along a first dimension."""
    return Batch(*(torch.stack([getattr(b, f.name) for b in batches]) for f in FIELDS))


def _by_size(batches: Sequence[Batch], members: Sequence[int]) -> list[list[int]]:
    """The members grouped by the size of their batch (a last batch may be smaller)."""
    groups: dict[int, list[int]] = {}
    for i in members:
        groups.setdefault(len(batches[i].y), []).append(i)
    return list(groups.values())


def _sums(counts: Tensor, found: list[tuple[list[int], dict[str, Tensor]]]) -> dict[str, Tensor]:
    """Each member's sums over its batch, K values each: loss x examples, count, and the
    family's own, from the examples in each member's batch (`counts`) and the (members,
    values) of each group of one batch size."""
    k, device = len(counts), counts.device
    sums: dict[str, Tensor] = {}
    for members, values in found:
        which = None if len(members) == k else torch.tensor(members, device=device)
        for name, value in values.items():
            into = sums.setdefault(name, torch.zeros(k, device=device))
            if which is None:
                into += value.detach().float()
            else:
                into.index_add_(0, which, value.detach().float())
    return sums | {"loss": sums["loss"] * counts, "count": counts}


def _holders(model: nn.Module, names: Sequence[str]) -> list[tuple[nn.Module, str]]:
    """Where each named parameter of `model` is held: (its module, its name there)."""
    found = []
    for name in names:
        module, _, leaf = name.rpartition(".")
        found.append((model.get_submodule(module) if module else model, leaf))
    return found


@contextlib.contextmanager
def _swapped(holders: Sequence[tuple[nn.Module, str]], tensors: Sequence[Tensor]) -> Iterator[None]:
    """The modules' parameters are these tensors meanwhile (torch.func.functional_call's
    effect, without its checks, which cost more than a small model's forward pass)."""
    saved = [module._parameters[leaf] for module, leaf in holders]
    for (module, leaf), tensor in zip(holders, tensors, strict=True):
        module._parameters[leaf] = tensor  # type: ignore[assignment]
    try:
        yield
    finally:
        for (module, leaf), parameter in zip(holders, saved, strict=True):
            module._parameters[leaf] = parameter


def _tensor(model: nn.Module, name: str) -> Tensor:
    module, _, leaf = name.rpartition(".")
    return getattr(model.get_submodule(module) if module else model, leaf)


def _along(values: Tensor, like: Tensor) -> Tensor:
    """Per-member values shaped to broadcast over a stacked tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _sliced(value: Any, param: Tensor) -> bool:
    return isinstance(value, Tensor) and value.shape == param.shape


# --- the loop over a stack of jobs ----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Member:
    """One fold of one job, trained in the stack."""

    job: "StackJob"
    fold: int
    splits: Splits
    trainer: Trainer
    position: Position
    callbacks: list[Callback]
    rng: Tensor  # its random stream (input noise), as it would be were it trained alone
    every: int = 1  # validates every `every`-th epoch and the last (loop.validation_interval)


@dataclasses.dataclass(eq=False)
class StackJob:
    """A job trained in a stack. `saved` is its checkpoint's state (None: from the start).
    `callbacks` makes the per-fold policies (early stopping, halving); `progress` publishes
    the job's progress. A job of k folds trains all its folds at once; its checkpoint then
    holds each fold's state (`folds_state`)."""

    id: str
    spec: JobSpecBase
    family: Family
    data: Splits
    saved: dict[str, Any] | None
    callbacks: Callable[[], list[Callback]]
    progress: loop.Progress
    members: list[Member] = dataclasses.field(default_factory=list)
    done: dict[int, tuple[dict[str, Any], dict[str, Tensor]]] = dataclasses.field(
        default_factory=dict
    )  # fold -> its result and its model's weights
    ended: bool = False

    @property
    def folds(self) -> int:
        return self.spec.dataset.kfold or 1


@dataclasses.dataclass
class EpochRecord:
    """What one job writes when an epoch ends: a metric row per fold, and its checkpoint,
    built when called (only while the stack stands where the epoch left it, or at a later
    epoch's start). `ends`: the job finishes with this epoch (its members leave the stack)."""

    job: StackJob
    rows: list[tuple[int, EpochEnd]]  # (fold, the epoch)
    state: Callable[[], dict[str, Any]]
    ends: bool = False


class Hooks:
    """The worker's side of a stacked run (workers/stacked.py)."""

    def started(self, job: StackJob, model: nn.Module) -> None:
        """The job's first fold is built at its initial weights."""

    def built(self) -> None:
        """Every job's members are built (each job `started`), before any trains."""

    def gone(self, job: StackJob) -> bool:
        """Whether the job must leave the stack now (cancelled, lease lost); the hook has
        ended it."""
        return False

    def stopping(self) -> bool:
        """Whether the worker is stopping: every job is saved and `stop` raises."""
        return False

    def stop(self) -> None:
        raise NotImplementedError

    def checkpoint_due(self) -> bool:
        return False

    def epoch_ended(
        self, epoch: int, figures: list[tuple[StackJob, int, dict[str, float]]]
    ) -> None:
        """Every member's figures (job, fold, metrics) of `epoch`, ending now, before any
        member's callbacks run."""

    def save(self, states: list[tuple[StackJob, dict[str, Any], int, int]]) -> None:
        """Mid-epoch checkpoints (job, state, epoch, step), all at once."""

    def record(self, records: list[EpochRecord]) -> None:
        """Every job's epoch rows and checkpoint; a job that `ends` must be written now."""

    def finish(self, done: list[tuple[StackJob, dict[str, Any], nn.Module]]) -> None:
        """These jobs succeeded (job, result, the model it serves), all at the same point."""

    def fail(self, job: StackJob, error: BaseException) -> None:
        """The job failed (its loss diverged); the others go on."""


def member_state(stack: Stack, member: Member) -> dict[str, Any]:
    """A member's checkpoint state, as a job trained alone would save it."""
    k = stack.trainers.index(member.trainer)
    state = loop.checkpoint_state(member.trainer, member.position, member.callbacks)
    state["model"] = {n: t.detach().clone() for n, t in member.trainer.model.state_dict().items()}
    state["optimizers"] = {"model": stack.optimizer_state(k)}
    state["rng"] = member.rng.clone()
    return state


def job_state(stack: Stack, job: StackJob) -> dict[str, Any]:
    """The job's checkpoint: its fold's state, or (k folds) every fold's."""
    live = {m.fold: member_state(stack, m) for m in job.members}
    if job.folds == 1:
        return live[0]
    folds = []
    for fold in range(job.folds):
        if fold in job.done:
            result, weights = job.done[fold]
            folds.append({"result": result, "model": weights})
        else:
            folds.append(live[fold])
    return {"folds_state": folds}


def _state_of(stack: Stack, job: StackJob) -> Callable[[], dict[str, Any]]:
    return lambda: job_state(stack, job)


def build(jobs: Sequence[StackJob], device: torch.device, hooks: Hooks) -> list[Member]:
    """Every job's members at their initial weights or where its checkpoint stands."""
    members: list[Member] = []
    for job in jobs:
        started = False
        saved = job.saved
        fold_states = saved["folds_state"] if saved and "folds_state" in saved else None
        for fold in range(job.folds):
            state = fold_states[fold] if fold_states else saved if fold == 0 else None
            if state is not None and "result" in state:  # a fold that ended
                job.done[fold] = (state["result"], state["model"])
                continue
            splits = fold_splits(job.data, job.folds, fold) if job.folds > 1 else job.data
            loop.seed_everything(job.spec.train.seed + fold)
            model = job.family.build(job.spec, splits.info).to(device)
            trainer = job.family.trainer(job.spec, model, splits, device)
            if not started:
                hooks.started(job, model)
                started = True
            position = Position(**state["loop"]) if state else Position(fold=fold)
            callbacks = job.callbacks()
            for callback in callbacks:
                callback.on_fold_start(trainer, position)
            if state is not None:
                for callback in callbacks:
                    callback.load_state_dict(state)
                if position.started:
                    loop.restore_trainer(trainer, state)
            member = Member(
                job,
                fold,
                splits,
                trainer,
                position,
                callbacks,
                torch.get_rng_state(),
                loop.validation_interval(trainer, splits, callbacks),
            )
            job.members.append(member)
            members.append(member)
    return members


def train(jobs: Sequence[StackJob], device: torch.device, hooks: Hooks) -> None:
    """Train the jobs' members as one stack until every job has ended. Every member must stand
    at the same epoch and batch, with as many batches per epoch (the caller checks)."""
    members = build(jobs, device, hooks)
    hooks.built()
    # Jobs whose every fold had ended: only the finish was left.
    _finish([job for job in jobs if not job.members], hooks)
    if not members:
        return
    proxy = {job.id: Position() for job in jobs}
    for job in jobs:
        if job.members:
            at = job.members[0].position
            proxy[job.id] = Position(epoch=at.epoch, batch=at.batch)
            job.progress.on_fold_start(job.members[0].trainer, proxy[job.id])
    initial = _initial_metrics(members, hooks, proxy)
    members = [m for m in members if not m.job.ended]
    if not members:
        return
    stack = Stack([m.trainer for m in members])
    stack.absorb_optimizer_states()
    _record_initial(stack, members, initial, hooks, proxy)
    total = members[0].trainer.spec.total_epochs()
    sums: dict[str, Tensor] = _stacked_sums(members, device)
    epoch = members[0].position.epoch
    told = -math.inf
    while members and epoch <= total:
        for m in members:
            m.trainer.begin_epoch(epoch)
        stack.refresh()  # the members' schedules moved their learning rates
        steps = members[0].trainer.n_batches(epoch)
        started = time.perf_counter() - members[0].position.seconds
        for batch in range(members[0].position.batch, steps):
            members, sums = _check(stack, members, sums, hooks)
            if not members:
                return
            if hooks.stopping():
                if batch > 0:
                    _save(stack, members, sums, batch, time.perf_counter() - started, hooks)
                hooks.stop()
            found = _step(stack, members, epoch, batch)
            for name, value in found.items():
                sums[name] = sums.get(name, torch.zeros_like(value)) + value
            clock = time.perf_counter()
            now = clock - started
            for m in members:
                m.position.batch, m.position.seconds = batch + 1, now
            # Progress is read by the heartbeat every few seconds: told a few times a second
            # and at the last batch, not after every batch of every job. Told at an epoch's
            # last batch, it marks the validation that follows (the ETA measures it).
            if clock - told > PROGRESS_SECONDS or (batch + 1 == steps and epoch == total):
                told = clock
                for job in _jobs_of(members):
                    proxy[job.id].epoch, proxy[job.id].batch = epoch, batch + 1
                    job.progress.on_batch_end(job.members[0].trainer, proxy[job.id], steps)
            if batch + 1 < steps and hooks.checkpoint_due():
                _save(stack, members, sums, batch + 1, now, hooks)
        seconds = time.perf_counter() - started
        members = _end_epoch(stack, members, sums, epoch, seconds, hooks, proxy)
        sums = _stacked_sums(members, device)
        epoch += 1
        for m in members:
            m.position.seconds = 0.0


def _initial_metrics(
    members: Sequence[Member], hooks: Hooks, proxy: dict[str, Position]
) -> dict[Member, dict[str, float]]:
    """Epoch 0 of the members that start here, each evaluated on its own model before the
    stack is built, as it is alone (loop.fit). A job whose figures are not finite fails."""
    found: dict[Member, dict[str, float]] = {}
    for job in _jobs_of(members):
        fresh = [m for m in job.members if not m.position.started]
        if not fresh or not job.spec.has_initial_epoch():
            continue
        job.progress.on_initial_start(fresh[0].trainer, proxy[job.id])
        try:
            for m in fresh:
                for callback in m.callbacks:
                    callback.on_initial_start(m.trainer, m.position)
                found[m] = loop.initial_metrics(m.trainer, m.splits)
        except Diverged as exc:
            job.ended = True
            hooks.fail(job, exc)
    return found


def _record_initial(
    stack: Stack,
    members: Sequence[Member],
    initial: dict[Member, dict[str, float]],
    hooks: Hooks,
    proxy: dict[str, Position],
) -> None:
    """Epoch 0's ends, as loop.fit reports them, and every job's rows and checkpoint at once."""
    rows: dict[StackJob, list[tuple[int, EpochEnd]]] = {}
    for m in members:
        if m not in initial:
            continue
        m.position.initial = True
        ended = EpochEnd(0, initial[m], 0.0, m.splits.val is not None)
        for callback in m.callbacks:
            callback.on_epoch_end(m.trainer, m.position, ended)
        rows.setdefault(m.job, []).append((m.fold, ended))
    for job, ends in rows.items():
        job.progress.on_epoch_end(job.members[0].trainer, proxy[job.id], ends[0][1])
    if rows:
        hooks.record([EpochRecord(job, ends, _state_of(stack, job)) for job, ends in rows.items()])


def _jobs_of(members: Sequence[Member]) -> list[StackJob]:
    return list(dict.fromkeys(m.job for m in members))


def _step(stack: Stack, members: Sequence[Member], epoch: int, batch: int) -> dict[str, Tensor]:
    """One batch of every member: as one stack, LBFGS's as one (`Stack.lbfgs_step`), or (LBFGS
    on CUDA) each member on its own model, whose parameters are views into the stack, exactly
    as it trains alone."""
    if stack.optimizer is not None:
        fed = stack.feed.batch(epoch, batch) if stack.feed is not None else None
        return stack.step(fed if fed is not None else [_batch(m, epoch, batch) for m in members])
    if stack.lbfgs is not None:
        return stack.lbfgs_step([_batch(m, epoch, batch) for m in members])
    stats = []
    for m in members:
        torch.set_rng_state(m.rng)
        stats.append(m.trainer.train_batch(epoch, batch))
        m.rng = torch.get_rng_state()
    return _by_member(stats, stack.params[stack.names[0]].device)


def _by_member(stats: Sequence[dict[str, Any]], device: torch.device) -> dict[str, Tensor]:
    """Each member's sums over its batch (one dict per member) as tensors of K values."""
    return {
        name: torch.stack([torch.as_tensor(s[name], device=device).float() for s in stats])
        for name in stats[0]
    }


def _stacked_sums(members: Sequence[Member], device: torch.device) -> dict[str, Tensor]:
    """The epoch's running sums as tensors of one value per member (resumed mid-epoch: the
    checkpoint's)."""
    names = dict.fromkeys(name for m in members for name in m.position.sums)
    return {
        name: torch.tensor([float(m.position.sums.get(name, 0.0)) for m in members], device=device)
        for name in names
    }


def _batch(member: Member, epoch: int, index: int) -> Batch:
    if not member.trainer.spec.train.input_noise:
        return member.trainer.batch(epoch, index)
    torch.set_rng_state(member.rng)  # its noise, drawn from its own stream
    batch = member.trainer.batch(epoch, index)
    member.rng = torch.get_rng_state()
    return batch


def _read(members: Sequence[Member], sums: dict[str, Tensor]) -> None:
    values = {name: value.tolist() for name, value in sums.items()}
    for k, m in enumerate(members):
        m.position.sums = {name: column[k] for name, column in values.items()}


def _save(
    stack: Stack,
    members: Sequence[Member],
    sums: dict[str, Tensor],
    batch: int,
    seconds: float,
    hooks: Hooks,
) -> None:
    _read(members, sums)
    for m in members:
        m.position.batch, m.position.seconds = batch, seconds
    epoch = members[0].position.epoch
    hooks.save([(job, job_state(stack, job), epoch, batch) for job in _jobs_of(members)])


def _drop(
    stack: Stack, members: list[Member], sums: dict[str, Tensor], leaving: set[int]
) -> tuple[list[Member], dict[str, Tensor]]:
    """The stack without the members at `leaving`."""
    keep = [k for k in range(len(members)) if k not in leaving]
    stack.keep(keep)
    if not keep:
        return [], {}
    return [members[k] for k in keep], {n: v[keep] for n, v in sums.items()}


def _check(
    stack: Stack, members: list[Member], sums: dict[str, Tensor], hooks: Hooks
) -> tuple[list[Member], dict[str, Tensor]]:
    """Jobs cancelled or lost meanwhile leave the stack."""
    leaving: set[int] = set()
    for job in _jobs_of(members):
        if hooks.gone(job):
            job.ended = True
            leaving |= {k for k, m in enumerate(members) if m.job is job}
    return _drop(stack, members, sums, leaving) if leaving else (members, sums)


def _end_epoch(
    stack: Stack,
    members: list[Member],
    sums: dict[str, Tensor],
    epoch: int,
    seconds: float,
    hooks: Hooks,
    proxy: dict[str, Position],
) -> list[Member]:
    """Each member's epoch ends as it would alone: its metrics, validation, schedules and
    callbacks. A member whose figures are not finite fails its job; the others go on. Then
    every job's rows and checkpoint are written at once, and the jobs whose folds have all
    ended finish."""
    _read(members, sums)
    failed: dict[StackJob, BaseException] = {}
    ends: dict[Member, EpochEnd] = {}
    validating = [
        k
        for k, m in enumerate(members)
        if m.splits.val is not None and loop.validates(m.trainer.spec, epoch, m.every)
    ]
    splits = [members[k].splits.val for k in validating]
    figures = stack.evaluate(validating, [v for v in splits if v is not None])
    validation = dict(zip(validating, figures, strict=True))
    with warnings.catch_warnings():  # a member's own optimizer never steps: the stack's does
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step()`")
        for k, m in enumerate(members):
            if m.job in failed:
                continue
            trainer = m.trainer
            try:
                m.position.read_sums(f"in epoch {epoch}")
                metrics = trainer.epoch_metrics(m.position.sums)
                validated = loop.validates(trainer.spec, epoch, m.every)
                if k in validation:
                    metrics |= {f"val_{name}": v for name, v in validation[k].items()}
                loop.refuse_non_finite(metrics, f"at the end of epoch {epoch}")
            except Diverged as exc:
                failed[m.job] = exc
                continue
            trainer.validated = validated
            trainer.end_epoch(epoch, metrics)
            ends[m] = EpochEnd(epoch, metrics, seconds, validated)
    # Every member's figures first, then the callbacks: a halving member judges against its
    # siblings' figures of this epoch too, as if they had trained before it.
    hooks.epoch_ended(
        epoch, [(m.job, m.fold, e.metrics) for m, e in ends.items() if m.job not in failed]
    )
    rows: dict[StackJob, list[tuple[int, EpochEnd]]] = {}
    for m, ended in ends.items():
        if m.job in failed:
            continue
        position = m.position
        position.epoch, position.batch, position.sums = epoch + 1, 0, {}
        position.seconds, position.last = 0.0, ended.metrics
        for callback in m.callbacks:
            if callback.on_epoch_end(m.trainer, position, ended):
                position.stopped_epoch = position.stopped_epoch or epoch
        rows.setdefault(m.job, []).append((m.fold, ended))
    for job, error in failed.items():
        job.ended = True
        hooks.fail(job, error)
    for job in _jobs_of(members):
        if job in rows and job not in failed:
            proxy[job.id].epoch, proxy[job.id].batch = epoch + 1, 0
            job.progress.on_epoch_end(job.members[0].trainer, proxy[job.id], rows[job][0][1])
    total = members[0].trainer.spec.total_epochs()
    finishing = [
        m
        for m in members
        if m.job not in failed and (m.position.stopped_epoch is not None or epoch >= total)
    ]
    records = [
        EpochRecord(
            job, rows[job], _state_of(stack, job), ends=all(m in finishing for m in job.members)
        )
        for job in _jobs_of(members)
        if job not in failed and job in rows
    ]
    hooks.record(records)
    leaving = {k for k, m in enumerate(members) if m.job in failed or m.job.ended}
    for m in finishing:
        if m.job.ended:
            continue
        result: dict[str, Any] = dict(m.position.last)
        for callback in m.callbacks:
            callback.on_train_end(m.trainer, m.position, result)
        test = {f"test_{k}": v for k, v in m.trainer.evaluate(m.splits.test).items()}
        try:
            loop.refuse_non_finite(test, "on the test set")
        except Diverged as exc:
            m.job.ended = True
            hooks.fail(m.job, exc)
            continue
        result |= test | m.trainer.result()
        weights = {n: t.detach().clone() for n, t in m.trainer.model.state_dict().items()}
        m.job.done[m.fold] = (result, weights)
        m.job.members.remove(m)
    for k, m in enumerate(members):
        if m.job.ended or m not in m.job.members:
            leaving.add(k)
    _finish([job for job in _jobs_of(members) if not job.ended and not job.members], hooks)
    if leaving:
        members, _ = _drop(stack, members, {}, leaving)
    return members


def _finish(jobs: Sequence[StackJob], hooks: Hooks) -> None:
    """Every fold of these jobs has ended: their results, and the models they serve (each
    one's best fold's), told at once."""
    done = []
    for job in jobs:
        job.ended = True
        results = [job.done[f][0] for f in range(job.folds)]
        spec = job.spec
        if job.folds == 1:
            result, weights = job.done[0]
        else:
            stopping = spec.train.early_stopping
            metric = stopping.monitor if stopping else spec.selection_metric()
            direction = spec.metrics()[metric]
            best = 0
            for fold in range(1, job.folds):
                if loop.better(direction, results[fold][metric], results[best][metric]):
                    best = fold
            weights = job.done[best][1]
            result = loop.mean_std(results) | {"folds": results, "best_fold": best + 1}
        model = job.family.build(spec, job.data.info)
        model.load_state_dict(weights)
        done.append((job, result, model))
    if done:
        hooks.finish(done)


def n_batches_of(spec: JobSpecBase, data: Splits) -> set[int]:
    """The batches per epoch of each of a job's folds, as its trainer will count them (a
    stack needs one number)."""
    counts = set()
    folds = spec.dataset.kfold or 1
    full = spec.optimizer_for("model").name in FULL_BATCH
    sizes = [len(data.train)]
    if folds > 1:  # fold_splits trains on train + val but the fold's block
        n = len(data.train) + (len(data.val) if data.val is not None else 0)
        sizes = [n - (hi - lo) for lo, hi in fold_bounds(n, folds)]
    for n in sizes:
        counts.add(math.ceil(n / (n if full else min(spec.train.batch_size, n))))
    return counts
