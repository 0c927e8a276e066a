"""AdamW with per-vector bias-correction step counts for LoRA factors ("StepAdamW").

Parameters of kind "lora_A" ([r, n]) keep `step` of shape [r, 1] (one count per row),
"lora_B" ([m, r]) keep `step` of shape [1, r] (one per column); "dense" parameters keep a
scalar step and follow torch.optim.AdamW exactly. The switch controller zeroes the counts
(and moments) of counterparts it freezes; every count advances by 1 at every step.

LoRA factors of equal local shape are updated together from stacked state
(:mod:`switchlora.vector_bank`): a handful of tensor ops per shape instead of per parameter.
Works on plain tensors and on FSDP2 DTensors: moments are DTensors shaped like the param,
the math runs on local shards, and per-vector step tensors are plain full tensors, identical
on every rank (sliced to the local rows of a row-sharded A).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from switchlora.layer import AdapterLinear
from switchlora.sharding import local, local_range
from switchlora.vector_bank import VectorBank, bank_key, build_bank, vector_adamw_

KINDS = ("dense", "lora_A", "lora_B")


def check_adamw_hyperparameters(
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> None:
    """Raise ValueError naming the first invalid AdamW hyper-parameter."""
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


class SwitchAdamW(Optimizer):
    """Decoupled-weight-decay Adam; param groups carry `kind` in ("dense", "lora_A", "lora_B")."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        """Groups without "kind" are "dense"; lr, betas, eps, weight_decay may be set per group."""
        check_adamw_hyperparameters(lr, betas, eps, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "kind": "dense",
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["kind"] not in KINDS:
                raise ValueError(f"param group kind must be one of {KINDS}, got {group['kind']!r}")
            if group["kind"] != "dense":
                for p in group["params"]:
                    if p.dim() != 2:
                        raise ValueError(f"{group['kind']} params must be 2-D, got {p.shape}")
        self._banks: list[tuple[VectorBank, dict[str, Any]]] | None = None
        self._bank_of: dict[int, tuple[VectorBank, int]] = {}
        self.bank_version = 0
        """Increases whenever the banks are rebuilt (after load_state_dict)."""

    def kind_of(self, param: torch.Tensor) -> str | None:
        """The kind of the group holding `param`, or None when it is not optimised here."""
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group["kind"]
        return None

    def banks(self) -> list[VectorBank]:
        """The banks of every LoRA factor (created, adopting any existing state, on first use)."""
        return [bank for bank, _ in self._ensure_banks()]

    def bank_of(self, param: torch.Tensor) -> tuple[VectorBank, int]:
        """(bank, index in the bank) of a lora_A / lora_B parameter."""
        self._ensure_banks()
        try:
            return self._bank_of[id(param)]
        except KeyError:
            raise ValueError(
                "parameter is not a lora_A / lora_B parameter of this optimizer"
            ) from None

    def _ensure_banks(self) -> list[tuple[VectorBank, dict[str, Any]]]:
        if self._banks is not None:
            return self._banks
        self._banks = []
        self._bank_of = {}
        for group in self.param_groups:
            kind = group["kind"]
            if kind == "dense":
                continue
            by_key: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                by_key.setdefault(bank_key(p, kind), []).append(p)
            for params in by_key.values():
                bank = build_bank(kind, params)
                for i, p in enumerate(params):
                    views = bank.state_of(i)
                    old = self.state.get(p, {})
                    with torch.no_grad():
                        for key, view in views.items():
                            if key in old:
                                local(view).copy_(local(old[key]).reshape(local(view).shape))
                    self.state[p] = views
                    self._bank_of[id(p)] = (bank, i)
                self._banks.append((bank, group))
        return self._banks

    def state_for(self, param: torch.Tensor, kind: str | None = None) -> dict[str, Any]:
        """The optimizer state of `param`, created (zero moments, zero steps) if missing."""
        if (kind or self.kind_of(param)) in ("lora_A", "lora_B"):
            self._ensure_banks()
        state = self.state[param]
        if "step" not in state:
            kind = kind or self.kind_of(param)
            if kind is None:
                raise ValueError("parameter is not in any param group of this optimizer")
            state["step"] = _zero_step(param, kind)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Standard loading, then per-vector steps moved back to float32 on the param device."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if group["kind"] == "dense":
                continue
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = state["step"].to(device=local(p).device, dtype=torch.float32)
        self._banks = None  # rebuilt from the loaded values on first use
        self.bank_version += 1

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One AdamW step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] != "dense":
                continue
            for p in group["params"]:
                if p.grad is not None:
                    _dense_update(p, self.state_for(p, "dense"), group)
        for bank, group in self._ensure_banks():
            frozen, bank.freeze_next_update = bank.freeze_next_update, None
            with_grad = [p.grad is not None for p in bank.params]
            if all(with_grad):
                bank.update(group, frozen)
                continue
            if frozen is not None:  # some without gradient: one by one
                bank.zero_grads(frozen)
            for p, has_grad in zip(bank.params, with_grad):
                if has_grad:
                    _vector_update(p, self.state[p], group, bank.kind)
        return loss


def _zero_step(param: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "dense":
        return torch.tensor(0.0, dtype=torch.float32)
    device = local(param).device
    if kind == "lora_A":
        return torch.zeros(param.shape[0], 1, dtype=torch.float32, device=device)
    return torch.zeros(1, param.shape[1], dtype=torch.float32, device=device)


def _dense_update(p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """torch.optim.AdamW's single-tensor update (same op order, scalar step on the host)."""
    param, grad = local(p), local(p.grad)
    exp_avg, exp_avg_sq = local(state["exp_avg"]), local(state["exp_avg_sq"])
    beta1, beta2 = group["betas"]
    if group["weight_decay"] != 0:
        param.mul_(1 - group["lr"] * group["weight_decay"])
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    state["step"] += 1
    step = float(state["step"].item())
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = group["lr"] / bias_correction1
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
    param.addcdiv_(exp_avg, denom, value=-step_size)


def _vector_update(
    p: torch.Tensor, state: dict[str, Any], group: dict[str, Any], kind: str
) -> None:
    """AdamW of one LoRA factor with per-row (A) or per-column (B) step counts."""
    steps = state["step"]
    local_steps = steps.narrow(0, *local_range(p, 0)) if kind == "lora_A" else steps
    vector_adamw_(
        [local(p)],
        local(p.grad).unsqueeze(0),
        local(state["exp_avg"]).unsqueeze(0),
        local(state["exp_avg_sq"]).unsqueeze(0),
        steps,
        local_steps.unsqueeze(0),
        group,
    )


def param_groups(model: nn.Module, layers: dict[str, AdapterLinear]) -> list[dict[str, Any]]:
    """Three groups over the trainable params: lora_A, lora_B and dense (everything else).

    Call after fully_shard so the groups hold the sharded parameters. Empty groups are left out.
    """
    a_params = [layer.lora_A for layer in layers.values()]
    b_params = [layer.lora_B for layer in layers.values()]
    adapter_ids = {id(p) for p in a_params + b_params}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    groups = [
        {"params": a_params, "kind": "lora_A"},
        {"params": b_params, "kind": "lora_B"},
        {"params": dense, "kind": "dense"},
    ]
    return [g for g in groups if g["params"]]
