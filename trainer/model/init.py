"""World-size-independent initialisation of a (possibly sharded) model.

Every tensor is drawn in full from a generator keyed by (seed, tensor name) and then the
local shard is copied into the parameter. The initial model is therefore the same on one
process and on any number of FSDP2 processes, which is what makes "N processes match one
process" testable, and a tensor is materialised in full only one at a time.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from switchlora.sharding import copy_full_
from trainer.model.llama import Llama, RMSNorm


def keyed_generator(seed: int, key: str, device: torch.device) -> torch.Generator:
    """A generator whose stream depends only on ``seed`` and ``key`` (stable across runs)."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63 - 1))
    return gen


def _device_of(param: torch.Tensor) -> torch.device:
    return (param.to_local() if isinstance(param, DTensor) else param).device


@torch.no_grad()
def init_dense_weights(model: Llama, seed: int, std: float) -> None:
    """LLaMA init: N(0, std) for every linear and embedding, ones for RMSNorm.

    Adapter layers are initialised separately (their frozen base weight depends on the
    adapter factors); this function skips any module that owns an ``init_from_full`` hook.
    """
    skip: set[str] = set()
    for mod_name, module in model.named_modules():
        if hasattr(module, "lora_A"):
            skip.update(f"{mod_name}.{p}" for p, _ in module.named_parameters())
    for name, param in model.named_parameters():
        if name in skip:
            continue
        device = _device_of(param)
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(owner, RMSNorm):
            full = torch.ones(param.shape, device=device)
        elif isinstance(owner, (nn.Linear, nn.Embedding)):
            gen = keyed_generator(seed, name, device)
            full = torch.empty(param.shape, device=device).normal_(0.0, std, generator=gen)
        else:
            raise TypeError(f"no initialiser for parameter {name} of {type(owner).__name__}")
        copy_full_(param, full)
    model.reset_rope()
