"""The per-layer switch as static-shape tensor code, compiled once with torch.compile.

Every input has a shape fixed per layer (K slots per factor), k only changes the boolean
`active` mask, and nothing branches on tensor values: changing k, the positions or the
candidates never recompiles. The order is the spec's (section 2): switch, reset the
counterparts that just became frozen, mask gradients of frozen vectors, decrement counters.

Layout of the "A work" tensor `a`: the local A [r, n_local] when A is column-sharded or not
sharded, the gathered full A [r, n] in the row-sharded fallback. Gradients and optimizer
moments of A are always the local shard: rows a_row_start ... a_row_start + a_row_len.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _mask_and_decrement(
    frz_a: torch.Tensor,
    frz_b: torch.Tensor,
    grad_a: torch.Tensor | None,
    grad_b: torch.Tensor | None,
    a_row_start: int,
    a_row_len: int,
) -> None:
    """Zero gradients of frozen A rows / B columns, then count every freeze down (floor 0)."""
    if grad_a is not None:
        frozen_a = frz_a.narrow(0, a_row_start, a_row_len) > 0
        grad_a.masked_fill_(frozen_a.unsqueeze(1), 0.0)
    if grad_b is not None:
        grad_b.masked_fill_((frz_b > 0).unsqueeze(0), 0.0)
    frz_a.copy_((frz_a - 1).clamp_(min=0))
    frz_b.copy_((frz_b - 1).clamp_(min=0))


def switch_step(
    w: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    a_rows: torch.Tensor,
    c_full: torch.Tensor,
    c_work: torch.Tensor,
    d_local: torch.Tensor,
    idx_a: torch.Tensor,
    idx_b: torch.Tensor,
    active: torch.Tensor,
    frz_a: torch.Tensor,
    frz_b: torch.Tensor,
    exp_avg_a: torch.Tensor,
    exp_avg_sq_a: torch.Tensor,
    step_a: torch.Tensor,
    exp_avg_b: torch.Tensor,
    exp_avg_sq_b: torch.Tensor,
    step_b: torch.Tensor,
    grad_a: torch.Tensor | None,
    grad_b: torch.Tensor | None,
    scale: float,
    freeze_steps: int,
    a_row_start: int,
    a_row_len: int,
) -> None:
    """One layer's switch, in place on local tensors.

    w [m_loc, n], b [m_loc, r]: local rows of W and B. a: A work tensor (module doc).
    a_rows [2K, n]: full OLD rows of A at idx_a then idx_b. c_full [K, n]: incoming A rows;
    c_work: the same in a's column layout. d_local [K, m_loc]: incoming B columns (local
    rows). idx_a / idx_b [K] int64: positions (distinct, disjoint windows); active [K] bool.
    frz_a / frz_b [r] int32: freeze counters. step_a [r, 1], step_b [1, r]: per-vector
    optimizer step counts (full); exp_avg*: local moments shaped like the local params.
    """
    slots = idx_a.shape[0]
    act = active.to(w.dtype)
    a_old_a = a_rows[:slots]
    a_old_b = a_rows[slots:]
    b_old_a = b.index_select(1, idx_a)
    b_old_b = b.index_select(1, idx_b)
    d_cols = d_local.t().to(b.dtype)
    # W += s * b_i (a_i - c)^T for A rows i, and s * (b_j - d) a_j^T for B columns j.
    left = torch.cat([b_old_a, (b_old_b - d_cols) * act.unsqueeze(0)], dim=1)
    right = torch.cat([(a_old_a - c_full.to(a_rows.dtype)) * act.unsqueeze(1), a_old_b], dim=0)
    w.addmm_(left.to(w.dtype), right.to(w.dtype), alpha=scale)
    # New vectors; inactive slots write their own value back.
    keep_a = a.index_select(0, idx_a)
    a.index_copy_(0, idx_a, torch.where(active.unsqueeze(1), c_work.to(a.dtype), keep_a))
    b.index_copy_(1, idx_b, torch.where(active.unsqueeze(0), d_cols, b_old_b))
    # Counterpart freeze: switching A row i freezes B column i; B column j freezes A row j.
    reset_b = torch.zeros_like(frz_b, dtype=torch.bool).index_copy_(0, idx_a, active)
    reset_a = torch.zeros_like(frz_a, dtype=torch.bool).index_copy_(0, idx_b, active)
    frz_b.copy_(torch.where(reset_b, freeze_steps, frz_b))
    frz_a.copy_(torch.where(reset_a, freeze_steps, frz_a))
    # Reset moments and per-vector step counts of the counterparts just frozen.
    reset_a_local = reset_a.narrow(0, a_row_start, a_row_len).unsqueeze(1)
    exp_avg_a.masked_fill_(reset_a_local, 0.0)
    exp_avg_sq_a.masked_fill_(reset_a_local, 0.0)
    step_a.masked_fill_(reset_a.unsqueeze(1), 0.0)
    exp_avg_b.masked_fill_(reset_b.unsqueeze(0), 0.0)
    exp_avg_sq_b.masked_fill_(reset_b.unsqueeze(0), 0.0)
    step_b.masked_fill_(reset_b.unsqueeze(0), 0.0)
    _mask_and_decrement(frz_a, frz_b, grad_a, grad_b, a_row_start, a_row_len)


_COMPILED: dict[str, Callable[..., None]] = {}


def switch_kernel(compile: bool) -> Callable[..., None]:
    """switch_step, wrapped once per process with torch.compile(fullgraph=True,
    dynamic=False) when `compile`, else the eager function.

    One graph per distinct layer signature (local shapes, layout); a step with k = 0 runs
    the same graph with every slot inactive, so no other graph is ever needed.
    """
    if not compile:
        return switch_step
    if "switch" not in _COMPILED:
        _COMPILED["switch"] = torch.compile(switch_step, fullgraph=True, dynamic=False)
    return _COMPILED["switch"]
