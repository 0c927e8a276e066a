"""ReLoRA: adapters merged into W and restarted on an interval, with a jagged LR schedule.

Target projections become adapter layers (switchlora.AdapterLinear) with A kaiming-uniform,
B = 0 and s = relora.alpha / method.rank; the base weight gets the plain LLaMA init (the same
tensor the full-rank model would get), so step 0 equals full-rank. A
:class:`switchlora.baselines.relora.ReLoRAController` resets after every ``relora.interval``-th
optimizer step (merge, re-draw, prune), and the LR follows the jagged schedule of
:func:`trainer.lr_schedule.restart_warmup_factor`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from switchlora import convert_to_adapters, initialize_adapters_, make_placement_fn
from switchlora.baselines.relora import ReLoRAController, ReLoRAOptions, relora_options
from trainer.config import JobConfig
from trainer.errors import ConfigError
from trainer.lr_schedule import restart_warmup_factor
from trainer.methods.base import (
    MethodRuntime,
    TrainingMethod,
    adapter_layers,
    check_low_rank,
    dense_init,
    shard_degree,
    trainable_parameters,
)
from trainer.model.llama import Llama
from trainer.optim import build_adamw


def reshard_(model: nn.Module) -> None:
    """Put every FSDP2 unit back in its sharded state (a no-op for sharded or plain modules).

    Units built with reshard_after_forward=False stay unsharded after a no-grad forward
    (evaluation); a reset must edit the sharded parameters, the ones the optimizer holds.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def prepare_relora(model: Llama, cfg: JobConfig) -> Callable:
    """Swap the target projections for adapter layers; returns the FSDP2 placement function."""
    options = relora_options(
        cfg.method.rank,
        cfg.relora.alpha,
        cfg.method.target_modules,
        cfg.job.seed,
        dropout=cfg.relora.dropout,
    )
    convert_to_adapters(model, options)
    return make_placement_fn(shard_degree(cfg))


@torch.no_grad()
def init_relora(model: Llama, cfg: JobConfig) -> None:
    """W: the full-rank model's init of ``<path>.weight``; A kaiming-uniform; B = 0."""
    options = relora_options(
        cfg.method.rank, cfg.relora.alpha, cfg.method.target_modules, cfg.job.seed
    )

    initialize_adapters_(
        adapter_layers(model), options, dense_init(cfg.job.seed, cfg.model.init_std)
    )


def relora_lr_factor(cfg: JobConfig) -> Callable[[int], float]:
    """The jagged LR multiplier: lr_schedule's envelope, re-warmed after every reset."""
    s = cfg.lr_schedule

    def factor(step: int) -> float:
        return restart_warmup_factor(
            step,
            s.warmup_steps,
            cfg.training.steps,
            s.decay,
            s.min_lr_ratio,
            cfg.relora.interval,
            cfg.relora.restart_warmup_steps,
        )

    return factor


def build_relora_runtime(model: Llama, cfg: JobConfig, device: torch.device) -> MethodRuntime:
    """AdamW over the trainable parameters, the reset controller and the jagged schedule."""
    optimizer = build_adamw(trainable_parameters(model), cfg.optimizer, device)
    options = ReLoRAOptions(
        reset_interval=cfg.relora.interval,
        prune=cfg.relora.prune,
        prune_ratio=cfg.relora.prune_ratio,
        seed=cfg.job.seed,
    )
    controller = ReLoRAController(adapter_layers(model), optimizer, options)

    def after_step(step: int) -> None:
        if controller.due(step):
            reshard_(model)
            controller.after_step(step)

    return MethodRuntime(
        optimizer=optimizer,
        before_optimizer_step=lambda step: {"relora/resets": float(controller.resets)},
        after_optimizer_step=after_step,
        stateful={"relora": controller},
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, relora_lr_factor(cfg)),
    )


def check_relora(cfg: JobConfig) -> None:
    """The [relora] section, and method.alpha left at its default (relora.alpha is the scale)."""
    check_low_rank(cfg)
    r = cfg.relora
    if r.interval < 1:
        raise ConfigError(f"relora.interval: must be positive, got {r.interval}")
    if not 0 <= r.restart_warmup_steps < r.interval:
        raise ConfigError(
            f"relora.restart_warmup_steps: must be in [0, relora.interval), "
            f"got {r.restart_warmup_steps}"
        )
    if r.alpha <= 0:
        raise ConfigError(f"relora.alpha: must be positive, got {r.alpha}")
    if not 0.0 <= r.prune_ratio <= 1.0:
        raise ConfigError(f"relora.prune_ratio: must be in [0, 1], got {r.prune_ratio}")
    if not 0.0 <= r.dropout < 1.0:
        raise ConfigError(f"relora.dropout: must be in [0, 1), got {r.dropout}")
    if cfg.method.alpha != 1.0:
        raise ConfigError(
            "method.alpha: not used by relora (its scale is relora.alpha / method.rank)"
        )


RELORA = TrainingMethod(
    name="relora",
    prepare_model=prepare_relora,
    init_weights=init_relora,
    build_runtime=build_relora_runtime,
    check_config=check_relora,
    low_rank=True,
    adapters=True,
    checkpoint_keys=("method.name", "method.rank", "method.target_modules"),
)
