"""Swap target nn.Linear modules of a model for AdapterLinear."""

from __future__ import annotations

from torch import nn

from switchlora.layer import AdapterLinear
from switchlora.options import SwitchLoRAOptions


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
