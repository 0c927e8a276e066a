"""float8 training of linear layers with torchao (tensorwise or rowwise scaling).

Applied on the meta-device model after the method's conversion and before activation
checkpointing, compile and FSDP2 (torchtitan's order). Every ``nn.Linear`` is swapped for
torchao's ``Float8Linear`` except ``lm_head`` and layers with a dimension not divisible by
16 (a hardware requirement of the float8 matmul). For adapter methods the swapped linear is
the frozen base ``nn.Linear`` inside each adapter layer; the low-rank factors are plain
parameters of the adapter and stay in the bf16 compute dtype.

A frozen base weight keeps ``requires_grad=False`` through the swap, so FSDP2 never
allocates or reduces a gradient for it; torchao's matmul still computes a weight gradient
in eager mode (autograd discards it), which the compiled backward removes as dead code.

With ``all_gather=True`` (tensorwise only) FSDP2 all-gathers the weights in float8: each
shard is cast with a per-tensor scale that :func:`precompute_float8_scales` computes for
all weights in one all-reduce. It must run after every change of the weights: after each
optimizer step, and after anything that edits a frozen weight (a SwitchLoRA switch, a
ReLoRA merge): :func:`parallel.parallelize.parallelize` returns it as an after-step hook,
which the trainer runs after the method's own.

Without float8 tensor cores (CPU, or a GPU below compute capability 8.9) the matmuls run
in emulation (cast to float8 and back, then a high-precision matmul): correct numerics for
tests, no speed-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

EXCLUDED_NAMES = ("lm_head",)
"""Linear layers (by module-path component) that always stay in high precision."""

RECIPES = ("tensorwise", "rowwise")
"""torchao recipe names accepted by :func:`float8_config`."""


def has_float8_hardware(device: torch.device) -> bool:
    """True on a CUDA device with float8 tensor cores (compute capability >= 8.9)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def float8_config(recipe: str, all_gather: bool, emulate: bool):
    """torchao ``Float8LinearConfig`` for a recipe name; float8 all-gather needs tensorwise."""
    from torchao.float8 import Float8LinearConfig

    if recipe not in RECIPES:
        raise ValueError(f"float8 recipe must be one of {RECIPES}, got {recipe!r}")
    if all_gather and recipe != "tensorwise":
        raise ValueError("float8 all-gather works with the tensorwise recipe only")
    config = Float8LinearConfig.from_recipe_name(recipe)
    # from_recipe_name fixes every other field; emulation and all-gather are per run.
    return dataclasses.replace(config, emulate=emulate, enable_fsdp_float8_all_gather=all_gather)


def float8_module_filter(module: nn.Module, fqn: str) -> bool:
    """True for linears to convert: not lm_head, both dimensions divisible by 16."""
    if not isinstance(module, nn.Linear):
        return False
    if any(name in fqn.split(".") for name in EXCLUDED_NAMES):
        return False
    out_features, in_features = module.weight.shape
    return out_features % 16 == 0 and in_features % 16 == 0


def apply_float8(
    model: nn.Module,
    recipe: str = "tensorwise",
    all_gather: bool = False,
    emulate: bool = False,
    module_filter: Callable[[nn.Module, str], bool] = float8_module_filter,
) -> list[str]:
    """Swap eligible ``nn.Linear`` modules of ``model`` for ``Float8Linear`` in place.

    Returns the module paths converted. Works on meta-device models; parameter names and
    ``requires_grad`` flags stay unchanged, so checkpoints and optimizer groups do not move.
    """
    from torchao.float8 import convert_to_float8_training

    converted: list[str] = []

    def keep(module: nn.Module, fqn: str) -> bool:
        ok = module_filter(module, fqn)
        if ok:
            converted.append(fqn)
        return ok

    convert_to_float8_training(
        model, module_filter_fn=keep, config=float8_config(recipe, all_gather, emulate)
    )
    return converted


def float8_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The model's ``Float8Linear`` modules by path."""
    from torchao.float8.float8_linear import Float8Linear

    return {name: m for name, m in model.named_modules() if isinstance(m, Float8Linear)}


@torch.no_grad()
def precompute_float8_scales(model: nn.Module) -> None:
    """Recompute the float8 all-gather scales of every weight (one all-reduce for all)."""
    from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

    precompute_float8_dynamic_scale_for_fsdp(model)
