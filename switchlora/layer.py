"""The adapter layer y = W x + s * B (A x), with W frozen, and the conversion of a model.

Factors: A [r, n], whose vectors are rows, and B [m, r], whose vectors are columns. Where a
factor is a value it is named after its parameter, "lora_A" / "lora_B" (ROLE_ATTR, the
optimizer's param-group kinds, VectorBank.kind); variables and attributes of one factor end
in _a / _b; seeded draws key the factors with candidates.FACTOR_A / FACTOR_B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from switchlora.options import SwitchLoRAOptions

ROLE_ATTR = "_switchlora_role"
"""Attribute set on adapter parameters ("lora_A" / "lora_B") so placement_fn can see the role."""


class AdapterLinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank product s * B @ A.

    The forward holds no switching logic and no Python state that changes between steps:
    switching edits the tensors in place between optimizer steps (switchlora.controller).
    """

    def __init__(self, base: nn.Linear, rank: int, scale: float, dropout: float = 0.0) -> None:
        """Wrap `base` (reused, not copied) and create A [rank, in] and B [out, rank].

        `dropout` is applied to the input of the adapter branch only, in training mode
        (ReLoRA's adapters: B (A dropout(x))); 0 leaves the branch deterministic.

        A and B are created on base.weight's device and dtype (meta works) and left
        uninitialised: the caller fills them (switchlora.init).
        """
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"AdapterLinear wraps an nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank, **factory))
        setattr(self.lora_A, ROLE_ATTR, "lora_A")
        setattr(self.lora_B, ROLE_ATTR, "lora_B")
        self.scale = float(scale)
        self.rank = rank
        self.dropout = float(dropout)

    @property
    def in_features(self) -> int:
        """n: the input width."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """m: the output width."""
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x + s * B (A x), with x dropped out in the adapter branch when dropout > 0."""
        x_adapter = F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x
        return self.base(x) + self.scale * F.linear(F.linear(x_adapter, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        """Shapes and scale for print(model)."""
        drop = f", dropout={self.dropout:g}" if self.dropout > 0 else ""
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scale={self.scale:g}{drop}"


def convert_to_adapters(model: nn.Module, options: SwitchLoRAOptions) -> dict[str, AdapterLinear]:
    """Replace every nn.Linear whose attribute name is in options.target_modules.

    The existing nn.Linear becomes `.base` of the new layer (its weight is frozen), so this
    works on meta-device models and keeps the module path plus ".base". Returns the adapter
    layers by module path, in `model.named_modules()` order; that order defines the layer
    index used for seeding (see switchlora.init.init_adapter_layer_full).
    """
    options.validate()
    targets = set(options.target_modules)
    found: list[tuple[str, nn.Linear]] = []
    for path, module in model.named_modules():
        if isinstance(module, AdapterLinear):
            raise ValueError(f"model already contains adapter layers (at {path!r})")
        if isinstance(module, nn.Linear) and path.rpartition(".")[2] in targets:
            found.append((path, module))
    if not found:
        raise ValueError(f"no nn.Linear named one of {sorted(targets)} found in the model")
    layers: dict[str, AdapterLinear] = {}
    for path, linear in found:
        parent_path, _, child_name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        adapter = AdapterLinear(linear, options.rank, options.scale, options.dropout)
        setattr(parent, child_name, adapter)
        layers[path] = adapter
    return layers
