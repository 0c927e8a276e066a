"""Persistent per-group buffers of a switch step, with per-layer views made once."""

from __future__ import annotations

import numpy as np
import torch


class SlotBuffers:
    """A group's persistent tensors for K slots, with per-layer views made once.

    Positions and the active mask are written on the host into arrays that share memory with
    the device tensors on CPU (no copy at all) or that are pinned and copied in one
    non-blocking transfer on CUDA. The old vectors and the new vectors are read into and
    computed in fixed buffers, so a step allocates (almost) nothing and creates no views.
    """

    def __init__(
        self,
        g: int,
        width: int,
        n_work: int,
        m_local: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """Buffers of G layers for `width` slots; A rows of width n_work, B columns of m_local."""
        self.width = width
        pinned = device.type == "cuda"
        host_idx = torch.zeros(g, 2 * width, dtype=torch.int64, pin_memory=pinned)
        host_active = torch.zeros(g, width, dtype=torch.bool, pin_memory=pinned)
        self.idx_host, self.active_host = host_idx.numpy(), host_active.numpy()
        if device.type == "cpu":
            self.idx, self.active = host_idx, host_active
        else:
            self.idx = torch.empty_like(host_idx, device=device)
            self.active = torch.empty_like(host_active, device=device)
        self._host = (host_idx, host_active)
        self._copied: torch.cuda.Event | None = None
        self.idx_ab = list(self.idx.unbind(0))
        self.idx_a = [x[:width] for x in self.idx_ab]
        self.idx_b = [x[width:] for x in self.idx_ab]
        # zeros: rows of layers that do not switch in a step keep old (finite) values
        self.a_sel = torch.zeros(g, 2 * width, n_work, dtype=dtype, device=device)
        self.b_sel = torch.zeros(g, m_local, 2 * width, dtype=dtype, device=device)
        self.new_a = torch.zeros(g, width, n_work, dtype=dtype, device=device)
        self.new_b = torch.zeros(g, m_local, width, dtype=dtype, device=device)
        self.a_sel_rows = list(self.a_sel.unbind(0))
        self.b_sel_cols = list(self.b_sel.unbind(0))
        self.new_a_rows = list(self.new_a.unbind(0))
        self.new_b_cols = list(self.new_b.unbind(0))

    def fill(self, idx_a: np.ndarray, idx_b: np.ndarray, active: np.ndarray) -> None:
        """Write this step's positions and mask on the host (after the last copy finished)."""
        if self._copied is not None:
            self._copied.synchronize()
        self.idx_host[:, : self.width] = idx_a
        self.idx_host[:, self.width :] = idx_b
        self.active_host[:] = active

    def upload(self) -> None:
        """Move them to the device (nothing to do on CPU)."""
        if self.idx.device.type == "cpu":
            return
        self.idx.copy_(self._host[0], non_blocking=True)
        self.active.copy_(self._host[1], non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
