"""Effective rank of every projection's accumulated update during training.

For each target projection (adapter layers of lora/switchlora/relora runs, dense linears of
full/galore runs) the update D = W_now - W_init + s*B*A since step 0 is formed, where W_init
is recomputed from the keyed init (:func:`trainer.methods.base.dense_init`), not stored. Under
FSDP2 one layer at a time is gathered with ``full_tensor()`` (a collective: every rank calls
this in the same order); rank 0 alone draws W_init and computes the spectrum.

Results go to TensorBoard (a histogram of sigma / sigma_max per layer, mean rank fractions as
scalars) and, one JSON object per call, to ``<dump_folder>/rank_diagnostic.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from switchlora.diagnostics import RankSummary, accumulated_update, summarize
from switchlora.layer import AdapterLinear
from trainer.config import JobConfig
from trainer.methods.base import dense_init
from trainer.model.init import keyed_generator

JSONL_FILE = "rank_diagnostic.jsonl"
"""File name of the per-call records inside the dump folder."""


def target_layers(model: nn.Module, cfg: JobConfig) -> list[tuple[str, nn.Module]]:
    """Adapter layers, or else the dense nn.Linear projections named in method.target_modules."""
    adapters = [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLinear)]
    if adapters:
        return adapters
    targets = set(cfg.method.target_modules)
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets
    ]


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def _local_device(t: torch.Tensor) -> torch.device:
    return (t.to_local() if isinstance(t, DTensor) else t).device


def _dense_init(cfg: JobConfig, name: str, weight: torch.Tensor) -> torch.Tensor:
    """The full-rank N(0, std) init of ``<name>.weight``, as trainer.model.init draws it."""
    device = _local_device(weight)
    gen = keyed_generator(cfg.job.seed, f"{name}.weight", device)
    full = torch.empty(tuple(weight.shape), device=device)
    return full.normal_(0.0, cfg.model.init_std, generator=gen)


@torch.no_grad()
def layer_updates(
    model: nn.Module, cfg: JobConfig, is_main: bool
) -> Iterator[tuple[str, torch.Tensor | None]]:
    """(layer name, accumulated update) per target layer; the update is None off rank 0.

    Every rank must exhaust the iterator (the gathers are collectives).
    """
    for module in model.modules():  # fp32 sharded masters, not bf16 unsharded copies
        if isinstance(module, FSDPModule):
            module.reshard()
    w_init_of = dense_init(cfg.job.seed, cfg.model.init_std)
    for name, layer in target_layers(model, cfg):
        if isinstance(layer, AdapterLinear):
            w, a, b = _full(layer.base.weight), _full(layer.lora_A), _full(layer.lora_B)
            if is_main:
                yield name, accumulated_update(w, w_init_of(name, layer), a, b, layer.scale)
            else:
                yield name, None
        else:
            w = _full(layer.weight)
            if is_main:
                yield name, accumulated_update(w, _dense_init(cfg, name, layer.weight))
            else:
                yield name, None


def rank_diagnostic(
    model: nn.Module, cfg: JobConfig, is_main: bool
) -> dict[str, tuple[RankSummary, torch.Tensor]]:
    """Rank measures and singular values per target layer (empty off rank 0)."""
    out: dict[str, tuple[RankSummary, torch.Tensor]] = {}
    for name, update in layer_updates(model, cfg, is_main):
        if update is not None:
            out[name] = summarize(update)
    return out


def mean_fractions(summaries: dict[str, RankSummary]) -> dict[str, float]:
    """Mean over layers of each rank measure divided by the layer's full rank min(m, n)."""
    if not summaries:
        return {}
    keys = ("entropy_rank", "stable_rank", "numerical_rank", "energy_rank")
    n = len(summaries)
    return {
        f"{key}_frac": sum(getattr(s, key) / s.max_rank for s in summaries.values()) / n
        for key in keys
    }


def log_rank_diagnostic(
    model: nn.Module, cfg: JobConfig, step: int, writer: Any | None, dump: Path | None
) -> dict[str, float]:
    """Compute the diagnostic (collective), log it on rank 0; returns the mean fractions.

    ``writer`` is a TensorBoard SummaryWriter or None; ``dump`` is the dump folder on rank 0
    (None elsewhere), where one line is appended to ``rank_diagnostic.jsonl``.
    """
    results = rank_diagnostic(model, cfg, is_main=dump is not None)
    if dump is None:
        return {}
    summaries = {name: s for name, (s, _) in results.items()}
    fractions = mean_fractions(summaries)
    if writer is not None:
        for name, (_, sv) in results.items():
            top = float(sv.max()) if sv.numel() else 0.0
            writer.add_histogram(f"rank/{name}", sv / top if top > 0 else sv, step)
        for key, value in fractions.items():
            writer.add_scalar(f"rank/{key}_mean", value, step)
    record = {"step": step, "layers": {n: s.as_dict() for n, s in summaries.items()}}
    with open(Path(dump) / JSONL_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    return fractions
