"""ReLoRA and GaLore in the training loop: model preparation, initialisation and runtime.

ReLoRA: target projections become adapter layers (switchlora.AdapterLinear) with A
kaiming-uniform, B = 0 and s = relora.alpha / method.rank; the base weight gets the plain
LLaMA init (the same tensor the full-rank model would get), so step 0 equals full-rank.
A :class:`switchlora.baselines.relora.ReLoRAController` resets after every ``relora.interval``-th
optimizer step (merge, re-draw, prune), and the LR follows the jagged schedule of
:func:`trainer.lr_schedule.restart_warmup_factor`.

GaLore: the model stays dense; :class:`switchlora.baselines.galore.GaLoreAdamW` projects the moments
of the target projections' weights (rank method.rank) and trains everything else with the
same AdamW unprojected.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule

from switchlora import convert_to_adapters, initialize_adapters_, make_placement_fn
from switchlora.baselines.galore import GaLoreAdamW, refresh_count
from switchlora.baselines.relora import ReLoRAController, ReLoRAOptions, relora_options
from trainer.adapters import adapter_layers, dense_init, shard_degree
from trainer.config import JobConfig
from trainer.lr_schedule import restart_warmup_factor
from trainer.methods import MethodRuntime
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
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_adamw(params, cfg.optimizer, device)
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


def galore_param_groups(model: nn.Module, cfg: JobConfig) -> list[dict]:
    """A projected group (the target projections' weights) and a plain group (the rest)."""
    targets = set(cfg.method.target_modules)
    projected: list[nn.Parameter] = []
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) and path.rpartition(".")[2] in targets:
            projected.append(module.weight)
    if not projected:
        raise ValueError(f"galore: no nn.Linear named one of {sorted(targets)} in the model")
    chosen = {id(p) for p in projected}
    plain = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    groups = [
        {
            "params": projected,
            "rank": cfg.method.rank,
            "update_interval": cfg.galore.update_interval,
            "scale": cfg.galore.scale,
        },
        {"params": plain},
    ]
    return [g for g in groups if g["params"]]


def build_galore_runtime(model: Llama, cfg: JobConfig) -> MethodRuntime:
    """GaLoreAdamW over every trainable parameter; reports the projector refresh count."""
    o = cfg.optimizer
    optimizer = GaLoreAdamW(
        galore_param_groups(model, cfg),
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps if cfg.galore.eps is None else cfg.galore.eps,
        weight_decay=o.weight_decay,
    )
    interval = cfg.galore.update_interval

    def metrics(step: int) -> dict[str, float]:
        return {"galore/projector_updates": float(refresh_count(step + 1, interval))}

    return MethodRuntime(optimizer=optimizer, before_optimizer_step=metrics)
