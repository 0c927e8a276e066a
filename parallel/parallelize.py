"""Apply a config's precision, activation checkpointing, compile and FSDP2 to a meta-device model.

The order is torchtitan's: parameter storage dtype, float8 linears, activation checkpointing,
compile, then FSDP2, which wraps the compiled blocks and shards what the earlier steps left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from parallel.activation_checkpoint import apply_activation_checkpointing
from parallel.compile import apply_compile
from parallel.distributed import DistInfo
from parallel.float8 import apply_float8, has_float8_hardware, precompute_float8_scales
from parallel.fsdp import PlacementFn, apply_fsdp, mixed_precision_policy
from parallel.pure_bf16 import store_parameters_in_bf16

if TYPE_CHECKING:
    from trainer.config import JobConfig
    from trainer.model.llama import Llama

StepHook = Callable[[int], object]
"""Called after every optimizer step with that step's index (the method's after-step hook's type)."""


def parallelize(
    model: Llama, cfg: JobConfig, info: DistInfo, shard_placement_fn: PlacementFn | None
) -> list[StepHook]:
    """Convert and shard ``model`` in place; returns the hooks each optimizer step must run.

    ``shard_placement_fn`` is the method's FSDP2 placement of its parameters (None: dim 0).
    """
    post_step: list[StepHook] = []
    p = cfg.precision
    if p.mode == "pure_bf16":
        store_parameters_in_bf16(model)
    if p.mode == "float8":
        apply_float8(
            model, p.float8_recipe, p.float8_all_gather, not has_float8_hardware(info.device)
        )
        if p.float8_all_gather:
            # The all-gather scales follow the weights: after the step and any switch or merge of W.
            post_step.append(lambda step: precompute_float8_scales(model))
    ac = cfg.activation_checkpoint
    if ac.mode != "none":
        apply_activation_checkpointing(model, ac.mode, ac.selective_ac_option)
    if cfg.compile.enable:
        apply_compile(model)
    apply_fsdp(
        model,
        info.mesh,
        mixed_precision_policy(p.mode),
        reshard_after_forward=cfg.parallel.reshard_after_forward,
        shard_placement_fn=shard_placement_fn,
    )
    return post_step
