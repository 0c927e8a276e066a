"""ReLoRA (Lialin et al., 2023): LoRA adapters merged into W and restarted on an interval.

Every reset: W += s * B @ A on the local rows of W, A is re-drawn (kaiming-uniform) and B
set to 0, and the adapters' Adam moments are pruned (random: each entry zeroed with
probability `prune_ratio`; magnitude: the `prune_ratio` smallest magnitudes of each tensor
zeroed). Step counts are left alone, so bias correction does not restart; the jagged LR
schedule's re-warm-up (trainer side) tames the first updates after a reset.

Works on plain tensors and on FSDP2 DTensors. W and B are row-sharded alike (Shard(0)), so
the merge needs only the full A (r x n, gathered once per layer). Every random draw (the new
A, the pruning masks) is a FULL tensor from a generator keyed by (seed, stream, layer or
parameter index, reset index), of which each rank keeps its local part: the result is the
same on any number of processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor

from switchlora.layer import AdapterLinear
from switchlora.options import DEFAULT_TARGET_MODULES, SwitchLoRAOptions
from switchlora.seeding import torch_generator, uniform
from switchlora.sharding import copy_full_, local, local_slice_of

REINIT_STREAM = 16
"""Key tag of the generator that re-draws A at a reset: keys (seed, tag, layer, reset)."""

PRUNE_STREAM = 17
"""Key tag of the random-pruning masks: keys (seed, tag, parameter, reset, moment)."""

MOMENT_KEYS = ("exp_avg", "exp_avg_sq")
"""Adam state entries pruned at a reset (torch.optim.AdamW names)."""

PRUNE_KINDS = ("random", "magnitude")


def relora_options(
    rank: int = 128,
    alpha: float = 32.0,
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES,
    seed: int = 0,
    dropout: float = 0.0,
) -> SwitchLoRAOptions:
    """Adapter options of a ReLoRA run: LoRA init (A kaiming-uniform, B = 0), no switching,
    ``dropout`` on the adapter branch's input."""
    return SwitchLoRAOptions(
        rank=rank,
        alpha=alpha,
        target_modules=tuple(target_modules),
        switching=False,
        init="lora",
        seed=seed,
        dropout=dropout,
    )


@dataclass
class ReLoRAOptions:
    """What happens at a ReLoRA reset."""

    reset_interval: int = 5000
    """Optimizer steps between resets: a reset follows every reset_interval-th step."""

    prune: str = "random"
    """"random": zero each moment entry with probability prune_ratio; "magnitude": zero the
    prune_ratio smallest-magnitude entries of each moment tensor."""

    prune_ratio: float = 0.999
    """Fraction of each adapter moment tensor that is zeroed (ReLoRA's default keeps 0.1 %)."""

    seed: int = 0
    """Seed of the re-drawn A and of the random pruning masks."""

    def validate(self) -> None:
        """Raise ValueError naming the offending field."""
        if not isinstance(self.reset_interval, int) or self.reset_interval < 1:
            raise ValueError(
                f"reset_interval must be a positive integer, got {self.reset_interval!r}"
            )
        if self.prune not in PRUNE_KINDS:
            raise ValueError(f"prune must be one of {PRUNE_KINDS}, got {self.prune!r}")
        if not 0.0 <= self.prune_ratio <= 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1], got {self.prune_ratio!r}")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered when it is a DTensor)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()


@torch.no_grad()
def merge_adapter_(layer: AdapterLinear) -> None:
    """W += s * B @ A in place on this rank's rows of W (the product in float64)."""
    w = local(layer.base.weight)
    b = local(layer.lora_B)
    a = _full(layer.lora_A)
    if w.shape[0] != b.shape[0]:
        raise ValueError(f"W and B must share their row sharding, got {w.shape} and {b.shape}")
    product = (b.double() @ a.to(b.device).double()) * layer.scale
    w.add_(product.to(w.dtype))


@torch.no_grad()
def reinit_adapter_(layer: AdapterLinear, generator: torch.Generator) -> None:
    """A <- kaiming-uniform U(-1/sqrt(n), 1/sqrt(n)) drawn in full from `generator`; B <- 0."""
    n = layer.in_features
    fresh = uniform(layer.rank, n, 1.0 / math.sqrt(n), generator, generator.device)
    copy_full_(layer.lora_A, fresh)
    local(layer.lora_B).zero_()


