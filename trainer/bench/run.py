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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch._dynamo.utils import counters

from parallel.comm_stats import KINDS, CommCounter, Totals
from switchlora.profiling import RANGES, switch_timings
from switchlora.sharding import local
from trainer.bench.memory import (
    gradient_bytes,
    optimizer_bytes,
    parameter_bytes,
    peak_bytes,
    reset_peak,
)
from trainer.config import JobConfig
from trainer.metrics import peak_flops
from trainer.optim import grad_norm
from trainer.train import (
    Trainer,
    apply_update,
    build_trainer,
    forward_backward,
    train_step,
    training_flops_per_token,
)

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

AC_MODES: dict[str, list[str]] = {
    "none": ["--activation_checkpoint.mode", "none"],
    "full": ["--activation_checkpoint.mode", "full"],
    "every2": [
        "--activation_checkpoint.mode",
        "selective",
        "--activation_checkpoint.selective_ac_option",
        "2",
    ],
    "op": [
        "--activation_checkpoint.mode",
        "selective",
        "--activation_checkpoint.selective_ac_option",
        "op",
    ],
}
"""Activation-checkpointing names of the benchmark and the config flags each sets."""

LAYOUTS = ("fsdp", "hsdp", "replicate")
"""fsdp: shard over all ranks; hsdp: 2 replicas x world/2 shards; replicate: DDP semantics."""


