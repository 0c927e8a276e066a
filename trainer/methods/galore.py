"""GaLore: the model stays dense; the AdamW moments of the target projections' weights live
in a rank-method.rank projection of the gradient.

:class:`switchlora.baselines.galore.GaLoreAdamW` projects those weights' moments and trains
everything else with the same AdamW unprojected.
"""

from __future__ import annotations

import torch
from torch import nn

from switchlora.baselines.galore import GaLoreAdamW, refresh_count
from trainer.config import JobConfig
from trainer.errors import ConfigError
from trainer.methods.base import (
    MethodRuntime,
    TrainingMethod,
    check_low_rank,
    keep_dense,
    no_method_weights,
)
from trainer.model.llama import Llama


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


def build_galore_runtime(model: Llama, cfg: JobConfig, device: torch.device) -> MethodRuntime:
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


def check_galore(cfg: JobConfig) -> None:
    """The [galore] section."""
    check_low_rank(cfg)
    g = cfg.galore
    if g.update_interval < 1:
        raise ConfigError(f"galore.update_interval: must be positive, got {g.update_interval}")
    if g.scale <= 0:
        raise ConfigError(f"galore.scale: must be positive, got {g.scale}")
    if g.eps is not None and g.eps < 0:
        raise ConfigError(f"galore.eps: must be >= 0, got {g.eps}")


GALORE = TrainingMethod(
    name="galore",
    prepare_model=keep_dense,
    init_weights=no_method_weights,
    build_runtime=build_galore_runtime,
    check_config=check_galore,
    low_rank=True,
    adapters=False,
    checkpoint_keys=("method.name", "method.rank", "method.target_modules"),
)
