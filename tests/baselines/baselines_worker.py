"""ReLoRA and GaLore checks inside the trainer, run as one process or under torchrun (gloo).

``python baselines_worker.py OUT`` (world size 1) and ``torchrun --nproc_per_node=2
baselines_worker.py OUT`` write, from rank 0, OUT/<world>/results.pt with:
- "relora": logits before and after a merge-and-reinit of a trained model, the full W, A, B
  before and after, and the adapters' Adam moments and steps before and after pruning;
- "galore": the losses, the full parameters and logits after 20 steps with projector
  refreshes at steps 0, 7 and 14;
checkpoints of those two states (OUT/<world>/relora_export, galore_export) for the export check,
and the dump folders of short runs of the training loop (summary.json, TensorBoard events):
relora_run, galore_run (two resets, three projector refreshes); <method>_straight and
<method>_resumed (12 steps, and the same resumed from the straight run's step-6 checkpoint),
and on one process <method>_from2 (resumed from the 2-process run's step-6 checkpoint);
full_run and relora_warm (ReLoRA started from a full-rank checkpoint).
test_baselines_distributed.py compares them with references and across world sizes.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from parallel.distributed import init_distributed, shutdown
from switchlora.baselines.relora import relora_reset_
from trainer.checkpoint import CheckpointManager
from trainer.cli import parse_config
from trainer.methods.relora import reshard_
from trainer.train import build_trainer, train, train_step

ROOT = Path(__file__).resolve().parents[2]

COMMON = [
    "--config",
    str(ROOT / "configs/tiny_full.toml"),
    "--model.flavor",
    "debug",
    "--training.seq_len",
    "64",
    "--training.global_batch_size",
    "8",
    "--training.val_batches",
    "2",
    "--lr_schedule.warmup_steps",
    "2",
    "--metrics.log_every",
    "1",
    "--method.rank",
    "8",
]

# ffn_dim 175: gate/up rows and down_proj's columns split unevenly over two ranks, and
# down_proj's A (8 x 175) takes the row-sharded fallback of the placement function.
# relora.alpha 8: s = 1 (ReLoRA's 32 / 8 = 4 makes the tiny model's restarts spiky enough that
# rounding differences between world sizes grow visibly).
RELORA = [*COMMON, "--model.ffn_dim", "175", "--method.name", "relora", "--optimizer.lr", "0.01"]
RELORA += ["--relora.alpha", "8"]

GALORE = [
    *COMMON,
    "--method.name",
    "galore",
    "--model.ffn_dim",
    "175",
    "--optimizer.eps",
    "1e-6",
    "--galore.update_interval",
    "7",
]

GALORE_STEPS = 20


def full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def fixed_tokens(vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    return torch.randint(0, vocab, (2, 64), generator=gen)


def batches(tr, steps: int):
    it = iter(tr.data.train)
    for _ in range(steps):
        yield [next(it) for _ in range(tr.grad_accum)]


def save_checkpoint(tr, cfg, folder: Path) -> None:
    """A checkpoint of the trainer's current state in ``folder`` (for the export check)."""
    target = dataclasses.replace(
        cfg,
        checkpoint=dataclasses.replace(cfg.checkpoint, enable=True, async_mode="disabled"),
    )
    CheckpointManager(target, tr.info, folder, log=lambda _: None).save(tr, {})


def relora_merge(info, out: Path) -> dict:
    """Train 3 steps, then one reset (merge, re-draw, prune 99.9 %) by hand."""
    cfg = parse_config([*RELORA, "--training.steps", "10", "--job.dump_folder", str(out / "x")])
    tr = build_trainer(cfg, info)
    for group in batches(tr, 3):
        train_step(tr, group)
    controller = tr.method.stateful["relora"]
    tokens = fixed_tokens(tr.model_args.vocab_size)
    opt = tr.method.optimizer
    layers = controller.layers

    def snapshot() -> dict:
        snap = {}
        for name, layer in layers.items():
            snap[name] = {
                "W": full(layer.base.weight),
                "A": full(layer.lora_A),
                "B": full(layer.lora_B),
                "scale": layer.scale,
            }
            for key, p in (("A", layer.lora_A), ("B", layer.lora_B)):
                state = opt.state[p]
                snap[name][f"{key}_exp_avg"] = full(state["exp_avg"])
                snap[name][f"{key}_exp_avg_sq"] = full(state["exp_avg_sq"])
                snap[name][f"{key}_step"] = float(state["step"])
        return snap

    with torch.no_grad():
        logits_before = tr.model(tokens).detach().clone()
    reshard_(tr.model)
    before = snapshot()
    relora_reset_(layers, opt, controller.options, reset_index=1)
    with torch.no_grad():
        logits_after = tr.model(tokens).detach().clone()
    reshard_(tr.model)
    after = snapshot()
    save_checkpoint(tr, cfg, out / "relora_export")
    placements = {
        name: [str(pl) for pl in getattr(layer.lora_A, "placements", ())]
        for name, layer in layers.items()
    }
    return {
        "a_placements": placements,
        "logits_before": logits_before,
        "logits_after": logits_after,
        "before": before,
        "after": after,
        "prune_ratio": controller.options.prune_ratio,
    }