def random_keep_mask(
    shape: tuple[int, ...], prune_ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """Full boolean mask: True (kept) with probability 1 - prune_ratio, as in ReLoRA."""
    return torch.rand(shape, generator=generator, device=generator.device) > prune_ratio


def magnitude_keep_mask(full: torch.Tensor, prune_ratio: float) -> torch.Tensor:
    """Full boolean mask keeping entries above the k-th smallest magnitude, k = floor(ratio * numel).

    ReLoRA takes the `prune_ratio` quantile of |x| as the threshold; the k-th smallest value
    is the same cut without interpolation (and without torch.quantile's size limit).
    """
    magnitude = full.abs().flatten()
    k = int(prune_ratio * magnitude.numel())
    if k == 0:
        return torch.ones_like(full, dtype=torch.bool)
    threshold = magnitude.float().kthvalue(k).values
    return full.abs() > threshold


@torch.no_grad()
def prune_moments_(
    param: torch.Tensor,
    state: dict,
    options: ReLoRAOptions,
    param_index: int,
    reset_index: int,
) -> None:
    """Zero the pruned entries of `state`'s Adam moments in place; `step` is not touched.

    Random masks are drawn in full on the CPU (keys: seed, PRUNE_STREAM, param_index,
    reset_index, moment) and sliced to the local shard; magnitude masks are computed on the
    full moment (an adapter-sized gather) so that the cut is the same on every rank.
    """
    for moment_index, key in enumerate(MOMENT_KEYS):
        if key not in state:
            continue
        moment = state[key]
        if options.prune == "random":
            gen = torch_generator(
                "cpu", options.seed, PRUNE_STREAM, param_index, reset_index, moment_index
            )
            full_mask = random_keep_mask(tuple(param.shape), options.prune_ratio, gen)
        else:
            full_mask = magnitude_keep_mask(_full(moment), options.prune_ratio)
        target = local(moment)
        mask = local_slice_of(full_mask, param).to(target.device)
        target.mul_(mask.to(target.dtype))


@torch.no_grad()
def relora_reset_(
    layers: dict[str, AdapterLinear],
    optimizer: torch.optim.Optimizer,
    options: ReLoRAOptions,
    reset_index: int,
) -> None:
    """One ReLoRA reset of every layer: merge, re-draw A, zero B, prune A's and B's moments.

    `layers` is in convert_to_adapters order (the layer index keys the new A); `reset_index`
    counts resets from 1. Parameters without optimizer state (never stepped) are not pruned.
    """
    options.validate()
    for layer_index, layer in enumerate(layers.values()):
        merge_adapter_(layer)
        gen = torch_generator("cpu", options.seed, REINIT_STREAM, layer_index, reset_index)
        reinit_adapter_(layer, gen)
        for offset, param in enumerate((layer.lora_A, layer.lora_B)):
            state = optimizer.state.get(param)
            if state:
                prune_moments_(param, state, options, 2 * layer_index + offset, reset_index)


class ReLoRAController:
    """Calls :func:`relora_reset_` after every ``reset_interval``-th optimizer step.

    Call :meth:`after_step` right after ``optimizer.step()`` (not before it: the gradients
    of a step belong to the factors they were computed with), with the FSDP2 units in their
    sharded state (the layers' sharding is recorded at construction). Its state (the reset count,
    which keys the next draws) is checkpointed through state_dict / load_state_dict.
    """

    def __init__(
        self,
        layers: dict[str, AdapterLinear],
        optimizer: torch.optim.Optimizer,
        options: ReLoRAOptions,
    ) -> None:
        options.validate()
        self.layers = layers
        self.optimizer = optimizer
        self.options = options
        self.resets = 0
        self.sharded = {name: isinstance(layer.lora_A, DTensor) for name, layer in layers.items()}

    def due(self, step: int) -> bool:
        """True when a reset follows the 0-based optimizer step `step`."""
        return (step + 1) % self.options.reset_interval == 0

    def after_step(self, step: int) -> bool:
        """Reset after the 0-based optimizer step `step` when it is due; True if it did."""
        if not self.due(step):
            return False
        for name, layer in self.layers.items():
            if self.sharded[name] and not isinstance(layer.lora_A, DTensor):
                raise RuntimeError(
                    f"{name}: parameters are not sharded DTensors right now (FSDP2 unsharded "
                    "them); reshard the model before a ReLoRA reset"
                )
        self.resets += 1
        relora_reset_(self.layers, self.optimizer, self.options, self.resets)
        return True

    def state_dict(self) -> dict[str, int]:
        """The reset count."""
        return {"resets": self.resets}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the reset count."""
        self.resets = int(state["resets"])
