"""LoRA and SwitchLoRA in the trainer: model conversion, initialisation, optimizer, controller.

The effective weight of every adapted layer at step 0 equals the full-rank model's init of
the same projection (W0 = W_init - s*B0*A0), so full-rank, LoRA and SwitchLoRA runs with the
same seed start from the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from switchlora import (
    AdapterLinear,
    SwitchAdamW,
    SwitchController,
    SwitchLoRAOptions,
    convert_to_adapters,
    initialize_adapters_,
    make_placement_fn,
    param_groups,
)
from trainer.config import JobConfig
from trainer.methods import MethodRuntime
from trainer.model.init import keyed_generator


def switch_options(cfg: JobConfig) -> SwitchLoRAOptions:
    """The library options of a ``lora`` or ``switchlora`` run."""
    m = cfg.method
    return SwitchLoRAOptions(
        rank=m.rank,
        alpha=m.alpha,
        target_modules=tuple(m.target_modules),
        switching=m.name == "switchlora",
        interval0=m.interval0,
        descent_ratio=m.descent_ratio,
        fixed_interval=m.fixed_interval,
        freeze_steps=m.freeze_steps,
        candidate_source=m.candidate_source,
        pool_write_back=m.pool_write_back,
        pool_choice=m.pool_choice,
        pool_offload_cpu=m.pool_offload_cpu,
        init=m.init,
        seed=cfg.job.seed,
    )


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


def convert_model(model: nn.Module, cfg: JobConfig) -> Callable:
    """Swap target projections for adapter layers; returns the FSDP2 placement function."""
    convert_to_adapters(model, switch_options(cfg))
    return make_placement_fn(shard_degree(cfg))


@torch.no_grad()
def init_adapters(model: nn.Module, cfg: JobConfig) -> None:
    """Write W0, A0 and B0 of every adapter layer (local shards under FSDP2)."""
    layers = adapter_layers(model)
    device = next(iter(layers.values())).lora_A
    device = (device.to_local() if hasattr(device, "to_local") else device).device
    initialize_adapters_(
        layers, switch_options(cfg), dense_init(cfg.job.seed, cfg.model.init_std), device
    )


def build_adapter_runtime(model: nn.Module, cfg: JobConfig, device: torch.device) -> MethodRuntime:
    """Per-vector AdamW over (lora_A, lora_B, dense) groups, plus the switch controller."""
    layers = adapter_layers(model)
    o = cfg.optimizer
    optimizer = SwitchAdamW(
        param_groups(model, layers),
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay,
    )
    options = switch_options(cfg)
    if not options.switching:
        return MethodRuntime(optimizer=optimizer)
    controller = SwitchController(
        layers,
        options,
        total_steps=cfg.training.steps,
        optimizer=optimizer,
        generator_device=device,
    )
    controller.init_state()

    def before_optimizer_step(step: int) -> dict[str, float]:
        stats = controller.step(step)
        return {f"switch/{key}": value for key, value in stats.items()}

    return MethodRuntime(
        optimizer=optimizer,
        before_optimizer_step=before_optimizer_step,
        stateful={"switch": controller},
    )
