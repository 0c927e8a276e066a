"""precision.mode = "pure_bf16": parameters stored in bf16, as the official SwitchLoRA release trains.

The parameters are cast on the meta-device model, before sharding, so every tensor built from
them later is bf16 too: the FSDP2 shards (frozen W included), the gradients and their
reduction, the optimizer moments (created like their parameter) and the SwitchLoRA candidate
pools (created like the adapter factors). Per-vector and scalar step counts are created in
fp32 by the optimizers and stay fp32. Buffers (the rotary tables) are left in fp32.
"""

from __future__ import annotations

import torch
from torch import nn


def store_parameters_in_bf16(model: nn.Module) -> None:
    """Cast every floating-point parameter of ``model`` to bf16 in place.

    ``param.data`` is replaced rather than the Parameter, so the attributes set on it (the
    adapter role the placement function reads) and ``requires_grad`` are kept.
    """
    for param in model.parameters():
        if param.dtype.is_floating_point and param.dtype != torch.bfloat16:
            param.data = param.data.to(torch.bfloat16)
