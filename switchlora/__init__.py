"""SwitchLoRA: switched low-rank adapters for pre-training (arXiv 2406.06564).

Usable without the trainer: adapter layer, conversion, init, switch schedule, candidate
sources, the static-shape switch kernel, the per-vector AdamW and the switch controller.
"""

from switchlora.controller import SwitchController
from switchlora.convert import convert_to_adapters
from switchlora.init import init_adapter_layer_full
from switchlora.layer import AdapterLinear
from switchlora.materialize import initialize_adapters_
from switchlora.optimizer import SwitchAdamW, param_groups
from switchlora.options import SwitchLoRAOptions
from switchlora.sharding import copy_full_, make_placement_fn, placement_fn

__all__ = [
    "AdapterLinear",
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
