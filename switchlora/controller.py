"""SwitchController: decides and applies the switches of every adapter layer, once per step.

Call order in a training step: backward -> grad clip -> controller.step(t) ->
optimizer.step() -> lr step -> zero_grad. All decisions come from numpy generators seeded
from options.seed only, consumed in a fixed order, so every rank decides identically:

- decision generator (seed, DECISION_STREAM): per step, per layer in dict order, exactly
  one `random()` for the stochastic rounding of r / interval(t) (also for layers that cannot
  switch). k = min(that, the spec's pointer cap, K_max).
- choice generator (seed, CHOICE_STREAM), random pool choice only: per switching layer,
  one `choice(free, k, replace=False)` for A, then one for B.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from switchlora import schedule
from switchlora.init import candidate_pools, layer_switchable
from switchlora.kernel import switch_kernel
from switchlora.layer import AdapterLinear
from switchlora.layer_state import LayerSwitchState
from switchlora.layout import layer_layout
from switchlora.optimizer import SwitchAdamW
from switchlora.options import SwitchLoRAOptions
from switchlora.seeding import (
    CHOICE_STREAM,
    DECISION_STREAM,
    INIT_STREAM,
    numpy_generator,
    torch_generator,
)
from switchlora.sharding import local
from switchlora.switch_inputs import SwitchInputs, gather_pending, prepare_switch


class SwitchController:
    """Owns the switch state of all adapter layers and applies one switch step at a time."""

    def __init__(
        self,
        layers: dict[str, AdapterLinear],
        options: SwitchLoRAOptions,
        total_steps: int,
        optimizer: SwitchAdamW,
        compile: bool = True,
        generator_device: torch.device | str = "cpu",
    ) -> None:
        """`layers` as returned by convert_to_adapters (after sharding and init), in that order.

        The optimizer must hold each lora_A in a "lora_A" group and each lora_B in a "lora_B"
        group. `compile` wraps the switch kernel with torch.compile; `generator_device` is
        where init pools and seeded candidates are drawn (CPU draws match on every machine).
        With options.switching False the controller does nothing.
        """
        options.validate()
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.options = options
        self.total_steps = total_steps
        self.optimizer = optimizer
        self.generator_device = torch.device(generator_device)
        self.enabled = options.switching
        self.slots = schedule.max_slots(options.rank, options.interval0)
        self._switch_fn = switch_kernel(compile)
        self.decision_rng = numpy_generator(options.seed, DECISION_STREAM)
        self.choice_rng = numpy_generator(options.seed, CHOICE_STREAM)
        self.last_step = -1
        self.layers: list[LayerSwitchState] = []
        for index, (name, layer) in enumerate(layers.items()):
            if layer.rank != options.rank:
                raise ValueError(f"{name}: rank {layer.rank} differs from options.rank")
            for param, kind in ((layer.lora_A, "lora_A"), (layer.lora_B, "lora_B")):
                if optimizer.kind_of(param) != kind:
                    raise ValueError(f"{name}: its {kind} is not in a {kind!r} optimizer group")
            lay = layer_layout(layer)
            device = local(layer.lora_A).device
            r = options.rank
            self.layers.append(
                LayerSwitchState(
                    name=name,
                    index=index,
                    layer=layer,
                    layout=lay,
                    switchable=layer_switchable(lay.m, lay.n, r),
                    frz_a=torch.zeros(r, dtype=torch.int32, device=device),
                    frz_b=torch.zeros(r, dtype=torch.int32, device=device),
                    p_a=0,
                    p_b=r // 2,
                    frz_host_a=np.zeros(r, np.int32),
                    frz_host_b=np.zeros(r, np.int32),
                )
            )
        self._initialized = options.candidate_source != "pool" or not self.enabled

    # ------------------------------------------------------------------ setup
    def init_state(self, pools: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        """Attach the candidate pools (pool source); a no-op for the seeded source.

        `pools` maps layer name -> {"pool_A": [C, n], "pool_B": [C, m]} FULL tensors, e.g. the
        dicts returned by init_adapter_layer_full; layers not given are regenerated from
        (options.seed, layer index), which reproduces exactly the same pools.
        """
        if self.options.candidate_source != "pool" or not self.enabled:
            self._initialized = True
            return
        pools = pools or {}
        for st in self.layers:
            if not st.switchable:
                continue
            given = pools.get(st.name)
            if given is not None:
                pool_a, pool_b = given["pool_A"], given["pool_B"]
            else:
                lay = st.layout
                generator = torch_generator(
                    self.generator_device, self.options.seed, INIT_STREAM, st.index
                )
                pool_a, pool_b = candidate_pools(
                    lay.m, lay.n, lay.r, self.options.init, generator, self.generator_device
                )
            st.attach_pools(pool_a, pool_b, self.options.pool_offload_cpu)
        self._initialized = True

    def _ensure_initialized(self) -> None:
        if not self._initialized:
            self.init_state()

    # ------------------------------------------------------------------ step
    def interval(self, t: int) -> float:
        """The switch interval at step t."""
        o = self.options
        return schedule.interval(
            t, o.interval0, o.descent_ratio, self.total_steps, o.fixed_interval
        )

    @torch.no_grad()
    def step(self, t: int, force_k: int | None = None) -> dict[str, float]:
        """Switch, freeze, reset and mask gradients for step t (after clipping, before optimizer.step).

        `force_k` overrides the drawn count (still capped; the generator is consumed as usual):
        for tests and tools. Returns host-side statistics (no device sync): vectors_switched
        (A rows + B columns over all layers), interval, frozen_vectors (masked this step).
        """
        if not self.enabled:
            return {"vectors_switched": 0.0, "interval": float("inf"), "frozen_vectors": 0.0}
        self._ensure_initialized()
        o = self.options
        interval_t = self.interval(t)
        schedule.check_interval(interval_t, o.freeze_steps)
        expected = schedule.expected_switches(o.rank, interval_t)
        switched = 0
        frozen = 0
        pending: list[tuple[LayerSwitchState, int, SwitchInputs]] = []
        for st in self.layers:
            k = schedule.stochastic_round(expected, self.decision_rng)
            if force_k is not None:
                k = force_k
            if not st.switchable:
                k = 0
            f_a, f_b = st.frozen_counts()
            k = max(0, min(k, schedule.switch_cap(st.p_a, st.p_b, f_a, f_b, o.rank), self.slots))
            if k > 0 or f_a + f_b > 0:
                # k = 0 with frozen vectors: the same kernel, all slots inactive, still masks
                # gradients and counts the freezes down (one graph per layer signature).
                pending.append((st, k, self._prepare_layer(st, k, t)))
            frozen += int((st.frz_host_a > 0).sum() + (st.frz_host_b > 0).sum())
            np.subtract(st.frz_host_a, 1, out=st.frz_host_a)
            np.maximum(st.frz_host_a, 0, out=st.frz_host_a)
            np.subtract(st.frz_host_b, 1, out=st.frz_host_b)
            np.maximum(st.frz_host_b, 0, out=st.frz_host_b)
            switched += 2 * k
        # One all-gather of A rows for all column-sharded layers, then the kernels.
        gather_pending([inputs for _, _, inputs in pending])
        for st, k, inputs in pending:
            self._run_kernel(st, k, inputs)
        self.last_step = t
        return {
            "vectors_switched": float(switched),
            "interval": float(interval_t),
            "frozen_vectors": float(frozen),
        }

    def _grads(self, st: LayerSwitchState) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        grad_a, grad_b = st.layer.lora_A.grad, st.layer.lora_B.grad
        return (
            None if grad_a is None else local(grad_a),
            None if grad_b is None else local(grad_b),
        )

    def _prepare_layer(self, st: LayerSwitchState, k: int, t: int) -> SwitchInputs:
        """Host decisions and inputs of one layer's switch (row gathers left pending)."""
        o, slots = self.options, self.slots
        positions_a = (st.p_a + np.arange(k)) % o.rank
        positions_b = (st.p_b + np.arange(k)) % o.rank
        st.frz_host_b[positions_a] = o.freeze_steps
        st.frz_host_a[positions_b] = o.freeze_steps
        return prepare_switch(
            st, k, t, slots, o, self.choice_rng, self.generator_device, gather=False
        )

    def _run_kernel(self, st: LayerSwitchState, k: int, inputs: SwitchInputs) -> None:
        """Apply one layer's switch with its complete inputs."""
        o = self.options
        layer = st.layer
        state_a = self.optimizer.state_for(layer.lora_A, "lora_A")
        state_b = self.optimizer.state_for(layer.lora_B, "lora_B")
        grad_a, grad_b = self._grads(st)
        self._switch_fn(
            local(layer.base.weight),
            inputs.a_work,
            local(layer.lora_B),
            inputs.a_rows,
            inputs.c_full,
            inputs.c_work,
            inputs.d_local,
            inputs.idx_a,
            inputs.idx_b,
            inputs.active,
            st.frz_a,
            st.frz_b,
            local(state_a["exp_avg"]),
            local(state_a["exp_avg_sq"]),
            state_a["step"],
            local(state_b["exp_avg"]),
            local(state_b["exp_avg_sq"]),
            state_b["step"],
            grad_a,
            grad_b,
            layer.scale,
            o.freeze_steps,
            *st.layout.a_rows,
        )
        if inputs.a_full is not None and k > 0:
            local(layer.lora_A).copy_(inputs.a_full.narrow(0, *st.layout.a_rows))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Pointers, freeze counters, generator states, pool choice state and pools.

        Pools are DTensors when the layers are sharded (so torch.distributed.checkpoint can
        reshard them) and plain tensors single-process; they alias the live pools.
        """
        self._ensure_initialized()
        return {
            "last_step": self.last_step,
            "decision_rng": self.decision_rng.bit_generator.state,
            "choice_rng": self.choice_rng.bit_generator.state,
            "layers": {st.name: st.state_dict() for st in self.layers},
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a state_dict() so that the following steps decide exactly as before."""
        self._ensure_initialized()
        names = {st.name for st in self.layers}
        if set(sd["layers"]) != names:
            missing = sorted(names - set(sd["layers"]))
            extra = sorted(set(sd["layers"]) - names)
            raise ValueError(f"layer mismatch: missing {missing}, unexpected {extra}")
        self.last_step = int(sd["last_step"])
        self.decision_rng.bit_generator.state = sd["decision_rng"]
        self.choice_rng.bit_generator.state = sd["choice_rng"]
        for st in self.layers:
            st.load_state_dict(sd["layers"][st.name])

    def pool_bytes(self) -> int:
        """Bytes of candidate pools held by this process (0 for the seeded source)."""
        self._ensure_initialized()
        total = 0
        for st in self.layers:
            for factor in (st.pool_a, st.pool_b):
                if factor is not None:
                    total += factor.rows.numel() * factor.rows.element_size()
        return total
