"""LoRA and SwitchLoRA: model conversion, initialisation, optimizer and the switch controller.

Both are the library's adapter method (LoRA is SwitchLoRA without switching: the same layer,
init, options and per-vector AdamW), so they share one module; ``switchlora`` adds the
controller that switches adapter vectors between the gradient clip and the optimizer step.

The effective weight of every adapted layer at step 0 equals the full-rank model's init of
the same projection (W0 = W_init - s*B0*A0), so full-rank, LoRA and SwitchLoRA runs with the
same seed start from the same function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from switchlora import (
    SwitchAdamW,
    SwitchController,
    SwitchLoRAOptions,
    convert_to_adapters,
    initialize_adapters_,
    make_placement_fn,
    param_groups,
)
from trainer.config import JobConfig, SwitchLoRA
from trainer.errors import ConfigError
from trainer.methods.base import (
    MethodRuntime,
    TrainingMethod,
    adapter_layers,
    check_low_rank,
    dense_init,
    shard_degree,
)

OPTION_KEYS = {
    "rank": "method.rank",
    "alpha": "method.alpha",
    "target_modules": "method.target_modules",
    "init": "method.init",
    "seed": "job.seed",
    **{f.name: f"switchlora.{f.name}" for f in dataclasses.fields(SwitchLoRA)},
}
"""The config key of each library option (its validation messages start with the option)."""


def switch_options(cfg: JobConfig, switching: bool) -> SwitchLoRAOptions:
    """The library options of a ``lora`` (``switching`` False) or ``switchlora`` run."""
    m, s = cfg.method, cfg.switchlora
    return SwitchLoRAOptions(
        rank=m.rank,
        alpha=m.alpha,
        target_modules=tuple(m.target_modules),
        switching=switching,
        interval0=s.interval0,
        descent_ratio=s.descent_ratio,
        fixed_interval=s.fixed_interval,
        freeze_steps=s.freeze_steps,
        candidate_source=s.candidate_source,
        pool_write_back=s.pool_write_back,
        pool_choice=s.pool_choice,
        pool_offload_cpu=s.pool_offload_cpu,
        init=m.init,
        seed=cfg.job.seed,
    )


def check_adapters(cfg: JobConfig, switching: bool) -> None:
    """The library's validation of the options, reported under the config key."""
    check_low_rank(cfg)
    try:
        switch_options(cfg, switching).validate()
    except ValueError as exc:
        message = str(exc)
        key = OPTION_KEYS.get(message.split(" ", 1)[0])
        raise ConfigError(f"{key}: {message}" if key else message) from None


def convert_model(model: nn.Module, cfg: JobConfig, switching: bool) -> Callable:
    """Swap target projections for adapter layers; returns the FSDP2 placement function."""
    convert_to_adapters(model, switch_options(cfg, switching))
    return make_placement_fn(shard_degree(cfg))


@torch.no_grad()
def init_adapters(model: nn.Module, cfg: JobConfig, switching: bool) -> None:
    """Write W0, A0 and B0 of every adapter layer (local shards under FSDP2)."""
    layers = adapter_layers(model)
    device = next(iter(layers.values())).lora_A
    device = (device.to_local() if hasattr(device, "to_local") else device).device
    initialize_adapters_(
        layers,
        switch_options(cfg, switching),
        dense_init(cfg.job.seed, cfg.model.init_std),
        device,
    )


def build_adapter_runtime(
    model: nn.Module, cfg: JobConfig, device: torch.device, switching: bool
) -> MethodRuntime:
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
    options = switch_options(cfg, switching)
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


def adapter_method(name: str, switching: bool, checkpoint_keys: tuple[str, ...]) -> TrainingMethod:
    return TrainingMethod(
        name=name,
        prepare_model=partial(convert_model, switching=switching),
        init_weights=partial(init_adapters, switching=switching),
        build_runtime=partial(build_adapter_runtime, switching=switching),
        check_config=partial(check_adapters, switching=switching),
        low_rank=True,
        adapters=True,
        checkpoint_keys=checkpoint_keys,
    )


LORA_KEYS = ("method.name", "method.rank", "method.target_modules")
LORA = adapter_method("lora", False, LORA_KEYS)
SWITCHLORA = adapter_method("switchlora", True, (*LORA_KEYS, "switchlora.candidate_source"))
