"""Activation checkpointing per transformer block: full, every k-th block, or op-level.

- ``full``: every block's activations are recomputed in backward.
- ``selective`` with an integer option k: the k-th, 2k-th, ... blocks are fully
  recomputed, the others keep their activations (memory between none and full).
- ``selective`` with option ``op``: every block keeps the outputs of its compute-heavy ops
  (matmuls, attention) and recomputes the cheap ones (norms, rotary, SiLU, products) in
  backward, through :func:`torch.utils.checkpoint.create_selective_checkpoint_contexts`.

Parameter names stay unchanged (no wrapper module): the block checkpoints its own forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

aten = torch.ops.aten


def _saved_ops() -> set:
    """Ops whose outputs op-level checkpointing keeps: matmuls, attention, amax (float8)."""
    names = [
        "mm.default",
        "addmm.default",
        "bmm.default",
        "_scaled_mm.default",
        "_scaled_dot_product_flash_attention.default",
        "_scaled_dot_product_efficient_attention.default",
        "_scaled_dot_product_cudnn_attention.default",
        "_scaled_dot_product_flash_attention_for_cpu.default",
        "max.default",  # float8 tensorwise scales: amax over a whole weight or activation
    ]
    ops = set()
    for name in names:
        packet, _, overload = name.partition(".")
        if hasattr(aten, packet):
            ops.add(getattr(getattr(aten, packet), overload))
    return ops


SAVED_OPS = _saved_ops()
"""Ops whose outputs op-level selective checkpointing saves (those of the installed torch)."""


def op_policy(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    """Keep the outputs of :data:`SAVED_OPS`, recompute everything else in backward."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def op_context_fn() -> tuple:
    """The ``context_fn`` of :func:`torch.utils.checkpoint.checkpoint` for op-level selection."""
    return create_selective_checkpoint_contexts(op_policy)


def checkpointed_blocks(n_blocks: int, mode: str, option: str) -> list[int]:
    """Indices of the blocks that are checkpointed under ``mode`` / ``option``."""
    if mode == "none":
        return []
    if mode == "full" or option == "op":
        return list(range(n_blocks))
    every = parse_every(option)
    return [i for i in range(n_blocks) if (i + 1) % every == 0]


def parse_every(option: str) -> int:
    """k of ``selective_ac_option = "k"``; ValueError unless a positive integer."""
    if not option.isdigit() or int(option) < 1:
        raise ValueError(
            f"activation_checkpoint.selective_ac_option: expected 'op' or a positive integer "
            f"k (every k-th block), got {option!r}"
        )
    return int(option)


def apply_activation_checkpointing(
    model: nn.Module, mode: str = "full", option: str = "op"
) -> None:
    """Mark the blocks of ``model`` (a Llama) to checkpoint their forward (see module doc)."""
    blocks = list(model.layers.values())
    context_fn: Callable | None = op_context_fn if mode == "selective" and option == "op" else None
    for i in checkpointed_blocks(len(blocks), mode, option):
        blocks[i].checkpoint_activations = True
        blocks[i].checkpoint_context_fn = context_fn
