"""The method contract (:class:`TrainingMethod`), the runtime the loop gets, shared helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from switchlora import AdapterLinear
from trainer.config import JobConfig
from trainer.errors import ConfigError
from trainer.model.init import keyed_generator
from trainer.model.llama import Llama


@dataclass
class MethodRuntime:
    """What the training loop needs from a method after the model is built and initialised."""

    optimizer: torch.optim.Optimizer
    before_optimizer_step: Callable[[int], dict[str, float]] = lambda step: {}
    """Called after clipping and before ``optimizer.step()``; returns TensorBoard scalars."""
    stateful: dict[str, Any] = field(default_factory=dict)
    """Extra objects with state_dict()/load_state_dict() to checkpoint (e.g. the switch controller)."""
    after_optimizer_step: Callable[[int], Any] = lambda step: None
    """Called right after ``optimizer.step()`` with the same step (ReLoRA: merge and reset)."""
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    """The method's own LR schedule (ReLoRA's jagged cosine); None: the [lr_schedule] section's."""


@dataclass(frozen=True)
class TrainingMethod:
    """How one training method changes the model, its initialisation, optimizer and step hooks."""

    name: str
    """The value of method.name that selects it."""
    prepare_model: Callable[[Llama, JobConfig], Callable | None]
    """Structural changes on the meta-device model, before sharding; returns the FSDP2
    ``shard_placement_fn`` the method needs (None = default Shard(0))."""
    init_weights: Callable[[Llama, JobConfig], None]
    """Initialise what :func:`trainer.model.init.init_dense_weights` skipped (adapter layers)."""
    build_runtime: Callable[[Llama, JobConfig, torch.device], MethodRuntime]
    """The optimizer and step hooks, once the model is sharded and initialised."""
    check_config: Callable[[JobConfig], None]
    """Raise :class:`ConfigError` naming the key of the first inconsistent method setting."""
    low_rank: bool
    """method.rank and method.target_modules apply (rank checked against the model's sizes)."""
    adapters: bool
    """Adapter layers (rank method.rank) replace the target projections (counted in the FLOPs)."""
    checkpoint_keys: tuple[str, ...]
    """Settings ("section.field") that change the saved tensors; they must match on resume (the
    adapter scale is compared through the manifest's adapter_scales)."""


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def keep_dense(model: Llama, cfg: JobConfig) -> None:
    """``prepare_model`` of a method that keeps the dense model (default FSDP2 placement)."""
    return None


def no_method_weights(model: Llama, cfg: JobConfig) -> None:
    """``init_weights`` of a method with nothing beyond the dense init."""


def check_low_rank(cfg: JobConfig) -> None:
    """method.rank and method.target_modules of a low-rank method."""
    m = cfg.method
    if m.rank < 1:
        raise ConfigError(f"method.rank: must be at least 1, got {m.rank}")
    if not m.target_modules:
        raise ConfigError("method.target_modules: empty list")


def shard_degree(cfg: JobConfig) -> int:
    """Ranks along the FSDP shard dimension of the data-parallel mesh."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if cfg.parallel.dp_shard > 0:
        return cfg.parallel.dp_shard
    return world // cfg.parallel.dp_replicate


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    """The model's adapter layers by module path, in conversion (named_modules) order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def dense_init(seed: int, std: float) -> Callable[[str, AdapterLinear], torch.Tensor]:
    """The full-rank model's N(0, std) init of ``<path>.weight`` (same key as a dense run)."""

    def w_init(name: str, layer: AdapterLinear) -> torch.Tensor:
        weight = layer.base.weight
        device = (weight.to_local() if hasattr(weight, "to_local") else weight).device
        gen = keyed_generator(seed, f"{name}.weight", device)
        return torch.empty(tuple(weight.shape), device=device).normal_(0.0, std, generator=gen)

    return w_init
