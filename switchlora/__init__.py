"""SwitchLoRA: switched low-rank adapters for pre-training (arXiv 2406.06564).

Usable without the trainer: adapter layer, conversion, init, switch schedule, candidate
sources, the per-vector AdamW (state stacked per layer shape) and the switch controller
(batched over the layers of one shape); and the two baselines the paper compares with:
ReLoRA (``ReLoRAController``) and GaLore (``GaLoreAdamW``).

Wiring (single process or FSDP2):

1. ``layers = convert_to_adapters(model, options)`` on the (meta) model; base weights are
   frozen here, never toggled later. The dict order is the layer index of every seed.
2. ``fully_shard(block, mesh=..., shard_placement_fn=placement_fn)`` per block (HSDP:
   ``make_placement_fn(shard mesh size)``), then the rest; then ``model.to_empty(...)``.
3. ``pools = initialize_adapters_(layers, options, w_init, device, return_pools=...)``
   (or ``init_adapter_layer_full`` + ``copy_full_`` per layer): world-size independent.
4. ``optimizer = SwitchAdamW(param_groups(model, layers), lr=...)``.
5. ``ctrl = SwitchController(layers, options, total_steps, optimizer)``;
   ``ctrl.init_state(pools or None)`` (None regenerates the pools from the seed).
6. Every step: backward -> clip -> ``ctrl.step(t)`` -> ``optimizer.step()`` -> lr step ->
   ``zero_grad()``. Checkpoint ``ctrl.state_dict()`` next to model and optimizer.
"""

from switchlora.baselines.galore import GaLoreAdamW
from switchlora.baselines.relora import ReLoRAController, ReLoRAOptions
from switchlora.controller import SwitchController
from switchlora.init import init_adapter_layer_full, initialize_adapters_
from switchlora.layer import AdapterLinear, convert_to_adapters
from switchlora.optimizer import SwitchAdamW, param_groups
from switchlora.options import SwitchLoRAOptions
from switchlora.sharding import copy_full_, make_placement_fn, placement_fn

__all__ = [
    "AdapterLinear",
    "GaLoreAdamW",
    "ReLoRAController",
    "ReLoRAOptions",
    "SwitchAdamW",
    "SwitchController",
    "SwitchLoRAOptions",
    "convert_to_adapters",
    "copy_full_",
    "init_adapter_layer_full",
    "initialize_adapters_",
    "make_placement_fn",
    "param_groups",
    "placement_fn",
]
