"""Initialisation of adapter factors, candidate pools and the frozen base weight.

The draws produce FULL (unsharded) float32 tensors from a torch.Generator whose seed
depends only on (options.seed, layer_index); :func:`initialize_adapters_` copies the local
shard of each into the (possibly FSDP-sharded) parameters, so the result does not depend
on rank or world size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from switchlora.candidates import layer_switchable, pool_size
from switchlora.layer import AdapterLinear
from switchlora.options import SwitchLoRAOptions
from switchlora.seeding import INIT_STREAM, torch_generator, uniform
from switchlora.sharding import copy_full_

GAIN_SQRT = 3.0**-0.25
"""g = sqrt(gain) with gain = sqrt(1/3), PyTorch's leaky-ReLU gain for slope sqrt(5)."""


def switchlora_sigmas(m: int, n: int, r: int) -> tuple[float, float]:
    """(sigma_A, sigma_B) of the paper's init: Var[s (BA)_ij] = 1/(3n) with s = 1/r."""
    sigma_a = GAIN_SQRT * (r * math.sqrt(m) / n**1.5) ** 0.25
    sigma_b = GAIN_SQRT * (r / math.sqrt(m * n)) ** 0.25
    return sigma_a, sigma_b


def init_bounds(m: int, n: int, r: int, kind: str) -> tuple[float, float]:
    """Half-widths (bound_A, bound_B) of the uniform draws U(-bound, +bound).

    "switchlora": sqrt(3) * sigma for each factor. "lora": kaiming-uniform(a=sqrt(5)) for A,
    i.e. 1/sqrt(n), and 0 for B (B = 0 and every B candidate is zero).
    """
    if kind == "switchlora":
        sigma_a, sigma_b = switchlora_sigmas(m, n, r)
        return math.sqrt(3.0) * sigma_a, math.sqrt(3.0) * sigma_b
    if kind == "lora":
        return 1.0 / math.sqrt(n), 0.0
    raise ValueError(f"unknown init kind {kind!r}")


def initial_pool_indices(c: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool index held by each position at step 0: (use_A [r], use_B [r]).

    A position p holds pool entry C - r + p; B position p holds C - r + ((p - r//2) mod r),
    so that the sequential walk (next entry 0, then 1, ...) starting at the A pointer 0 and
    at the B pointer r//2 keeps the in-use set a contiguous window of the ring of C entries.
    """
    positions = np.arange(r, dtype=np.int64)
    use_a = c - r + positions
    use_b = c - r + (positions - r // 2) % r
    return use_a, use_b


def candidate_pools(
    m: int, n: int, r: int, kind: str, generator: torch.Generator, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full candidate pools (pool_A [C, n], pool_B [C, m]); rows are candidate vectors."""
    bound_a, bound_b = init_bounds(m, n, r, kind)
    c = pool_size(m, n)
    pool_a = uniform(c, n, bound_a, generator, device)
    pool_b = uniform(c, m, bound_b, generator, device)
    return pool_a, pool_b


def factors_from_pools(
    pool_a: torch.Tensor, pool_b: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A0 [r, n], B0 [m, r]): copies of the pool entries given by initial_pool_indices."""
    use_a, use_b = initial_pool_indices(pool_a.shape[0], r)
    a0 = pool_a[torch.from_numpy(use_a).to(pool_a.device)].clone()
    b0 = pool_b[torch.from_numpy(use_b).to(pool_b.device)].t().contiguous()
    return a0, b0


def effective_init_weight(
    w_init: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor, scale: float
) -> torch.Tensor:
    """W0 = W_init - s * B0 @ A0, so that W0 + s * B0 @ A0 equals W_init at step 0."""
    product = (b0.double() @ a0.double()) * scale
    return (w_init.double() - product).to(w_init.dtype)


def init_adapter_layer_full(
    m: int,
    n: int,
    options: SwitchLoRAOptions,
    layer_index: int,
    w_init: torch.Tensor,
    generator_device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Full init tensors of one adapter layer: W0, A0, B0 and, with pools, pool_A and pool_B.

    Draw order from the generator keyed (seed, INIT_STREAM, layer_index):
    - switching with the "pool" source on a switchable layer (C > r): pool_A [C, n], then
      pool_B [C, m]; A0 and B0 are copies of pool entries (factors_from_pools);
    - otherwise A0 as [r, n], then B0 as [r, m] rows (transposed to [m, r]).
    `w_init` ([m, n], e.g. N(0, 0.02) from the caller) gives W0 = W_init - s B0 A0 for the
    "switchlora" init and W0 = W_init for "lora" (where B0 = 0). Tensors are float32 on
    `generator_device` (CPU draws are identical on every machine).
    """
    if tuple(w_init.shape) != (m, n):
        raise ValueError(f"w_init has shape {tuple(w_init.shape)}, expected {(m, n)}")
    r = options.rank
    generator = torch_generator(generator_device, options.seed, INIT_STREAM, layer_index)
    out: dict[str, torch.Tensor] = {}
    if options.switching and options.candidate_source == "pool" and layer_switchable(m, n, r):
        pool_a, pool_b = candidate_pools(m, n, r, options.init, generator, generator_device)
        a0, b0 = factors_from_pools(pool_a, pool_b, r)
        out["pool_A"], out["pool_B"] = pool_a, pool_b
    else:
        bound_a, bound_b = init_bounds(m, n, r, options.init)
        a0 = uniform(r, n, bound_a, generator, generator_device)
        b0 = uniform(r, m, bound_b, generator, generator_device).t().contiguous()
    w_init = w_init.to(device=generator_device, dtype=torch.float32)
    if options.init == "lora":
        out["W0"] = w_init.clone()
    else:
        out["W0"] = effective_init_weight(w_init, a0, b0, options.scale)
    out["A0"], out["B0"] = a0, b0
    return out


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
