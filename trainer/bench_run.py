"""One benchmark case: build a run through the trainer, warm it up, measure a few steps.

The model, method, precision and sharding come from :func:`trainer.train.build_trainer`
and every step is :func:`trainer.train.train_step`, so the numbers are the trainer's own.
Measured per step: wall time (with a device synchronisation around each step), process CPU
time, the method hook's time (the SwitchLoRA switch; ReLoRA merge, GaLore refresh) with a
synchronisation around it, the collectives' bytes (:class:`parallel.comm_stats.CommCounter`),
memory by kind, and torch.compile's graph, graph-break and recompile counts.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch._dynamo.utils import counters

from parallel.comm_stats import KINDS, CommCounter
from switchlora.profiling import RANGES, switch_timings
from switchlora.sharding import local
from trainer.bench_memory import (
    gradient_bytes,
    optimizer_bytes,
    parameter_bytes,
    peak_bytes,
    reset_peak,
)
from trainer.config import JobConfig
from trainer.metrics import peak_flops
from trainer.train import Trainer, build_trainer, train_step

PRECISIONS: dict[str, list[str]] = {
    "fp32": ["--precision.mode", "fp32"],
    "bf16": ["--precision.mode", "bf16"],
    "float8": ["--precision.mode", "float8", "--precision.float8_recipe", "tensorwise"],
    "float8_rowwise": ["--precision.mode", "float8", "--precision.float8_recipe", "rowwise"],
    "float8_ag": [
        "--precision.mode",
        "float8",
        "--precision.float8_recipe",
        "tensorwise",
        "--precision.float8_all_gather",
        "True",
    ],
}
"""Precision names of the benchmark and the config flags each sets."""

LAYOUTS = ("fsdp", "hsdp", "replicate")
"""fsdp: shard over all ranks; hsdp: 2 replicas x world/2 shards; replicate: DDP semantics."""


@dataclass(frozen=True)
class Case:
    """One benchmarked combination."""

    method: str
    precision: str
    layout: str

    @property
    def name(self) -> str:
        return f"{self.method}/{self.precision}/{self.layout}"


def layout_flags(layout: str, world: int) -> list[str]:
    """Config flags of a data-parallel layout for ``world`` ranks."""
    if layout == "fsdp":
        return ["--parallel.dp_replicate", "1", "--parallel.dp_shard", str(world)]
    if layout == "replicate":
        return ["--parallel.dp_replicate", str(world), "--parallel.dp_shard", "1"]
    if layout == "hsdp":
        if world < 4 or world % 2:
            raise ValueError(f"layout hsdp needs an even world size >= 4, got {world}")
        return ["--parallel.dp_replicate", "2", "--parallel.dp_shard", str(world // 2)]
    raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")


def case_flags(case: Case, world: int) -> list[str]:
    """Config flags that select a case (method, precision, layout), no logging or checkpoints."""
    if case.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {case.precision!r}; known: {', '.join(PRECISIONS)}")
    return [
        "--method.name",
        case.method,
        *PRECISIONS[case.precision],
        *layout_flags(case.layout, world),
        "--metrics.tensorboard",
        "False",
        "--checkpoint.enable",
        "False",
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    fn: Callable[[int], Any], device: torch.device, log: list[float], cpu_log: list[float]
) -> Callable:
    """Wrap a method hook: synchronise, time it, append wall and CPU seconds to the logs."""

    def wrapper(step: int) -> Any:
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn(step)
        _sync(device)
        log.append(time.perf_counter() - start)
        cpu_log.append(time.process_time() - cpu_start)
        return out

    return wrapper


BREAKDOWN_STEPS = 4
"""Extra steps after the measured ones in which the parts of the switch are timed."""


def switch_breakdown(tr: Trainer, batches: Any, steps: int) -> dict[str, float]:
    """Median seconds per step of each part of the switch (switchlora.profiling.RANGES).

    Timed over ``steps`` further training steps (not the measured ones: on CUDA every part
    synchronises the device). Maximum over ranks.
    """
    device = tr.info.device
    per_step: list[dict[str, float]] = []
    for _ in range(steps):
        batch = [next(batches) for _ in range(tr.grad_accum)]
        with switch_timings(device) as seconds:
            train_step(tr, batch)
        per_step.append(dict(seconds))
    medians = [statistics.median(s[name] for s in per_step) for name in RANGES]
    return dict(zip(RANGES, _max_over_ranks(medians, device)))


FLOOR_STEPS = 4
"""Extra steps in which the floor of the switch's W pass is timed (see :func:`w_pass_floor`)."""


def w_pass_floor(tr: Trainer, batches: Any, steps: int) -> float:
    """Median seconds of one in-place streaming pass over every adapted W held by this rank.

    Any switch that keeps the layer output unchanged must read and write every switching
    layer's W once (W += s L R), so this pass, run where the switch runs (after backward and
    clipping, before the switch itself), is the memory-bandwidth floor of the W update: W is
    multiplied by 1.0 in place, which reads and writes every element and changes no value.
    Timed over ``steps`` further training steps; maximum over ranks.
    """
    controller = tr.method.stateful["switch"]
    weights = [local(w) for group in controller.groups for w in group.w_params]
    device = tr.info.device
    seconds: list[float] = []
    switch = tr.method.before_optimizer_step

    def timed_floor_then_switch(step: int) -> Any:
        _sync(device)
        start = time.perf_counter()
        torch._foreach_mul_(weights, 1.0)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        return switch(step)

    tr.method.before_optimizer_step = timed_floor_then_switch
    try:
        for _ in range(steps):
            train_step(tr, [next(batches) for _ in range(tr.grad_accum)])
    finally:
        tr.method.before_optimizer_step = switch
    return _max_over_ranks([statistics.median(seconds)], device)[0]


