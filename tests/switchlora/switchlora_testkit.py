"""Tiny LLaMA-named model and helpers shared by the switchlora tests and worker scripts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from switchlora import (
    SwitchAdamW,
    SwitchLoRAOptions,
    convert_to_adapters,
    copy_full_,
    initialize_adapters_,
    param_groups,
)
from switchlora.layer import AdapterLinear

VOCAB = 64
DIM = 32
QKV = 48
HIDDEN = 33  # odd: down_proj has n = 33, so its A takes the row-sharded fallback on 2 ranks


class Attention(nn.Module):
    """Not real attention: a gated mix that uses q/k/v/o with non-square shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(DIM, QKV, bias=False)
        self.k_proj = nn.Linear(DIM, QKV, bias=False)
        self.v_proj = nn.Linear(DIM, QKV, bias=False)
        self.o_proj = nn.Linear(QKV, DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.q_proj(x) * torch.sigmoid(self.k_proj(x)) + self.v_proj(x)
        return self.o_proj(mixed)


class Mlp(nn.Module):
    """SwiGLU MLP with an odd hidden width."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.up_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.down_proj = nn.Linear(HIDDEN, DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(DIM)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.RMSNorm(DIM)
        self.mlp = Mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLlama(nn.Module):
    """embed_tokens -> blocks -> norm -> lm_head, Hugging Face names."""

    def __init__(self, n_layers: int = 2) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(Block() for _ in range(n_layers))
        self.norm = nn.RMSNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.norm(x))


def options(**overrides) -> SwitchLoRAOptions:
    """Test defaults: r = 8, frequent switching (interval0 4, N 1)."""
    base = {"rank": 8, "interval0": 4.0, "freeze_steps": 1, "descent_ratio": 0.5, "seed": 3}
    base.update(overrides)
    opts = SwitchLoRAOptions(**base)
    opts.validate()
    return opts


def build(
    opts: SwitchLoRAOptions, device: str = "cpu"
) -> tuple[TinyLlama, dict[str, AdapterLinear]]:
    """Model with adapters, parameters uninitialised (meta) or random (cpu)."""
    with torch.device(device):
        model = TinyLlama()
    layers = convert_to_adapters(model, opts)
    return model, layers


def _normal(shape: tuple[int, ...], *keys: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000003 * keys[0] + sum(keys[1:]) + 17)
    return torch.randn(shape, generator=generator) * 0.02


@torch.no_grad()
def init_model_(model: nn.Module, layers: dict[str, AdapterLinear], opts: SwitchLoRAOptions):
    """World-size-independent init: every full tensor drawn from keyed generators."""
    adapter_params = set()
    for layer in layers.values():
        adapter_params.update(id(p) for p in layer.parameters())
    for index, (name, param) in enumerate(model.named_parameters()):
        if id(param) in adapter_params:
            continue
        if name.endswith("norm.weight") or "layernorm" in name:
            full = torch.ones(param.shape)
        else:
            full = _normal(tuple(param.shape), 7, index)
        copy_full_(param, full)
    names = list(layers)
    return initialize_adapters_(
        layers,
        opts,
        lambda name, layer: _normal((layer.out_features, layer.in_features), 11, names.index(name)),
        return_pools=True,
    )


WEIGHT_DECAY = 0.1
"""Nonzero, so that every test comparing training runs also binds the decoupled decay
(lr * weight_decay = 1e-3 per step shrinks weights by 3 % over 30 steps)."""


def make_optimizer(
    model: nn.Module,
    layers: dict[str, AdapterLinear],
    lr: float = 1e-2,
    eps: float = 1e-8,
    weight_decay: float = WEIGHT_DECAY,
):
    """SwitchAdamW over the lora_A / lora_B / dense groups."""
    return SwitchAdamW(param_groups(model, layers), lr=lr, eps=eps, weight_decay=weight_decay)


def batch(step: int, size: int = 4, seq: int = 12) -> torch.Tensor:
    """Deterministic token batch for a step."""
    generator = torch.Generator().manual_seed(5000 + step)
    return torch.randint(0, VOCAB, (size, seq + 1), generator=generator)


def loss_of(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy (mean over tokens)."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy (plain tensors only)."""
    return copy.deepcopy(model)