@dataclass(frozen=True)
class Case:
    """One benchmarked combination."""

    method: str
    precision: str
    layout: str
    ac: str = "none"
    """Activation checkpointing, a key of :data:`AC_MODES`."""

    @property
    def name(self) -> str:
        suffix = "" if self.ac == "none" else f"/ac-{self.ac}"
        return f"{self.method}/{self.precision}/{self.layout}{suffix}"


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
    if case.ac not in AC_MODES:
        raise ValueError(f"unknown checkpointing {case.ac!r}; known: {', '.join(AC_MODES)}")
    return [
        "--method.name",
        case.method,
        *PRECISIONS[case.precision],
        *layout_flags(case.layout, world),
        *AC_MODES[case.ac],
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


GUARD_STEPS = 8
"""Extra step pairs in which the cost of the step's host read (the non-finite guard) is timed."""


def unguarded_step(tr: Trainer, batches: list[dict[str, torch.Tensor]]) -> None:
    """:func:`trainer.train.train_step` without its non-finite guard: no loss all-reduce and
    no host read between backward and the optimizer step (the baseline of :func:`guard_cost`)."""
    forward_backward(tr, batches)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    apply_update(tr, params, grad_norm(params))


def guard_cost(tr: Trainer, batches: Any, steps: int) -> dict[str, float]:
    """What the per-step guard costs: ``steps`` pairs of a guarded and an unguarded step.

    The guard all-reduces the loss and reads it and the gradient norm on the host, so on a
    GPU the optimizer step is launched only once backward has finished. Returns the median
    extra seconds per step and the median of the pairwise step-time ratios (maximum over
    ranks).
    """
    device = tr.info.device
    guarded: list[float] = []
    unguarded: list[float] = []
    for _ in range(steps):
        for step_fn, times in ((train_step, guarded), (unguarded_step, unguarded)):
            batch = [next(batches) for _ in range(tr.grad_accum)]
            _sync(device)
            start = time.perf_counter()
            step_fn(tr, batch)
            _sync(device)
            times.append(time.perf_counter() - start)
    extra = statistics.median(guarded) - statistics.median(unguarded)
    ratio = statistics.median(g / u for g, u in zip(guarded, unguarded))
    extra, ratio = _max_over_ranks([extra, ratio], device)
    return {"guard_s": extra, "guard_ratio": ratio}


def _dynamo_totals() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process."""
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def _max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over ranks (the slowest rank sets the step time)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


@dataclass
class CaseRun:
    """One case under measurement: its trainer and what its measured steps recorded."""

    tr: Trainer
    batches: Iterator[dict[str, torch.Tensor]]
    """The case's training batches (warm-up, measured, breakdown and floor steps)."""
    hook_times: list[float] = field(default_factory=list)
    """Wall seconds of every method-hook call (two per step: before and after the optimizer)."""
    hook_cpu: list[float] = field(default_factory=list)
    """Process CPU seconds of the same calls."""
    wall: list[float] = field(default_factory=list)
    """Wall seconds of each measured step."""
    cpu: list[float] = field(default_factory=list)
    """Process CPU seconds of each measured step."""
    comm: dict[str, Totals] = field(default_factory=lambda: {k: Totals() for k in KINDS})
    """Collectives of the measured steps, by kind."""
    switched: float = 0.0
    """Vectors switched over the measured steps."""
    grad_bytes: int = 0
    """Local gradient bytes, read right before the first measured switch."""
    compiled_graphs: int = 0
    """Graphs compiled during the warm-up."""
    warmup_s: float = 0.0
    """Wall seconds of the warm-up steps (with compile enabled: mostly compile time)."""
    graph_breaks: int = 0
    """Graph breaks during the warm-up."""
    recompiles_measured: int = 0
    """Graphs compiled during the measured steps (should stay 0)."""
    graph_breaks_measured: int = 0
    """Graph breaks during the measured steps."""
    peak: int = 0
    """Largest peak memory of a measured step (see trainer.bench.memory.peak_bytes)."""
    loss: float | None = None
    """Global mean loss of the last step run."""

    def next_step_batches(self) -> list[dict[str, torch.Tensor]]:
        return [next(self.batches) for _ in range(self.tr.grad_accum)]


def start_case(tr: Trainer, warmup: int) -> CaseRun:
    """Time the method hooks of ``tr`` from now on and run its ``warmup`` steps."""
    run = CaseRun(tr, iter(tr.data.train))
    device = tr.info.device
    for name in ("before_optimizer_step", "after_optimizer_step"):
        hook = getattr(tr.method, name)
        setattr(tr.method, name, _timed(hook, device, run.hook_times, run.hook_cpu))
    graphs0, breaks0 = _dynamo_totals()
    _sync(device)
    start = time.perf_counter()
    for _ in range(warmup):
        run.loss = train_step(tr, run.next_step_batches()).loss
    _sync(device)
    run.warmup_s = time.perf_counter() - start
    graphs1, breaks1 = _dynamo_totals()
    run.compiled_graphs, run.graph_breaks = graphs1 - graphs0, breaks1 - breaks0
    inner_before = tr.method.before_optimizer_step

    def before_with_grads(step: int) -> Any:
        if not run.grad_bytes:
            run.grad_bytes = gradient_bytes(tr.model)
        return inner_before(step)

    tr.method.before_optimizer_step = before_with_grads
    run.hook_times.clear()
    run.hook_cpu.clear()
    return run


def measured_step(run: CaseRun, comm: CommCounter) -> None:
    """One measured training step of a case: wall and CPU time, collectives, peak memory."""
    tr, device = run.tr, run.tr.info.device
    batches = run.next_step_batches()
    graphs0, breaks0 = _dynamo_totals()
    reset_peak(device)
    comm.reset()
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = train_step(tr, batches)
    run.loss, metrics = out.loss, out.metrics
    _sync(device)
    run.wall.append(time.perf_counter() - start)
    run.cpu.append(time.process_time() - cpu_start)
    for kind, totals in comm.snapshot().items():
        mine = run.comm[kind]
        mine.calls += totals.calls
        mine.bytes += totals.bytes
        mine.wire_bytes += totals.wire_bytes
    graphs1, breaks1 = _dynamo_totals()
    run.recompiles_measured += graphs1 - graphs0
    run.graph_breaks_measured += breaks1 - breaks0
    run.peak = max(run.peak, peak_bytes(device))
    run.switched += metrics.get("switch/vectors_switched", 0.0)


def finish_case(run: CaseRun) -> dict[str, Any]:
    """The switch breakdown and floor steps, then the case's figures (maximum over ranks)."""
    tr, device, steps = run.tr, run.tr.info.device, len(run.wall)
    switching = "switch" in tr.method.stateful
    breakdown = switch_breakdown(tr, run.batches, BREAKDOWN_STEPS) if switching else {}
    floor_s = w_pass_floor(tr, run.batches, FLOOR_STEPS) if switching else None
    guard = guard_cost(tr, run.batches, GUARD_STEPS)
    loss = run.loss
    assert loss is not None
    # Per-step hook time: before + after hooks of one step.
    per_step_hook = [a + b for a, b in zip(run.hook_times[0::2], run.hook_times[1::2])]
    per_step_hook_cpu = [a + b for a, b in zip(run.hook_cpu[0::2], run.hook_cpu[1::2])]
    per_step_hook = per_step_hook[:steps]  # the measured steps only
    per_step_hook_cpu = per_step_hook_cpu[:steps]
    step_s, cpu_s, hook_s, hook_mean_s, hook_cpu_s = _max_over_ranks(
        [
            statistics.median(run.wall),
            statistics.median(run.cpu),
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
    return {
        "tokens_per_step": tokens,
        "step_s": step_s,
        "step_s_all": run.wall,
        "cpu_s_per_step": cpu_s,
        "cpu_s_all": run.cpu,
        "tokens_per_s": tokens / step_s,
        "mfu": (
            training_flops_per_token(tr) * tokens / step_s / (peak * tr.info.world_size)
            if peak
            else None
        ),
        "hook_s": hook_s,
        "hook_mean_s": hook_mean_s,
        "hook_share": hook_s / step_s,
        "hook_cpu_s": hook_cpu_s,
        "hook_cpu_share": hook_cpu_s / cpu_s,
        "vectors_switched_per_step": run.switched / steps,
        "switch_breakdown_s": breakdown,
        "w_pass_floor_s": floor_s,
        **guard,
        "final_loss": float(loss),
        "params": n_params,
        "trainable_params": n_trainable,
        "param_bytes": parameter_bytes(tr.model),
        "grad_bytes": run.grad_bytes,
        "optimizer_bytes": optimizer_bytes(tr.method.optimizer),
        "pool_bytes": controller.pool_bytes() if hasattr(controller, "pool_bytes") else 0,
        "peak_bytes": run.peak,
        "comm_per_step": {
            kind: {
                "calls": totals.calls / steps,
                "bytes": totals.bytes / steps,
                "wire_bytes": totals.wire_bytes / steps,
            }
            for kind, totals in run.comm.items()
        },
        "compiled_graphs": run.compiled_graphs,
        "warmup_s": _max_over_ranks([run.warmup_s], device)[0],
        "graph_breaks": run.graph_breaks + run.graph_breaks_measured,
        "recompiles_measured": run.recompiles_measured,
        "graph_breaks_measured": run.graph_breaks_measured,
    }


def measure(tr: Trainer, warmup: int, steps: int, comm: CommCounter) -> dict[str, Any]:
    """Warm up, then measure ``steps`` steps of a built trainer (collectives counted by ``comm``)."""
    run = start_case(tr, warmup)
    for _ in range(steps):
        measured_step(run, comm)
    return finish_case(run)


def measure_interleaved(
    trainers: list[Trainer], warmup: int, steps: int, comm: CommCounter
) -> list[dict[str, Any]]:
    """Warm up every trainer, then step them in turn, one measured step each per round.

    On a host whose speed drifts (shared machines) a slow phase then falls on every case
    alike, so their ratios hold much better than those of cases measured one after the
    other. All cases are resident together, so the CUDA peak of a case includes the others'
    memory (``peak_bytes`` is None).
    """
    runs = [start_case(tr, warmup) for tr in trainers]
    for _ in range(steps):
        for run in runs:
            measured_step(run, comm)
    results = [finish_case(run) for run in runs]
    for result in results:
        result["peak_bytes"] = None
        result["interleaved"] = True
    return results


def _fresh_start(device: torch.device) -> None:
    torch._dynamo.reset()
    counters.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(device)


def case_record(cfg: JobConfig, info: Any, case: Case, result: dict[str, Any]) -> dict[str, Any]:
    """A measured result with the case and its setting."""
    return {
        "method": case.method,
        "precision": case.precision,
        "layout": case.layout,
        "ac": case.ac,
        "world_size": info.world_size,
        "dp_replicate": cfg.parallel.dp_replicate,
        "dp_shard": cfg.parallel.dp_shard,
        "compile": cfg.compile.enable,
        "device": info.device.type,
        **result,
    }


def run_case(
    cfg: JobConfig, info: Any, case: Case, warmup: int, steps: int, comm: CommCounter
) -> dict[str, Any]:
    """Build the trainer for ``cfg`` (already set to ``case``) and measure it."""
    _fresh_start(info.device)
    tr = build_trainer(cfg, info)
    try:
        result = measure(tr, warmup, steps, comm)
    finally:
        del tr
        gc.collect()
    return case_record(cfg, info, case, result)


def run_cases_interleaved(
    setups: list[tuple[JobConfig, Any, Case]], warmup: int, steps: int, comm: CommCounter
) -> list[dict[str, Any]]:
    """Build every case, then measure them with :func:`measure_interleaved`."""
    _fresh_start(setups[0][1].device)
    trainers = [build_trainer(cfg, info) for cfg, info, _ in setups]
    try:
        results = measure_interleaved(trainers, warmup, steps, comm)
    finally:
        del trainers
        gc.collect()
    return [case_record(cfg, info, case, r) for (cfg, info, case), r in zip(setups, results)]
