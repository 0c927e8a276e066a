"""SwitchController: decides and applies the switches of every adapter layer, once per step.

Call order in a training step: backward -> grad clip -> controller.step(t) ->
optimizer.step() -> lr step -> zero_grad. All decisions come from numpy generators seeded
from options.seed only, consumed in a fixed order, so every rank decides identically:

- decision generator (seed, DECISION_STREAM): per step, per layer in dict order, exactly
  one `random()` for the stochastic rounding of r / interval(t) (also for layers that cannot
  switch). k = min(that, the pointer cap of SwitchGroup.decide, K_max).
- choice generator (seed, CHOICE_STREAM), random pool choice only: per switching layer in
  dict order, one `choice(free, k, replace=False)` for A, then one for B.

Layers of equal local shape switch together (:mod:`switchlora.switch_group`); the pool and
optimizer indices of a step reach the device in one copy, each group's positions and mask in
one more (none on CPU, where they share memory with the host arrays); column-sharded A rows
are all-gathered once per step for every layer, while the B side is read and written. The
counterparts' optimizer state is reset in the optimizer's stacked banks, and the frozen
vectors become each bank's ``freeze_next_update``, whose gradients the next optimizer step
zeroes in its stacked update (the parameters' own .grad is left as backward made it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from switchlora import schedule
from switchlora.candidates import layer_switchable, random_choice
from switchlora.layer import AdapterLinear
from switchlora.optimizer import SwitchAdamW
from switchlora.options import SwitchLoRAOptions
from switchlora.profiling import switch_range
from switchlora.seeding import CHOICE_STREAM, DECISION_STREAM, numpy_generator
from switchlora.sharding import layer_layout, start_gather_rows
from switchlora.switch_group import (
    Decision,
    HostCounters,
    LayerSwitchState,
    Selected,
    SwitchGroup,
    group_key,
)
from switchlora.transfer import IndexPack
from switchlora.vector_bank import BankIndexBuilder, VectorBank


class SwitchController:
    """Owns the switch state of all adapter layers and applies one switch step at a time."""

    def __init__(
        self,
        layers: dict[str, AdapterLinear],
        options: SwitchLoRAOptions,
        total_steps: int,
        optimizer: SwitchAdamW,
        generator_device: torch.device | str = "cpu",
    ) -> None:
        """`layers` as returned by convert_to_adapters (after sharding and init), in that order.

        The optimizer must hold each lora_A in a "lora_A" group and each lora_B in a "lora_B"
        group. `generator_device` is where init pools and seeded candidates are drawn (CPU
        draws match on every machine). With options.switching False the controller does
        nothing.
        """
        options.validate()
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.options = options
        self.total_steps = total_steps
        self.optimizer = optimizer
        self.generator_device = torch.device(generator_device)
        self.enabled = options.switching
        self.max_slots = schedule.max_slots(options.rank, options.interval0)
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
            self.layers.append(
                LayerSwitchState(
                    name=name,
                    index=index,
                    layer=layer,
                    layout=lay,
                    switchable=layer_switchable(lay.m, lay.n, options.rank),
                    counters=HostCounters.zeros(1, options.rank),
                    member=0,
                )
            )
        by_key: dict[tuple, list[LayerSwitchState]] = {}
        for st in self.layers:
            if st.switchable:
                by_key.setdefault(group_key(st), []).append(st)
        self.groups = [SwitchGroup(states, options) for states in by_key.values()]
        devices = {g.device for g in self.groups}
        if len(devices) > 1:
            raise ValueError(f"adapter layers live on several devices: {sorted(map(str, devices))}")
        self.device = devices.pop() if devices else torch.device("cpu")
        self._bank_version = -1
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
        for group in self.groups:
            group.init_pools(pools or {}, self.generator_device)
        self._initialized = True

    def _ensure_initialized(self) -> None:
        if not self._initialized:
            self.init_state()

    def _refresh_banks(self) -> None:
        """(Re)resolve each group's optimizer banks (they are rebuilt when state is loaded)."""
        if self._bank_version == self.optimizer.bank_version:
            return
        for group in self.groups:
            group.attach_banks(self.optimizer)
        self._bank_version = self.optimizer.bank_version

    # ------------------------------------------------------------------ step
    def interval(self, t: int) -> float:
        """The switch interval at step t."""
        o = self.options
        return schedule.interval(
            t, o.interval0, o.descent_ratio, self.total_steps, o.fixed_interval
        )

    @torch.no_grad()
    def step(self, t: int, force_k: int | None = None) -> dict[str, float]:
        """Switch, freeze and reset for step t (after clipping, before optimizer.step).

        `force_k` overrides the drawn count (still capped; the generator is consumed as usual):
        for tests and tools. Returns host-side statistics (no device sync): vectors_switched
        (A rows + B columns over all layers), interval, frozen_vectors (masked this step).
        """
        if not self.enabled:
            return {"vectors_switched": 0.0, "interval": float("inf"), "frozen_vectors": 0.0}
        self._ensure_initialized()
        self._refresh_banks()
        interval_t = self.interval(t)
        with switch_range("decide"):
            decisions, pack, bank_indices, frozen = self._decide(t, interval_t, force_k)
        self._apply(t, decisions, pack, bank_indices)
        for group in self.groups:
            group.end_step()
        self.last_step = t
        return {
            "vectors_switched": float(2 * sum(int(d.k.sum()) for d in decisions)),
            "interval": float(interval_t),
            "frozen_vectors": float(frozen),
        }

    def _decide(
        self, t: int, interval_t: float, force_k: int | None
    ) -> tuple[list[Decision], IndexPack, dict, int]:
        """Host decisions of every group, queued and sent to the device in one copy."""
        o = self.options
        expected = schedule.expected_switches(o.rank, interval_t)
        # one draw per layer, in dict order
        k_all = schedule.stochastic_round(expected, len(self.layers), self.decision_rng)
        if force_k is not None:
            k_all[:] = force_k
        decisions = [g.decide(k_all[g.layer_ids], self.max_slots) for g in self.groups]
        if o.candidate_source == "pool":
            if o.pool_choice == "sequential":
                for group, d in zip(self.groups, decisions):
                    group.choose_sequential(d)
            else:
                self._choose_random(decisions)
        pack = IndexPack(self.device)
        for group, d in zip(self.groups, decisions):
            if d.width > 0:
                group.queue_indices(d, pack)
        bank_indices, frozen = self._queue_bank_indices(decisions, pack)
        pack.send()
        return decisions, pack, bank_indices, frozen

    def _choose_random(self, decisions: list[Decision]) -> None:
        """Random pool choice, layer by layer in dict order (the choice generator's order)."""
        for d in decisions:
            shape = d.idx_a.shape
            d.old_a, d.old_b = np.full(shape, -1, np.int64), np.full(shape, -1, np.int64)
            d.new_a, d.new_b = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        members = [
            (st.index, group, d, st.member)
            for group, d in zip(self.groups, decisions)
            for st in group.states
        ]
        for _, group, d, i in sorted(members, key=lambda x: x[0]):
            k = int(d.k[i])
            if k == 0:
                continue
            st = group.states[i]
            for factor, idx, old, new in (
                (st.pool_a, d.idx_a, d.old_a, d.new_a),
                (st.pool_b, d.idx_b, d.old_b, d.new_b),
            ):
                assert factor is not None and old is not None and new is not None
                old[i, :k], new[i, :k] = random_choice(factor, idx[i, :k], self.choice_rng)

    def _queue_bank_indices(
        self, decisions: list[Decision], pack: IndexPack
    ) -> tuple[dict[VectorBank, tuple[BankIndexBuilder, BankIndexBuilder]], int]:
        """Counterparts to reset and vectors to freeze, per optimizer bank; frozen count."""
        per_bank: dict[VectorBank, tuple[BankIndexBuilder, BankIndexBuilder]] = {}
        frozen = 0
        for group, d in zip(self.groups, decisions):
            frozen += group.queue_bank_indices(d, per_bank)
        for reset, freeze in per_bank.values():
            reset.queue(pack)
            freeze.queue(pack)
        return per_bank, frozen

    def _apply(
        self,
        t: int,
        decisions: list[Decision],
        pack: IndexPack,
        bank_indices: dict[VectorBank, tuple[BankIndexBuilder, BankIndexBuilder]],
    ) -> None:
        """Device work: A-side reads, the row all-gather (in flight while the B side is read,
        the vectors are written and the optimizer state is reset), then the W corrections."""
        selected: list[tuple[SwitchGroup, Decision, Selected]] = []
        with switch_range("read"):
            for group, d in zip(self.groups, decisions):
                if d.width > 0:
                    sel = group.read_a(d, pack, t, self.max_slots, self.generator_device)
                    selected.append((group, d, sel))
        by_mesh: dict[int, list[tuple[SwitchGroup, Selected]]] = {}
        for group, _, sel in selected:
            if sel.to_gather is not None:
                by_mesh.setdefault(id(group.a_params[0].device_mesh), []).append((group, sel))
        pending = [
            (
                items,
                start_gather_rows(
                    [x.reshape(-1, x.shape[-1]) for _, sel in items for x in sel.to_gather],
                    items[0][0].a_params[0],
                ),
            )
            for items in by_mesh.values()
        ]
        with switch_range("read"):
            for group, d, sel in selected:
                group.read_b(d, sel, pack, t, self.max_slots, self.generator_device)
        with switch_range("write"):
            for group, d, sel in selected:
                group.write_vectors(d, sel)
        with switch_range("reset"):
            for bank, (reset, frozen_index) in bank_indices.items():
                bank.reset(reset.resolve(pack))
                bank.freeze_next_update = frozen_index.resolve(pack) if frozen_index.size else None
        for items, gather in pending:
            with switch_range("gather"):
                full = gather.wait()
            for group, sel in items:
                count = len(sel.to_gather)
                group.take_gathered(sel, full[:count])
                full = full[count:]
        with switch_range("write"):
            for group, d, sel in selected:
                group.write_w(d, sel)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Pointers, freeze counters, generator states, pool choice state and pools.

        Pools are DTensors when the layers are sharded (so torch.distributed.checkpoint can
        reshard them) and plain tensors single-process; they alias the live pools (deferred
        write-backs are applied first).
        """
        self._ensure_initialized()
        self.flush_pools()
        return {
            "last_step": self.last_step,
            "decision_rng": self.decision_rng.bit_generator.state,
            "choice_rng": self.choice_rng.bit_generator.state,
            "layers": {st.name: st.state_dict() for st in self.layers},
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a state_dict() so that the following steps decide exactly as before."""
        self._ensure_initialized()
        self.flush_pools()
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

    def flush_pools(self) -> None:
        """Apply the deferred write-backs of CPU-offloaded pools now.

        They are applied automatically before the next switch reads a pool and before pools
        are saved or loaded; call this only to inspect the pools in between.
        """
        for group in self.groups:
            group.pool_writes.flush()

    def pool_bytes(self) -> int:
        """Bytes of candidate pools held by this process (0 for the seeded source)."""
        self._ensure_initialized()
        total = 0
        for group in self.groups:
            for pool in (group.pool_a, group.pool_b):
                if pool is not None:
                    total += pool.numel() * pool.element_size()
        return total
