"""Stacked AdamW state of same-shaped LoRA factors: one tensor op per bank, not per parameter.

A bank holds the lora_A (or lora_B) parameters of one optimizer group whose local shards have
the same shape, dtype and device (in a LLaMA: q/k/v/o of every block, gate/up, down). Their
moments live in one tensor [2, G, vectors, length] (exp_avg, exp_avg_sq), vector-major: the
rows of A, the columns of B (so B's moments are stored transposed), and their per-vector step
counts in one tensor [G, r]. ``optimizer.state[p]`` holds views of them shaped like ``p``
(DTensors when ``p`` is one), so checkpoints, tests and tools see the usual per-param state.
The update of a bank is the per-parameter update done on the stacked gradients, op for op,
so results are identical to updating each parameter alone.

Vector indices are flat over (bank layer, local vector): layer * local_rows + (row - row_start)
for A, layer * r + column for B; ``step`` indices are layer * r + vector (step counts are full
on every rank). Zeroing vectors is then one row fill for either factor. The switch builds
them on the host (:class:`BankIndexBuilder`) and sends them as a :class:`BankIndex`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from switchlora.sharding import local, local_range
from switchlora.transfer import IndexPack


@dataclass
class BankIndex:
    """Vectors of a bank on its device (flat indices, see the module docstring)."""

    moment: torch.Tensor
    """[P] int64: flat (layer, local vector) indices into the moments."""

    step: torch.Tensor | None = None
    """[P'] int64: flat (layer, vector) indices into the step counts (None: not needed)."""


class BankIndexBuilder:
    """Host side of a BankIndex: flat indices collected from several groups, sent in an IndexPack."""

    def __init__(self) -> None:
        self.moment: list[np.ndarray] = []
        self.step: list[np.ndarray] = []
        self.with_steps = False
        self.handles: tuple[int, int | None] | None = None

    @property
    def size(self) -> int:
        """Number of vectors (moment indices)."""
        return sum(len(x) for x in self.moment)

    def add(
        self,
        bank: VectorBank,
        bank_layers: np.ndarray,
        positions: np.ndarray,
        rank: int,
        with_steps: bool,
    ) -> None:
        """Vectors `positions` of bank layers `bank_layers` (moments: local rows of A only)."""
        start, length = bank.local_vectors
        if length == rank:  # every vector held here (B, and A unless row-sharded)
            self.moment.append(bank_layers * rank + positions)
        else:
            held = (positions >= start) & (positions < start + length)
            self.moment.append(bank_layers[held] * length + positions[held] - start)
        if with_steps:
            self.with_steps = True
            self.step.append(bank_layers * rank + positions)

    def queue(self, pack: IndexPack) -> None:
        """Queue the concatenated indices."""
        moment = pack.add(np.concatenate(self.moment) if self.moment else np.zeros(0))
        step = pack.add(np.concatenate(self.step)) if self.with_steps else None
        self.handles = (moment, step)

    def resolve(self, pack: IndexPack) -> BankIndex:
        """The device BankIndex after pack.send()."""
        assert self.handles is not None
        moment, step = self.handles
        return BankIndex(pack.get(moment), None if step is None else pack.get(step))


@dataclass(eq=False)
class VectorBank:
    """Stacked moments and step counts of the same-shaped LoRA factors of one param group."""

    kind: str
    """"lora_A" (vectors are rows) or "lora_B" (vectors are columns)."""

    params: list[torch.Tensor]
    """The G parameters, in param-group order."""

    moments: torch.Tensor
    """[2, G, vectors, length]: exp_avg, then exp_avg_sq (B transposed: [2, G, r, m_local])."""

    steps: torch.Tensor
    """[G, r] float32 per-vector step counts (full r: identical on every rank)."""

    local_vectors: tuple[int, int]
    """(start, length) of this rank's vectors among the r: local rows of A; (0, r) for B."""

    freeze_next_update: BankIndex | None = None
    """Vectors whose gradient the next optimizer step zeroes: set by the switch controller,
    taken (and cleared) by SwitchAdamW.step, which passes it to :meth:`update`."""

    @property
    def rank(self) -> int:
        """r: vectors per factor."""
        return self.steps.shape[1]

    def state_of(self, i: int) -> dict[str, torch.Tensor]:
        """Optimizer state of parameter i: views of the bank (DTensors like the param)."""
        param = self.params[i]
        step = self.steps[i].unsqueeze(1 if self.kind == "lora_A" else 0)
        exp_avg, exp_avg_sq = self.moments[0, i], self.moments[1, i]
        if self.kind == "lora_B":
            exp_avg, exp_avg_sq = exp_avg.t(), exp_avg_sq.t()
        return {
            "step": step,
            "exp_avg": _like(exp_avg, param),
            "exp_avg_sq": _like(exp_avg_sq, param),
        }

    @torch.no_grad()
    def reset(self, index: BankIndex) -> None:
        """Zero the moments (and, when given, the step counts) of the indexed vectors."""
        _zero_rows(self.moments, index.moment)
        if index.step is not None:
            self.steps.view(-1).index_fill_(0, index.step, 0.0)

    @torch.no_grad()
    def update(self, group: dict[str, Any], frozen: BankIndex | None) -> None:
        """One AdamW step of every parameter (all have gradients) with per-vector bias
        correction; the gradients of the `frozen` vectors count as zero."""
        params = [local(p) for p in self.params]
        grads = [local(p.grad) for p in self.params]
        if self.kind == "lora_B":  # vector-major, like the moments
            params, grads = [p.t() for p in params], [g.t() for g in grads]
        grad = torch.stack(grads)
        if frozen is not None:
            _zero_rows(grad.unsqueeze(0), frozen.moment)
        local_steps = self.steps.narrow(1, *self.local_vectors).unsqueeze(2)
        vector_adamw_(
            params, grad, self.moments[0], self.moments[1], self.steps, local_steps, group
        )

    @torch.no_grad()
    def zero_grads(self, frozen: BankIndex) -> None:
        """Zero the `frozen` vectors in each parameter's own gradient (the one-by-one path)."""
        per_layer = self.moments.shape[2]
        for flat in frozen.moment.tolist():
            grad = self.params[flat // per_layer].grad
            if grad is not None:
                local(grad).select(0 if self.kind == "lora_A" else 1, flat % per_layer).zero_()


def _zero_rows(stacked: torch.Tensor, flat: torch.Tensor) -> None:
    """Zero rows `flat` (layer * rows + row) of `stacked` [lead, G, rows, length] in place."""
    if flat.numel() == 0:
        return
    lead, g, rows, length = stacked.shape
    stacked.view(lead, g * rows, length).index_fill_(1, flat, 0.0)


def vector_adamw_(
    params: list[torch.Tensor],
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    steps: torch.Tensor,
    local_steps: torch.Tensor,
    group: dict[str, Any],
) -> None:
    """One AdamW step of G parameters from stacked tensors, bias-corrected per vector.

    grad, exp_avg, exp_avg_sq: [G, ...] laid out like `params` (local data, G of them);
    steps: the step counts, all advanced by 1; local_steps: a view of them that broadcasts
    against the moments (the counts of this rank's vectors).
    """
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    if group["weight_decay"] != 0:
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    steps.add_(1)
    bias_correction1 = bias_correction(local_steps, beta1)
    bias_correction2 = bias_correction(local_steps, beta2)
    denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(group["eps"])
    torch._foreach_sub_(params, (exp_avg / denom * (lr / bias_correction1)).unbind(0))


def bias_correction(steps: torch.Tensor, beta: float) -> torch.Tensor:
    """1 - beta^t as -expm1(t ln beta): accurate to float32 rounding even for beta = 0.999."""
    if beta == 0.0:
        return torch.ones_like(steps)
    return -torch.expm1(steps * math.log(beta))


def _like(view: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`view` (the local data) as a tensor shaped like `param` (a DTensor when param is one)."""
    if isinstance(param, torch.distributed.tensor.DTensor):
        return torch.distributed.tensor.DTensor(view, param._spec, requires_grad=False)
    return view


def bank_key(param: torch.Tensor, kind: str) -> tuple:
    """Parameters with equal keys (within one param group) share a bank."""
    loc = local(param)
    rows = local_range(param, 0) if kind == "lora_A" else (0, param.shape[1])
    return (tuple(loc.shape), loc.dtype, loc.device, rows, tuple(param.shape))


def build_bank(kind: str, params: list[torch.Tensor]) -> VectorBank:
    """A zero-initialised bank for `params` (same bank_key)."""
    first = params[0]
    loc = local(first)
    r = first.shape[0] if kind == "lora_A" else first.shape[1]
    rows = local_range(first, 0) if kind == "lora_A" else (0, r)
    shape = tuple(loc.shape) if kind == "lora_A" else (loc.shape[1], loc.shape[0])
    moments = torch.zeros(2, len(params), *shape, dtype=loc.dtype, device=loc.device)
    steps = torch.zeros(len(params), r, dtype=torch.float32, device=loc.device)
    return VectorBank(kind, list(params), moments, steps, rows)
