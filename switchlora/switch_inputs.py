"""Eager preparation of one layer's switch: positions, gathers and candidates.

Everything that talks to other ranks or to the host-side candidate state happens here,
outside the compiled kernel, which then sees only local tensors of static shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from switchlora.candidates import (
    FACTOR_A,
    FACTOR_B,
    choose_entries,
    read_entries,
    seeded_candidates,
    to_device,
    write_back,
)
from switchlora.init import init_bounds
from switchlora.layer_state import LayerSwitchState
from switchlora.options import SwitchLoRAOptions
from switchlora.sharding import gather_rows_many, is_dtensor, local


@dataclass
class SwitchInputs:
    """Tensors of one layer's switch, in the layouts switchlora.kernel.switch_step expects."""

    idx_a: torch.Tensor
    """[K] int64 A positions (window starting at p_A)."""

    idx_b: torch.Tensor
    """[K] int64 B positions (window starting at p_B)."""

    active: torch.Tensor
    """[K] bool: the first k slots switch."""

    a_work: torch.Tensor
    """Local A, or the gathered full A in the row-sharded fallback."""

    a_full: torch.Tensor | None
    """The gathered full A (fallback only): its local rows are copied back after the kernel."""

    a_rows: torch.Tensor | None
    """[2K, n] full old rows of A at idx_a then idx_b (None until gathered)."""

    c_full: torch.Tensor | None
    """[K, n] incoming A rows (None until gathered)."""

    c_work: torch.Tensor
    """Incoming A rows in a_work's column layout."""

    d_local: torch.Tensor
    """[K, m_local] incoming B columns (local rows)."""

    to_gather: torch.Tensor | None = None
    """Column-sharded A: local columns of the rows to all-gather (a_rows, then c_full when
    it is None); :func:`gather_pending` fills them, one collective for all layers."""

    gather_like: torch.Tensor | None = None
    """The A parameter whose mesh and placements the gather follows."""


def _pad(entries: np.ndarray, slots: int) -> np.ndarray:
    """Pad chosen pool entries to the static slot count (padding rows are never used)."""
    out = np.zeros(slots, dtype=np.int64)
    out[: len(entries)] = entries
    return out


def prepare_switch(
    st: LayerSwitchState,
    k: int,
    t: int,
    slots: int,
    options: SwitchLoRAOptions,
    choice_rng: np.random.Generator,
    generator_device: torch.device,
    gather: bool = True,
) -> SwitchInputs:
    """Advance the pointers by k, choose and gather everything the kernel needs.

    k = 0 gives all-inactive slots (and touches no pool state): the kernel then only
    masks gradients and counts freezes down. Collectives are issued in the same order on
    every rank because every rank makes the same decisions. ``gather=False`` leaves the
    column-sharded row gather to a later :func:`gather_pending` over many layers.
    """
    lay, r = st.layout, options.rank
    offsets = np.arange(slots, dtype=np.int64)
    idx_a = (st.p_a + offsets) % r
    idx_b = (st.p_b + offsets) % r
    st.p_a, st.p_b = (st.p_a + k) % r, (st.p_b + k) % r

    a_param, b_param = st.layer.lora_A, st.layer.lora_B
    if lay.a_mode != "plain" and not is_dtensor(a_param):
        raise RuntimeError(
            f"{st.name}: parameters are not sharded DTensors right now (FSDP2 unsharded "
            "them?); call step() after backward, when FSDP2 has resharded the parameters"
        )
    a_loc, b_loc = local(a_param), local(b_param)
    device, dtype = a_loc.device, a_loc.dtype
    idx_a_t = to_device(idx_a, device)
    idx_b_t = to_device(idx_b, device)
    active = to_device(offsets < k, device)
    idx_ab = torch.cat([idx_a_t, idx_b_t])
    a_full = a_param.full_tensor() if lay.a_mode == "rows" else None
    a_work = a_full if a_full is not None else a_loc
    a_sel = a_work.index_select(0, idx_ab)  # [2K, n] (plain, rows) or [2K, n_local] (cols)

    if options.candidate_source == "pool":
        assert st.pool_a is not None and st.pool_b is not None
        new_a = new_b = np.zeros(0, dtype=np.int64)
        if k > 0:
            mode = options.pool_choice
            old_a, new_a = choose_entries(st.pool_a, idx_a[:k], mode, choice_rng)
            old_b, new_b = choose_entries(st.pool_b, idx_b[:k], mode, choice_rng)
            if options.pool_write_back:  # before reading: a released entry may come back
                write_back(st.pool_a, old_a, a_sel[:k])
                write_back(st.pool_b, old_b, b_loc.index_select(1, idx_b_t[:k]).t())
        c_work = read_entries(st.pool_a, _pad(new_a, slots), device, dtype)
        d_local = read_entries(st.pool_b, _pad(new_b, slots), device, dtype)
        if lay.a_mode == "cols":  # gather the old rows and the candidates together
            to_gather, a_rows, c_full = torch.cat([a_sel, c_work]), None, None
        else:
            a_rows, c_full = a_sel, c_work
    else:
        bound_a, bound_b = init_bounds(lay.m, lay.n, r, options.init)
        seed, index = options.seed, st.index
        c_full = seeded_candidates(
            seed, index, FACTOR_A, t, slots, lay.n, bound_a, generator_device
        ).to(device=device, dtype=dtype)
        d_full = seeded_candidates(
            seed, index, FACTOR_B, t, slots, lay.m, bound_b, generator_device
        )
        d_local = d_full.narrow(1, *lay.m_rows).to(device=device, dtype=dtype)
        if lay.a_mode == "cols":
            to_gather, a_rows = a_sel, None
            c_work = c_full.narrow(1, *lay.a_cols).contiguous()
        else:
            a_rows, c_work = a_sel, c_full
    inputs = SwitchInputs(idx_a_t, idx_b_t, active, a_work, a_full, a_rows, c_full, c_work, d_local)
    if lay.a_mode == "cols":
        inputs.to_gather, inputs.gather_like = to_gather, a_param
        if gather:
            gather_pending([inputs])
    return inputs


def gather_pending(inputs: list[SwitchInputs]) -> None:
    """Fill a_rows (and c_full) of every input still waiting for its rows.

    One all-gather per device mesh for all layers (rather than one per layer); every rank
    calls this with the same layers in the same order.
    """
    groups: dict[int, list[SwitchInputs]] = {}
    for x in inputs:
        if x.to_gather is not None:
            groups.setdefault(id(x.gather_like.device_mesh), []).append(x)
    for waiting in groups.values():
        full = gather_rows_many([x.to_gather for x in waiting], waiting[0].gather_like)
        for x, rows in zip(waiting, full):
            slots = x.idx_a.shape[0]
            x.a_rows = rows[: 2 * slots]
            if x.c_full is None:
                x.c_full = rows[2 * slots :]
            x.to_gather = x.gather_like = None
