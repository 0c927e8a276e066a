"""Full activation checkpointing per transformer block."""

from __future__ import annotations

from torch import nn


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every block's activations in backward (parameter names stay unchanged)."""
    for block in model.layers.values():
        block.checkpoint_activations = True
