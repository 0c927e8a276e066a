"""Run under torchrun (2 gloo processes): gradient reductions of the trainer's steps.

For each case (layout, micro-batches, whether the earlier micro-batches also reduce) the
trainer is built and stepped 3 times with the same global batch; the worker records the
losses, the counted reduce bytes of each step (reduce-scatter plus all-reduce,
:class:`parallel.comm_stats.CommCounter`), the reduce ops the gradient collectives were
called with, and the FSDP2 settings of every parameter group. Writes one JSON line per case
to the file named by argv[1] (rank 0).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from parallel.comm_stats import CommCounter  # noqa: E402
from parallel.distributed import init_distributed, shutdown  # noqa: E402
from trainer.cli import parse_config  # noqa: E402
from trainer.train import build_trainer, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
REDUCING_APIS = ("reduce_scatter_tensor", "reduce_scatter_single", "all_reduce")
LAYOUTS = {"fsdp": ("1", "2"), "replicate": ("2", "1")}


def config(layout: str, local_batch: int):
    replicate, shard = LAYOUTS[layout]
    return parse_config(
        [
            "--config", str(ROOT / "configs/tiny_full.toml"),
            "--model.flavor", "debug",
            "--training.seq_len", "32",
            "--training.global_batch_size", "8",
            "--training.local_batch_size", str(local_batch),
            "--lr_schedule.warmup_steps", "1",
            "--parallel.dp_replicate", replicate,
            "--parallel.dp_shard", shard,
            "--parallel.backend", "gloo",
            "--metrics.tensorboard", "False",
            "--checkpoint.enable", "False",
        ]
    )  # fmt: skip


@contextmanager
def recorded_ops(ops: list[str]):
    """Record the reduce op of every reduce-scatter and all-reduce issued meanwhile."""
    names = [n for n in REDUCING_APIS if hasattr(dist, n)]
    saved = {name: getattr(dist, name) for name in names}

    def recording(name, fn):
        def call(*args, **kwargs):
            ops.append(f"{name}:{kwargs.get('op', dist.ReduceOp.SUM)}")
            return fn(*args, **kwargs)

        return call

    for name in names:
        setattr(dist, name, recording(name, saved[name]))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(dist, name, fn)


@contextmanager
def backend_reported_as(name: str):
    """Make every group look like ``name`` to the code that builds the trainer."""
    saved = dist.get_backend
    dist.get_backend = lambda group=None: name
    try:
        yield
    finally:
        dist.get_backend = saved


def group_settings(model) -> list[dict]:
    out = []
    for module in model.modules():
        if isinstance(module, FSDPModule):
            for group in module._get_fsdp_state()._fsdp_param_groups:
                out.append(
                    {
                        "divide_factor": group.gradient_divide_factor,
                        "force_sum": group.force_sum_reduction_for_comms,
                    }
                )
    return out


def run_case(layout: str, local_batch: int, sync_every_micro_batch: bool) -> dict:
    cfg = config(layout, local_batch)
    info = init_distributed(cfg.parallel.backend, cfg.parallel.dp_replicate, cfg.parallel.dp_shard)
    with backend_reported_as("nccl"):  # the settings must not depend on the backend
        tr = build_trainer(cfg, info)
    settings = group_settings(tr.model)
    if sync_every_micro_batch:  # the behaviour before accumulation without reduction
        for module in tr.model.modules():
            if isinstance(module, FSDPModule):
                module.set_requires_gradient_sync = lambda *a, **k: None
    it = iter(tr.data.train)
    losses, step_bytes, ops = [], [], []
    with CommCounter() as comm, recorded_ops(ops):
        for _ in range(STEPS):
            comm.reset()
            out = train_step(tr, [next(it) for _ in range(tr.grad_accum)])
            totals = comm.snapshot()
            losses.append(out.loss)
            step_bytes.append(totals["reduce_scatter"].bytes + totals["all_reduce"].bytes)
    result = {
        "layout": layout,
        "grad_accum": tr.grad_accum,
        "sync_every_micro_batch": sync_every_micro_batch,
        "losses": losses,
        "reduce_bytes": step_bytes,
        "ops": sorted(set(ops)),
        "groups": settings,
    }
    return result


def main() -> None:
    results = []
    for layout in LAYOUTS:
        results.append(run_case(layout, 4, False))  # 1 micro-batch of 4 per rank
        results.append(run_case(layout, 1, False))  # 4 micro-batches of 1
        results.append(run_case(layout, 1, True))
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text("".join(json.dumps(r) + "\n" for r in results))
    shutdown()


if __name__ == "__main__":
    main()
