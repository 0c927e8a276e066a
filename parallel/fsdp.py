"""FSDP2 application: one unit per transformer block, then [norm, lm_head], then the root.

Frozen parameters (an adapter's base weight) are frozen before sharding, so FSDP2 never
allocates or reduces a gradient for them: only trainable tensors are reduce-scattered.
Gradients are summed, not averaged (divide factor 1): the loss is already normalised by
the global token count. The reductions are a plain SUM on every backend: with a factor of 1
FSDP2 would otherwise pick PREMUL_SUM(1.0) on NCCL (AVG on a one-rank shard group), ops that
gloo lacks; a plain SUM is exact here and keeps the path that the CPU tests exercise.
With several micro-batches per step, :func:`set_gradient_sync` turns the reductions off for
all but the last, so each step reduces every gradient once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Shard

PlacementFn = Callable[[nn.Parameter], Shard | None]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def mixed_precision_policy(mode: str) -> MixedPrecisionPolicy:
    """fp32: no casting. bf16 (and float8, whose other matmuls run in bf16): bf16 compute,
    fp32 master shards, fp32 gradient reduction. pure_bf16: the stored dtype everywhere."""
    if mode == "fp32":
        return MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    if mode in ("bf16", "float8"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if mode == "pure_bf16":  # parameters are stored in bf16 already: no casts, bf16 reduction
        return MixedPrecisionPolicy(param_dtype=None, reduce_dtype=None)
    raise ValueError(f"precision.mode: unknown mode {mode!r}")


def apply_fsdp(
    model: nn.Module,
    mesh: DeviceMesh,
    mp_policy: MixedPrecisionPolicy,
    reshard_after_forward: bool = True,
    shard_placement_fn: PlacementFn | None = None,
) -> None:
    """Shard ``model`` (a Llama) in place with FSDP2."""
    kwargs = {"mesh": mesh, "mp_policy": mp_policy}
    if shard_placement_fn is not None:
        kwargs["shard_placement_fn"] = shard_placement_fn
    blocks = list(model.layers.values())
    for i, block in enumerate(blocks):
        # The last block's parameters are needed again at once by backward.
        fully_shard(
            block, reshard_after_forward=reshard_after_forward and i < len(blocks) - 1, **kwargs
        )
    fully_shard([model.norm, model.lm_head], reshard_after_forward=False, **kwargs)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kwargs)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            force_plain_sum(module)


def force_plain_sum(module: FSDPModule) -> None:
    """Divide factor 1 and ReduceOp.SUM for the reduce-scatter and all-reduce of ``module``."""
    set_divide = (
        getattr(module, "set_gradient_divide_factor", None)
        or module.set_reduce_scatter_divide_factor
    )
    set_divide(1.0)
    # With the force flag FSDP2 reduces with SUM and post-divides by the factor, skipped at 1.
    module.set_force_sum_reduction_for_comms(True)


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Reduce gradients in the next backward (True) or accumulate them unreduced (False)."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled, recurse=True)
