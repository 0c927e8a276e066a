"""Sizes of exported files, computed from the model sizes alone."""

from __future__ import annotations

import torch

from trainer.export.source import dense_layout
from trainer.model.args import ModelArgs


def dense_export_bytes(args: ModelArgs, dtype: torch.dtype) -> int:
    """Bytes of the merged dense weights (safetensors headers excluded)."""
    element = torch.empty((), dtype=dtype).element_size()
    return sum(_numel(shape) for shape in dense_layout(args).values()) * element


def adapter_export_bytes(
    args: ModelArgs, rank: int, targets: tuple[str, ...], dtype: torch.dtype
) -> int:
    """Bytes of lora_A [r, n] and lora_B [m, r] of the ``targets`` projections of every block."""
    element = torch.empty((), dtype=dtype).element_size()
    shapes = args.linear_shapes()
    per_block = sum(rank * (m + n) for name, (m, n) in shapes.items() if name in targets)
    return per_block * args.n_layers * element


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