def galore_steps(info, out: Path) -> dict:
    """20 GaLore steps (refreshes at 0, 7, 14); losses and full parameters."""
    cfg = parse_config(
        [*GALORE, "--training.steps", str(GALORE_STEPS), "--job.dump_folder", str(out / "y")]
    )
    tr = build_trainer(cfg, info)
    losses = []
    for group in batches(tr, GALORE_STEPS):
        losses.append(train_step(tr, group).loss)
    params = {name: full(p) for name, p in tr.model.named_parameters()}
    with torch.no_grad():
        logits = tr.model(fixed_tokens(tr.model_args.vocab_size)).detach().clone()
    reshard_(tr.model)
    save_checkpoint(tr, cfg, out / "galore_export")
    sides = {}
    for p in tr.method.optimizer.param_groups[0]["params"]:
        sides[tuple(p.shape)] = tuple(tr.method.optimizer.state[p]["projector"].shape)
    return {"losses": losses, "params": params, "projector_shapes": sides, "logits": logits}


def loop_runs(info, out: Path) -> None:
    """The training loop itself, with TensorBoard: 2 ReLoRA resets, 3 GaLore refreshes."""
    relora = [*RELORA, "--training.steps", "10", "--relora.interval", "4"]
    relora += ["--relora.restart_warmup_steps", "2", "--training.val_every", "5"]
    train(parse_config([*relora, "--job.dump_folder", str(out / "relora_run")]), info)
    galore = [*GALORE, "--training.steps", "15", "--training.val_every", "5"]
    train(parse_config([*galore, "--job.dump_folder", str(out / "galore_run")]), info)


def resume_runs(info, out: Path) -> None:
    """12 steps straight, and resumed from the step-6 checkpoint of that run (copied).

    The resumed half crosses a ReLoRA reset (after step 8) and a projector refresh (at 9).
    """
    cases = {
        "relora": [*RELORA, "--relora.interval", "4", "--relora.restart_warmup_steps", "2"],
        "galore": [*GALORE, "--galore.update_interval", "4"],
    }
    for name, args in cases.items():
        base = [*args, "--training.steps", "12", "--training.val_every", "6"]
        base += ["--checkpoint.enable", "True", "--checkpoint.interval", "6"]
        straight = out / f"{name}_straight"
        train(parse_config([*base, "--job.dump_folder", str(straight)]), info)
        sources = {f"{name}_resumed": straight}
        two = out.parent / "2" / f"{name}_straight"
        if info.world_size == 1 and two.is_dir():  # the 2-process launch ran first
            sources[f"{name}_from2"] = two
        for target, source in sources.items():
            if info.rank == 0:
                step6 = "checkpoints/step-6"
                shutil.copytree(source / step6, out / target / step6)
            dist.barrier()
            train(parse_config([*base, "--job.dump_folder", str(out / target)]), info)


def warm_start(info, out: Path) -> None:
    """ReLoRA started from a full-rank run's checkpoint (checkpoint.initial_load_path)."""
    full_run = out / "full_run"
    args = [
        *COMMON,
        "--model.ffn_dim",
        "175",
        "--training.steps",
        "4",
        "--checkpoint.enable",
        "True",
    ]
    train(parse_config([*args, "--job.dump_folder", str(full_run)]), info)
    source = str(full_run / "checkpoints/step-4")
    args = [*RELORA, "--training.steps", "2", "--checkpoint.initial_load_path", source]
    train(parse_config([*args, "--job.dump_folder", str(out / "relora_warm")]), info)


def main() -> None:
    info = init_distributed("gloo")
    out = Path(sys.argv[1]) / str(info.world_size)
    results = {"relora": relora_merge(info, out), "galore": galore_steps(info, out)}
    loop_runs(info, out)
    resume_runs(info, out)
    warm_start(info, out)
    if info.rank == 0:
        torch.save(results, out / "results.pt")
    dist.barrier()
    shutdown()


if __name__ == "__main__":
    main()
