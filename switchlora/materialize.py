"""Fill meta-built, possibly FSDP-sharded adapter layers with their world-size-independent init."""

from __future__ import annotations

from collections.abc import Callable

import torch

from switchlora.init import init_adapter_layer_full
from switchlora.layer import AdapterLinear
from switchlora.options import SwitchLoRAOptions
from switchlora.sharding import copy_full_


@torch.no_grad()
def initialize_adapters_(
    layers: dict[str, AdapterLinear],
    options: SwitchLoRAOptions,
    w_init: Callable[[str, AdapterLinear], torch.Tensor],
    generator_device: torch.device | str = "cpu",
    return_pools: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Write W0, A0, B0 of every layer into its parameters (local shards under FSDP2).

    `w_init(name, layer)` returns the FULL [m, n] plain-model init of the base weight (the
    same on every rank, e.g. N(0, 0.02) from a generator keyed by the layer). Layer i of
    `layers` (convert_to_adapters order) uses the init seed (options.seed, i). Returns the
    full pools per layer name when `return_pools` (pass them to SwitchController.init_state
    to avoid drawing them twice); otherwise an empty dict.
    """
    pools: dict[str, dict[str, torch.Tensor]] = {}
    for index, (name, layer) in enumerate(layers.items()):
        m, n = layer.out_features, layer.in_features
        full = init_adapter_layer_full(m, n, options, index, w_init(name, layer), generator_device)
        copy_full_(layer.base.weight, full["W0"])
        copy_full_(layer.lora_A, full["A0"])
        copy_full_(layer.lora_B, full["B0"])
        if return_pools and "pool_A" in full:
            pools[name] = {"pool_A": full["pool_A"], "pool_B": full["pool_B"]}
    return pools
