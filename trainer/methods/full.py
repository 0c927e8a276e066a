"""Full-rank training: every projection trains, AdamW over every parameter."""

from __future__ import annotations

import torch

from trainer.config import JobConfig
from trainer.methods.base import (
    MethodRuntime,
    TrainingMethod,
    keep_dense,
    no_method_weights,
    trainable_parameters,
)
from trainer.model.llama import Llama
from trainer.optim import build_adamw


def build_full_runtime(model: Llama, cfg: JobConfig, device: torch.device) -> MethodRuntime:
    return MethodRuntime(optimizer=build_adamw(trainable_parameters(model), cfg.optimizer, device))


def check_full(cfg: JobConfig) -> None:
    """Nothing beyond the common checks."""


FULL = TrainingMethod(
    name="full",
    prepare_model=keep_dense,
    init_weights=no_method_weights,
    build_runtime=build_full_runtime,
    check_config=check_full,
    low_rank=False,
    adapters=False,
    checkpoint_keys=("method.name",),
)
