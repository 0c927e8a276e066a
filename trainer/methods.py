"""How each training method changes the model, its initialisation, optimizer and step hook.

``full`` trains every projection; ``lora`` and ``switchlora`` replace the target projections
by adapter layers (frozen base weight + trainable A, B); SwitchLoRA adds a controller that
switches adapter vectors between the gradient clip and the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainer.config import JobConfig
from trainer.model.llama import Llama
from trainer.optim import build_adamw


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


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def prepare_model(model: Llama, cfg: JobConfig) -> Callable | None:
    """Structural changes on the meta-device model, before sharding.

    Returns the FSDP2 ``shard_placement_fn`` the method needs (None = default Shard(0)).
    """
    if cfg.method.name in ("full", "galore"):
        return None
    if cfg.method.name == "relora":
        from trainer.baselines import prepare_relora

        return prepare_relora(model, cfg)
    from trainer.adapters import convert_model

    return convert_model(model, cfg)


@torch.no_grad()
def init_method_weights(model: Llama, cfg: JobConfig) -> None:
    """Initialise what :func:`trainer.model.init.init_dense_weights` skipped (adapter layers)."""
    if cfg.method.name in ("full", "galore"):
        return
    if cfg.method.name == "relora":
        from trainer.baselines import init_relora

        init_relora(model, cfg)
        return
    from trainer.adapters import init_adapters

    init_adapters(model, cfg)


def build_runtime(model: Llama, cfg: JobConfig, device: torch.device) -> MethodRuntime:
    if cfg.method.name == "full":
        return MethodRuntime(
            optimizer=build_adamw(trainable_parameters(model), cfg.optimizer, device)
        )
    if cfg.method.name == "relora":
        from trainer.baselines import build_relora_runtime

        return build_relora_runtime(model, cfg, device)
    if cfg.method.name == "galore":
        from trainer.baselines import build_galore_runtime

        return build_galore_runtime(model, cfg)
    from trainer.adapters import build_adapter_runtime

    return build_adapter_runtime(model, cfg, device)