def _dynamo_totals() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process."""
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def _flops_per_token(tr: Trainer) -> float:
    """Training FLOPs per token as the method computes them (the trainer's MFU definition)."""
    m = tr.cfg.method
    rank = m.rank if m.name in ("lora", "switchlora", "relora") else 0
    return tr.model_args.flops_per_token(tr.cfg.training.seq_len, rank, tuple(m.target_modules))


def _max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over ranks (the slowest rank sets the step time)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def measure(tr: Trainer, warmup: int, steps: int, comm: CommCounter) -> dict[str, Any]:
    """Warm up, then measure ``steps`` steps of a built trainer (collectives counted by ``comm``)."""
    device = tr.info.device
    hook_times: list[float] = []
    hook_cpu: list[float] = []
    for name in ("before_optimizer_step", "after_optimizer_step"):
        hook = getattr(tr.method, name)
        setattr(tr.method, name, _timed(hook, device, hook_times, hook_cpu))
    grads: list[int] = []
    inner_before = tr.method.before_optimizer_step

    def before_with_grads(step: int) -> Any:
        if not grads:
            grads.append(gradient_bytes(tr.model))
        return inner_before(step)

    it = iter(tr.data.train)
    graphs0, breaks0 = _dynamo_totals()
    for _ in range(warmup):
        loss, _, _ = train_step(tr, [next(it) for _ in range(tr.grad_accum)])
    _sync(device)
    graphs1, breaks1 = _dynamo_totals()
    tr.method.before_optimizer_step = before_with_grads
    hook_times.clear()
    hook_cpu.clear()
    reset_peak(device)
    switched = 0.0
    wall: list[float] = []
    cpu: list[float] = []
    comm.reset()
    for _ in range(steps):
        batches = [next(it) for _ in range(tr.grad_accum)]
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, _, metrics = train_step(tr, batches)
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        switched += metrics.get("switch/vectors_switched", 0.0)
    totals = comm.snapshot()
    graphs2, breaks2 = _dynamo_totals()
    switching = "switch" in tr.method.stateful
    breakdown = switch_breakdown(tr, it, BREAKDOWN_STEPS) if switching else {}
    floor_s = w_pass_floor(tr, it, FLOOR_STEPS) if switching else None
    if dist.is_initialized():
        dist.all_reduce(loss)  # each rank holds its share of the global mean
    # Per-step hook time: before + after hooks of one step.
    per_step_hook = [a + b for a, b in zip(hook_times[0::2], hook_times[1::2])]
    per_step_hook_cpu = [a + b for a, b in zip(hook_cpu[0::2], hook_cpu[1::2])]
    step_s, cpu_s, hook_s, hook_mean_s, hook_cpu_s = _max_over_ranks(
        [
            statistics.median(wall),
            statistics.median(cpu),
            statistics.median(per_step_hook),
            statistics.mean(per_step_hook),
            statistics.median(per_step_hook_cpu),
        ],
        device,
    )
    t = tr.cfg.training
    tokens = t.global_batch_size * t.seq_len
    n_params = sum(p.numel() for p in tr.model.parameters())
    n_trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    controller = tr.method.stateful.get("switch")
    peak = peak_flops(device)
    result: dict[str, Any] = {
        "tokens_per_step": tokens,
        "step_s": step_s,
        "step_s_all": wall,
        "cpu_s_per_step": cpu_s,
        "tokens_per_s": tokens / step_s,
        "mfu": (
            _flops_per_token(tr) * tokens / step_s / (peak * tr.info.world_size) if peak else None
        ),
        "hook_s": hook_s,
        "hook_mean_s": hook_mean_s,
        "hook_share": hook_s / step_s,
        "hook_cpu_s": hook_cpu_s,
        "hook_cpu_share": hook_cpu_s / cpu_s,
        "vectors_switched_per_step": switched / steps,
        "switch_breakdown_s": breakdown,
        "w_pass_floor_s": floor_s,
        "final_loss": float(loss),
        "params": n_params,
        "trainable_params": n_trainable,
        "param_bytes": parameter_bytes(tr.model),
        "grad_bytes": grads[0] if grads else 0,
        "optimizer_bytes": optimizer_bytes(tr.method.optimizer),
        "pool_bytes": controller.pool_bytes() if hasattr(controller, "pool_bytes") else 0,
        "peak_bytes": peak_bytes(device),
        "comm_per_step": {
            kind: {
                "calls": totals[kind].calls / steps,
                "bytes": totals[kind].bytes / steps,
                "wire_bytes": totals[kind].wire_bytes / steps,
            }
            for kind in KINDS
        },
        "compiled_graphs": graphs1 - graphs0,
        "graph_breaks": breaks2 - breaks0,
        "recompiles_measured": graphs2 - graphs1,
        "graph_breaks_measured": breaks2 - breaks1,
    }
    return result


def run_case(
    cfg: JobConfig, info: Any, case: Case, warmup: int, steps: int, comm: CommCounter
) -> dict[str, Any]:
    """Build the trainer for ``cfg`` (already set to ``case``) and measure it."""
    torch._dynamo.reset()
    counters.clear()
    gc.collect()
    if info.device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(info.device)
    tr = build_trainer(cfg, info)
    try:
        result = measure(tr, warmup, steps, comm)
    finally:
        del tr
        gc.collect()
    return {
        "method": case.method,
        "precision": case.precision,
        "layout": case.layout,
        "world_size": info.world_size,
        "dp_replicate": cfg.parallel.dp_replicate,
        "dp_shard": cfg.parallel.dp_shard,
        "compile": cfg.compile.enable,
        "device": info.device.type,
        **result,
    }
