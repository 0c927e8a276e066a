"""The switch of all adapter layers of one local shape, as a few batched tensor operations.

Layers whose local shards have the same shapes and layout (in a LLaMA: q/k/v/o of every
block, gate/up of every block, down of every block) form a group. Per step the host decides
for the whole group at once (numpy over [G] and [G, r] arrays), and the device work is
stacked over the group: the old vectors are read with one index per layer into a stacked
buffer, pools are read and written with one flat index each, the corrections of W are built
for all layers at once, and then each switching layer gets exactly three in-place writes
(W += s L R, new A rows, new B columns). Slots beyond a layer's k are inactive: they add
nothing to W and write the old vectors back; a layer with k = 0 is not touched at all (late
in a run most layers switch on few steps, and their W is never read).

Step t of a group (K = the largest k in the group):

1. :meth:`SwitchGroup.decide`: k per layer (capped), positions idx_a / idx_b [G, K],
   counterpart freezes, pointer advance.
2. pool choice (:meth:`SwitchGroup.choose_sequential`; random by the controller, in layer
   order); :meth:`SwitchGroup.queue_indices` and :meth:`SwitchGroup.queue_bank_indices`
   queue the device indices of the step.
3. :meth:`SwitchGroup.read_a`: old rows of A at idx_a and idx_b, pool write-back of the
   outgoing rows, then the incoming rows.
4. (column-sharded A) the controller starts one all-gather of full rows for every group;
   while it runs: :meth:`SwitchGroup.read_b` (the same for B columns),
5. :meth:`SwitchGroup.write_vectors`: new A rows, new B columns (the controller then resets
   the counterparts' optimizer state);
   then :meth:`SwitchGroup.write_w`: W += s [b_i, b_j - d_j] [a_i - c_i; a_j].
6. :meth:`SwitchGroup.end_step`: the freezes count down.

The per-layer view of the group's host state (:class:`LayerSwitchState`) and its checkpoint
part live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from switchlora.candidates import (
    FACTOR_A,
    FACTOR_B,
    PoolFactor,
    pool_size,
    seeded_candidates,
    sequential_choice,
)
from switchlora.init import candidate_pools, init_bounds, initial_pool_indices
from switchlora.layer import AdapterLinear
from switchlora.optimizer import SwitchAdamW
from switchlora.options import SwitchLoRAOptions
from switchlora.profiling import switch_range
from switchlora.seeding import INIT_STREAM, torch_generator
from switchlora.sharding import LayerLayout, as_sharded_like, is_dtensor, local
from switchlora.transfer import IndexPack, PoolWrites, SlotBuffers, comes_back, pinned_empty
from switchlora.vector_bank import BankIndexBuilder, VectorBank


@dataclass
class HostCounters:
    """Pointers and freeze counters of G layers (host side: decisions never sync a device)."""

    p_a: np.ndarray
    """[G] int64 round-robin pointers of A rows (next position to switch)."""

    p_b: np.ndarray
    """[G] int64 pointers of B columns; each stays r // 2 ahead of p_a."""

    frz_a: np.ndarray
    """[G, r] int32 remaining frozen steps of each A row."""

    frz_b: np.ndarray
    """[G, r] int32 remaining frozen steps of each B column."""

    @classmethod
    def zeros(cls, layers: int, rank: int) -> HostCounters:
        """Counters at step 0: p_a = 0, p_b = r // 2, nothing frozen."""
        return cls(
            p_a=np.zeros(layers, np.int64),
            p_b=np.full(layers, rank // 2, np.int64),
            frz_a=np.zeros((layers, rank), np.int32),
            frz_b=np.zeros((layers, rank), np.int32),
        )


@dataclass(eq=False)
class LayerSwitchState:
    """Pointers, freeze counters and candidate pools of one adapter layer (views)."""

    name: str
    """Module path of the layer."""

    index: int
    """Layer index (position in the controller's layer dict): keys every seeded draw."""

    layer: AdapterLinear
    """The adapter layer itself (parameters are read from it at every step)."""

    layout: LayerLayout
    """This rank's local ranges of W, A and B."""

    switchable: bool
    """False when C = min(m, n) <= r: the layer never switches."""

    counters: HostCounters
    """The stacked counters of this layer's group."""

    member: int
    """This layer's position in its group: its row of `counters` and of the stacked pools."""

    pool_a: PoolFactor | None = field(default=None)
    """A candidate pool (pool source only): a view of the group's stacked pool."""

    pool_b: PoolFactor | None = field(default=None)
    """B candidate pool (pool source only)."""

    @property
    def p_a(self) -> int:
        """Round-robin pointer of A rows."""
        return int(self.counters.p_a[self.member])

    @p_a.setter
    def p_a(self, value: int) -> None:
        self.counters.p_a[self.member] = value

    @property
    def p_b(self) -> int:
        """Round-robin pointer of B columns."""
        return int(self.counters.p_b[self.member])

    @p_b.setter
    def p_b(self, value: int) -> None:
        self.counters.p_b[self.member] = value

    @property
    def frz_host_a(self) -> np.ndarray:
        """[r] int32 remaining frozen steps of each A row (a view)."""
        return self.counters.frz_a[self.member]

    @property
    def frz_host_b(self) -> np.ndarray:
        """[r] int32 remaining frozen steps of each B column (a view)."""
        return self.counters.frz_b[self.member]

    def pool_dtensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pools as DTensors on the layer's mesh (plain tensors single-process)."""
        assert self.pool_a is not None and self.pool_b is not None
        lay = self.layout
        c = self.pool_a.size
        a_dim = 1 if lay.a_mode == "cols" else None
        pool_a = as_sharded_like(self.pool_a.entries, self.layer.lora_A, a_dim, (c, lay.n))
        pool_b = as_sharded_like(self.pool_b.entries, self.layer.base.weight, 1, (c, lay.m))
        return pool_a, pool_b

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical decisions."""
        out: dict[str, Any] = {
            "p_a": self.p_a,
            "p_b": self.p_b,
            "frz_a": torch.from_numpy(self.frz_host_a.copy()),
            "frz_b": torch.from_numpy(self.frz_host_b.copy()),
        }
        if self.pool_a is not None and self.pool_b is not None:
            pool_a, pool_b = self.pool_dtensors()
            out.update(
                {
                    "use_a": torch.from_numpy(self.pool_a.use.copy()),
                    "use_b": torch.from_numpy(self.pool_b.use.copy()),
                    "next_a": self.pool_a.next,
                    "next_b": self.pool_b.next,
                    "pool_A": pool_a,
                    "pool_B": pool_b,
                }
            )
        return out

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from state_dict(); pools are copied into the existing local shards."""
        self.p_a, self.p_b = int(sd["p_a"]), int(sd["p_b"])
        self.frz_host_a[:] = _host_int32(sd["frz_a"])
        self.frz_host_b[:] = _host_int32(sd["frz_b"])
        if self.pool_a is None or self.pool_b is None:
            if "pool_A" in sd:
                raise ValueError(f"{self.name}: checkpoint has pools but this controller has none")
            return
        if "pool_A" not in sd:
            raise ValueError(f"{self.name}: checkpoint has no pools but the pool source is used")
        self.pool_a.use[:] = np.asarray(sd["use_a"], dtype=np.int64)
        self.pool_b.use[:] = np.asarray(sd["use_b"], dtype=np.int64)
        self.pool_a.next, self.pool_b.next = int(sd["next_a"]), int(sd["next_b"])
        for factor, value in ((self.pool_a, sd["pool_A"]), (self.pool_b, sd["pool_B"])):
            source = local(value)
            if source.data_ptr() != factor.entries.data_ptr():
                factor.entries.copy_(source.to(factor.entries.device))


def _host_int32(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int32).copy()


@dataclass
class Decision:
    """Host decisions of one group for one step."""

    k: np.ndarray
    """[G] vectors switched per factor in each layer."""

    idx_a: np.ndarray
    """[G, K] A rows switched (window from p_A); slots >= k are inactive."""

    idx_b: np.ndarray
    """[G, K] B columns switched (window from p_B)."""

    active: np.ndarray
    """[G, K] bool: slot < k."""

    switching: tuple[np.ndarray, np.ndarray]
    """(layer, slot) of every active slot (np.nonzero(active), layer-major)."""

    members: list[int]
    """Group members that switch this step: only they touch their tensors."""

    old_a: np.ndarray | None = None
    """[G, K] pool entries released by A (pool source; inactive slots: -1)."""

    new_a: np.ndarray | None = None
    """[G, K] pool entries coming into A (inactive slots: 0, read and never used)."""

    old_b: np.ndarray | None = None
    """[G, K] pool entries released by B."""

    new_b: np.ndarray | None = None
    """[G, K] pool entries coming into B."""

    handles: dict[str, int] | None = None
    """IndexPack handles of the pool index tensors."""

    def indices(self, pack: IndexPack) -> dict[str, torch.Tensor]:
        """The pool index tensors by name (after pack.send())."""
        assert self.handles is not None
        return {name: pack.get(handle) for name, handle in self.handles.items()}

    write_now: bool = False
    """An entry released this step is read back this step: the pool write-back of an
    offloaded pool cannot wait (see switchlora.transfer.PoolWrites)."""

    @property
    def width(self) -> int:
        """K: slots per factor this step (0: nothing to switch in this group)."""
        return self.idx_a.shape[1]


@dataclass
class Selected:
    """Device tensors of one group between the reads and the writes of a step."""

    a_sel: torch.Tensor
    """[G, 2K, n_work] old rows of the A work tensors at idx_a then idx_b."""

    c_work: torch.Tensor
    """[G, K, n_work] incoming A rows in the A work layout."""

    a_work: list[torch.Tensor | None]
    """Per layer: local A, or the gathered full A (row-sharded fallback; None for layers
    that do not switch this step)."""

    b_sel: torch.Tensor | None = None
    """[G, m_loc, 2K] old columns of B at idx_a then idx_b (read by :meth:`read_b`)."""

    d: torch.Tensor | None = None
    """[G, K, m_loc] incoming B columns (local rows)."""

    b_local: list[torch.Tensor] | None = None
    """Per layer: local B."""

    a_rows: torch.Tensor | None = None
    """[G, 2K, n] full old rows (None until gathered for column-sharded A)."""

    c_full: torch.Tensor | None = None
    """[G, K, n] full incoming rows (None until gathered)."""

    to_gather: list[torch.Tensor] | None = None
    """Column-sharded A: the old rows [G, 2K, n_loc] (and, from a pool, the candidates
    [G, K, n_loc]) whose full width the controller all-gathers."""


class SwitchGroup:
    """Switchable adapter layers with identical local shapes, layout and scale."""

    def __init__(self, states: list[LayerSwitchState], options: SwitchLoRAOptions) -> None:
        """`states` share one signature (see :func:`group_key`); their counters become views."""
        self.states = states
        self.options = options
        self.layout = states[0].layout
        self.scale = states[0].layer.scale
        self.rank = options.rank
        self.counters = HostCounters.zeros(len(states), options.rank)
        for member, st in enumerate(states):
            st.counters, st.member = self.counters, member
        self.layer_ids = np.array([st.index for st in states], dtype=np.int64)
        self.a_params = [st.layer.lora_A for st in states]
        self.b_params = [st.layer.lora_B for st in states]
        self.w_params = [st.layer.base.weight for st in states]
        first = local(self.a_params[0])
        self.device, self.dtype = first.device, first.dtype
        self.pool_a: torch.Tensor | None = None
        self.pool_b: torch.Tensor | None = None
        self._buffers: dict[int, SlotBuffers] = {}
        self.pool_writes = PoolWrites()
        # optimizer banks of the lora_A / lora_B params and each member's layer in them
        self.bank_a: VectorBank | None = None
        self.bank_b: VectorBank | None = None
        self.bank_layers_a = np.zeros(0, np.int64)
        self.bank_layers_b = np.zeros(0, np.int64)

    def attach_banks(self, optimizer: SwitchAdamW) -> None:
        """Resolve the optimizer banks of the group (again after the optimizer rebuilt them)."""
        self.bank_a, self.bank_layers_a = self._one_bank(optimizer, self.a_params, "lora_A")
        self.bank_b, self.bank_layers_b = self._one_bank(optimizer, self.b_params, "lora_B")

    def _one_bank(
        self, optimizer: SwitchAdamW, params: list[torch.Tensor], factor: str
    ) -> tuple[VectorBank, np.ndarray]:
        found = [optimizer.bank_of(p) for p in params]
        if len({id(bank) for bank, _ in found}) != 1:
            raise ValueError(
                f"{self.states[0].name}: layers of one shape are in different "
                f"optimizer param groups; give every {factor} one group"
            )
        return found[0][0], np.array([i for _, i in found], np.int64)

    def buffers(self, width: int) -> SlotBuffers:
        """The persistent buffers for `width` slots (made on first use)."""
        if width not in self._buffers:
            lay = self.layout
            n_work = lay.n if lay.a_mode == "rows" else lay.a_cols[1]
            self._buffers[width] = SlotBuffers(
                len(self.states), width, n_work, lay.m_rows[1], self.dtype, self.device
            )
        return self._buffers[width]

    # ------------------------------------------------------------------ pools
    def init_pools(
        self, pools: dict[str, dict[str, torch.Tensor]], generator_device: torch.device
    ) -> None:
        """Allocate the stacked pools and fill them from `pools` (layer name -> FULL pool_A,
        pool_B); layers not given are regenerated from the init stream (the same pools)."""
        o, lay = self.options, self.layout
        self.allocate_pools(pool_size(lay.m, lay.n), o.pool_offload_cpu)
        for member, st in enumerate(self.states):  # one layer's full pools in memory at a time
            given = pools.get(st.name)
            if given is not None:
                self.attach_pools(member, given["pool_A"], given["pool_B"])
                continue
            m, n, r = st.layout.m, st.layout.n, st.layout.r
            generator = torch_generator(generator_device, o.seed, INIT_STREAM, st.index)
            self.attach_pools(
                member, *candidate_pools(m, n, r, o.init, generator, generator_device)
            )

    def allocate_pools(self, size: int, offload: bool) -> None:
        """Stacked pools of C = `size` entries per layer (filled by :meth:`attach_pools`)."""
        lay, g = self.layout, len(self.states)
        self.pool_a = _pool_storage((g, size, lay.a_cols[1]), self.dtype, self.device, offload)
        self.pool_b = _pool_storage((g, size, lay.m_rows[1]), self.dtype, self.device, offload)
        use_a, use_b = initial_pool_indices(size, lay.r)
        self.use_a = np.tile(use_a, (g, 1))
        self.use_b = np.tile(use_b, (g, 1))
        for member, st in enumerate(self.states):
            st.pool_a = PoolFactor(self.pool_a[member], self.use_a[member], 0)
            st.pool_b = PoolFactor(self.pool_b[member], self.use_b[member], 0)

    def attach_pools(self, member: int, pool_a: torch.Tensor, pool_b: torch.Tensor) -> None:
        """Copy this rank's part of one layer's FULL pools (pool_A [C, n], pool_B [C, m])."""
        assert self.pool_a is not None and self.pool_b is not None
        lay, c = self.layout, self.pool_size
        if tuple(pool_a.shape) != (c, lay.n) or tuple(pool_b.shape) != (c, lay.m):
            raise ValueError(
                f"{self.states[member].name}: pools {tuple(pool_a.shape)}, {tuple(pool_b.shape)} "
                f"do not fit C={c}, m={lay.m}, n={lay.n}"
            )
        self.pool_a[member].copy_(pool_a.narrow(1, *lay.a_cols))
        self.pool_b[member].copy_(pool_b.narrow(1, *lay.m_rows))

    @property
    def pool_size(self) -> int:
        """C: entries per pool."""
        assert self.pool_a is not None
        return self.pool_a.shape[1]

    # ------------------------------------------------------------------ host
    def decide(self, k_wanted: np.ndarray, max_slots: int) -> Decision:
        """k per layer, positions, counterpart freezes, pointer advance.

        k is capped by K_max and by min((pA - fA - pB) mod r, (pB - fB - pA) mod r), f the
        frozen counts: the switching windows of A and B never reach a frozen vector.
        """
        o, c, r = self.options, self.counters, self.rank
        f_a = (c.frz_a > 0).sum(axis=1)
        f_b = (c.frz_b > 0).sum(axis=1)
        cap = np.minimum((c.p_a - f_a - c.p_b) % r, (c.p_b - f_b - c.p_a) % r)
        k = np.clip(np.minimum(np.minimum(k_wanted, cap), max_slots), 0, None)
        width = int(k.max()) if len(k) else 0
        offsets = np.arange(width, dtype=np.int64)
        idx_a = (c.p_a[:, None] + offsets) % r
        idx_b = (c.p_b[:, None] + offsets) % r
        active = offsets[None, :] < k[:, None]
        layer, slot = np.nonzero(active)
        c.frz_b[layer, idx_a[layer, slot]] = o.freeze_steps  # A row i freezes B column i
        c.frz_a[layer, idx_b[layer, slot]] = o.freeze_steps
        c.p_a[:] = (c.p_a + k) % r
        c.p_b[:] = (c.p_b + k) % r
        return Decision(k, idx_a, idx_b, active, (layer, slot), np.flatnonzero(k).tolist())

    def choose_sequential(self, d: Decision) -> None:
        """Sequential pool walk for every layer at once (the next k entries of each ring)."""
        pools_a = [st.pool_a for st in self.states]
        pools_b = [st.pool_b for st in self.states]
        d.old_a, d.new_a = self._walk(pools_a, self.use_a, d.idx_a, d)
        d.old_b, d.new_b = self._walk(pools_b, self.use_b, d.idx_b, d)

    def _walk(
        self, factors: list, use: np.ndarray, idx: np.ndarray, d: Decision
    ) -> tuple[np.ndarray, np.ndarray]:
        nexts = np.array([f.next for f in factors], np.int64)
        old, new, nexts = sequential_choice(use, nexts, idx, d.active, self.pool_size, d.switching)
        for factor, nxt in zip(factors, nexts.tolist()):
            factor.next = nxt
        return old, new

    def queue_bank_indices(
        self, d: Decision, per_bank: dict[VectorBank, tuple[BankIndexBuilder, BankIndexBuilder]]
    ) -> int:
        """Add the counterparts to reset and the vectors to freeze to the builders of their
        optimizer bank (reset, freeze); returns the number of frozen vectors."""
        layer, slot = d.switching
        c = self.counters
        frozen = 0
        for bank, bank_layers, positions, counters in (
            # B column j switched: reset A row j
            (self.bank_a, self.bank_layers_a, d.idx_b[layer, slot], c.frz_a),
            (self.bank_b, self.bank_layers_b, d.idx_a[layer, slot], c.frz_b),
        ):
            assert bank is not None, "attach_banks() first"
            reset, freeze = per_bank.setdefault(bank, (BankIndexBuilder(), BankIndexBuilder()))
            reset.add(bank, bank_layers[layer], positions, self.rank, with_steps=True)
            f_layer, f_pos = np.nonzero(counters)  # counters are >= 0
            frozen += len(f_layer)
            freeze.add(bank, bank_layers[f_layer], f_pos, self.rank, with_steps=False)
        return frozen

    def end_step(self) -> None:
        """Count every freeze down by one step."""
        for counters in (self.counters.frz_a, self.counters.frz_b):
            np.subtract(counters, 1, out=counters)
            np.maximum(counters, 0, out=counters)

    def queue_indices(self, d: Decision, pack: IndexPack) -> None:
        """Queue the device index tensors of this step (positions, pool entries)."""
        self.buffers(d.width).fill(d.idx_a, d.idx_b, d.active)
        handles: dict[str, int] = {}
        if self.pool_a is not None:
            assert d.new_a is not None and d.new_b is not None
            size, width = self.pool_size, d.width
            base = np.arange(len(self.states), dtype=np.int64)[:, None] * size
            handles["read_a"] = _pool_index(pack, self.pool_a, (base + d.new_a).reshape(-1))
            handles["read_b"] = _pool_index(pack, self.pool_b, (base + d.new_b).reshape(-1))
            if self.options.pool_write_back:
                layer, slot = d.switching
                handles["out_slots"] = pack.add(layer * width + slot)
                d.write_now = comes_back(d.old_a, d.new_a, layer, slot) or comes_back(
                    d.old_b, d.new_b, layer, slot
                )
                assert d.old_a is not None and d.old_b is not None
                handles["write_a"] = _pool_index(
                    pack, self.pool_a, layer * size + d.old_a[layer, slot]
                )
                handles["write_b"] = _pool_index(
                    pack, self.pool_b, layer * size + d.old_b[layer, slot]
                )
        d.handles = handles

    # ------------------------------------------------------------------ device
    @torch.no_grad()
    def read_a(
        self, d: Decision, pack: IndexPack, t: int, max_slots: int, generator_device: torch.device
    ) -> Selected:
        """Old A rows, their pool write-back, incoming A rows (step 3 of the module doc, A side:
        what the row all-gather needs, so that it can start before the B side is read)."""
        lay = self.layout
        h = d.indices(pack)
        g, width, members = len(self.states), d.width, d.members
        if lay.a_mode != "plain":
            _require_sharded(self.a_params, self.states)
        if lay.a_mode == "rows":  # row-sharded A: switch on the gathered full A
            a_work: list[torch.Tensor | None] = [None] * g
            for i in members:  # the same on every rank: the decisions are identical
                a_work[i] = self.a_params[i].full_tensor()
        else:
            a_work = [_data(a) for a in self.a_params]
        bufs = self.buffers(width)
        bufs.upload()
        a_sel = bufs.a_sel
        for i in members:
            torch.index_select(a_work[i], 0, bufs.idx_ab[i], out=bufs.a_sel_rows[i])
        if self.pool_a is not None:
            self.pool_writes.flush()  # last step's deferred write-backs, before any pool read
            flat_a = self.pool_a.view(-1, self.pool_a.shape[2])
            if "write_a" in h:  # before reading: an entry released now may come back now
                outgoing = a_sel[:, :width].reshape(g * width, -1).index_select(0, h["out_slots"])
                if lay.a_mode == "rows":
                    outgoing = outgoing.narrow(1, *lay.a_cols)
                self._write_back(flat_a, h["write_a"], outgoing, d)
            c_work = _read(flat_a, h["read_a"], self.device).view(g, width, -1)
            sel = Selected(a_sel, c_work, a_work)
            if lay.a_mode == "cols":
                sel.to_gather = [a_sel, c_work]
            else:
                sel.a_rows, sel.c_full = a_sel, c_work
            return sel
        c_full = self._seeded(FACTOR_A, t, max_slots, width, generator_device)
        c_full = c_full.to(device=self.device, dtype=self.dtype)
        if lay.a_mode == "cols":
            c_work = c_full.narrow(2, *lay.a_cols).contiguous()
            return Selected(a_sel, c_work, a_work, c_full=c_full, to_gather=[a_sel])
        return Selected(a_sel, c_full, a_work, a_rows=a_sel, c_full=c_full)

    @torch.no_grad()
    def read_b(
        self,
        d: Decision,
        sel: Selected,
        pack: IndexPack,
        t: int,
        max_slots: int,
        generator_device: torch.device,
    ) -> None:
        """Old B columns, their pool write-back, incoming B columns (step 3, B side)."""
        h = d.indices(pack)
        g, width = len(self.states), d.width
        bufs = self.buffers(width)
        sel.b_local = [_data(b) for b in self.b_params]
        for i in d.members:
            torch.index_select(sel.b_local[i], 1, bufs.idx_ab[i], out=bufs.b_sel_cols[i])
        sel.b_sel = bufs.b_sel
        if self.pool_b is not None:
            flat_b = self.pool_b.view(-1, self.pool_b.shape[2])
            if "write_b" in h:
                outgoing = (
                    sel.b_sel[:, :, width:]
                    .transpose(1, 2)
                    .reshape(g * width, -1)
                    .index_select(0, h["out_slots"])
                )
                self._write_back(flat_b, h["write_b"], outgoing, d)
            sel.d = _read(flat_b, h["read_b"], self.device).view(g, width, -1)
            return
        d_full = self._seeded(FACTOR_B, t, max_slots, width, generator_device)
        sel.d = d_full.narrow(2, *self.layout.m_rows).to(device=self.device, dtype=self.dtype)

    def _write_back(
        self, flat: torch.Tensor, index: torch.Tensor, outgoing: torch.Tensor, d: Decision
    ) -> None:
        """Outgoing vectors into their pool entries (deferred for CPU-offloaded pools)."""
        defer = self.options.pool_offload_cpu and not d.write_now
        self.pool_writes.write(flat, index, outgoing, defer)

    def _seeded(
        self, factor: int, t: int, max_slots: int, width: int, generator_device: torch.device
    ) -> torch.Tensor:
        """[G, K, n] (A) or [G, K, m] (B) seeded candidates: the first K of each layer's
        `max_slots` draws."""
        lay, o = self.layout, self.options
        bound_a, bound_b = init_bounds(lay.m, lay.n, self.rank, o.init)
        length, bound = (lay.n, bound_a) if factor == FACTOR_A else (lay.m, bound_b)
        return torch.stack(
            [
                seeded_candidates(
                    o.seed, st.index, factor, t, max_slots, length, bound, generator_device
                )[:width]
                for st in self.states
            ]
        )

    def take_gathered(self, sel: Selected, full: list[torch.Tensor]) -> None:
        """Full-width rows gathered by the controller for `sel.to_gather` ([rows, n] each)."""
        g = len(self.states)
        sel.a_rows = full[0].view(g, -1, full[0].shape[1])
        if sel.c_full is None:
            sel.c_full = full[1].view(g, -1, full[1].shape[1])
        sel.to_gather = None

    @torch.no_grad()
    def write_vectors(self, d: Decision, sel: Selected) -> None:
        """New A rows and B columns, and the B side of the W correction (left, in place).

        Needs no gathered rows, so it runs while the row all-gather is in flight.
        """
        assert sel.d is not None and sel.b_sel is not None and sel.b_local is not None
        width = d.width
        bufs = self.buffers(width)
        active = bufs.active
        d_cols = sel.d.transpose(1, 2)
        torch.where(active.unsqueeze(2), sel.c_work, sel.a_sel[:, :width], out=bufs.new_a)
        torch.where(active.unsqueeze(1), d_cols, sel.b_sel[:, :, width:], out=bufs.new_b)
        members = d.members
        for i in members:
            sel.a_work[i].index_copy_(0, bufs.idx_a[i], bufs.new_a_rows[i])
        for i in members:
            sel.b_local[i].index_copy_(1, bufs.idx_b[i], bufs.new_b_cols[i])
        if self.layout.a_mode == "rows":
            for i in members:
                local(self.a_params[i]).copy_(sel.a_work[i].narrow(0, *self.layout.a_rows))
        # left = [b_i, (b_j - d_j) act] (in place; the old columns were used above)
        sel.b_sel[:, :, width:].sub_(d_cols).mul_(active.to(self.dtype).unsqueeze(1))

    @torch.no_grad()
    def write_w(self, d: Decision, sel: Selected) -> None:
        """W += s [b_i, (b_j - d_j) act] [(a_i - c_i) act; a_j] for every layer."""
        assert sel.a_rows is not None and sel.c_full is not None and sel.b_sel is not None
        width = d.width
        bufs = self.buffers(width)
        right, left = sel.a_rows, sel.b_sel
        right[:, :width].sub_(sel.c_full).mul_(bufs.active.to(self.dtype).unsqueeze(2))
        w_local = [_data(w) for w in self.w_params]
        if w_local[0].dtype != self.dtype:
            left_rows = left.to(w_local[0].dtype).unbind(0)
            right_rows = right.to(w_local[0].dtype).unbind(0)
        else:
            left_rows = bufs.b_sel_cols
            right_rows = bufs.a_sel_rows if right is bufs.a_sel else right.unbind(0)
        with switch_range("w_update"):
            for i in d.members:
                w_local[i].addmm_(left_rows[i], right_rows[i], alpha=self.scale)


def group_key(st: LayerSwitchState) -> tuple:
    """Layers with equal keys switch together."""
    lay, layer = st.layout, st.layer
    shapes = tuple(tuple(local(p).shape) for p in (layer.base.weight, layer.lora_A, layer.lora_B))
    a = local(layer.lora_A)
    mesh = id(layer.lora_A.device_mesh) if is_dtensor(layer.lora_A) else None
    return (
        shapes,
        lay.m,
        lay.n,
        lay.a_mode,
        lay.a_cols,
        lay.a_rows,
        lay.m_rows,
        a.dtype,
        a.device,
        layer.scale,
        mesh,
    )


def _data(tensor: torch.Tensor) -> torch.Tensor:
    """The local data of a parameter for in-place writes under no_grad (no detach per call)."""
    return tensor._local_tensor if isinstance(tensor, DTensor) else tensor


def _require_sharded(params: list[torch.Tensor], states: list[LayerSwitchState]) -> list:
    for param, st in zip(params, states):
        if not is_dtensor(param):
            raise RuntimeError(
                f"{st.name}: parameters are not sharded DTensors right now (FSDP2 unsharded "
                "them?); call step() after backward, when FSDP2 has resharded the parameters"
            )
    return params


def _pool_storage(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, offload: bool
) -> torch.Tensor:
    """Stacked pools on the compute device, or in CPU memory (pinned, exact size, when CUDA
    exists: see switchlora.transfer.pinned_empty)."""
    if not offload:
        return torch.empty(shape, dtype=dtype, device=device)
    return pinned_empty(shape, dtype)


def _pool_index(pack: IndexPack, pool: torch.Tensor, values: np.ndarray) -> int:
    """Queue an index into `pool`: on the pool's device (CPU pools: a host tensor)."""
    if pool.device == pack.device:
        return pack.add(values)
    return pack.add_host(values)


def _read(flat_pool: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pool rows `index` on `device` (offloaded pools: through pinned memory, non-blocking)."""
    picked = flat_pool.index_select(0, index)
    if picked.device.type == "cpu" and device.type == "cuda":
        picked = picked.pin_memory()
    return picked.to(device=device, non_blocking=True)
