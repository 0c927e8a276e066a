"""The named suites: ``cpu-small`` (CPU, local corpus), the paper's GPU sizes and ``micro``.

Every run of a suite trains the same model on the same data for the same tokens with the same
batch and evaluation; a method's recipe changes only what the method itself prescribes
(learning rate, clipping, schedule shape, rank, ReLoRA/GaLore settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.config import load_toml
from trainer.reproduce.corpus import prepare_shakespeare_bpe
from trainer.reproduce.spec import Recipe, Suite
from trainer.reproduce.switch_budget import steps_for_switches

REPO = Path(__file__).resolve().parents[2]

CPU_SMALL_STEPS = 480
"""cpu-small optimizer steps per run: 480 x 16 x 256 = 1.97M tokens (about 1.3 passes over the
1.5M training tokens). Measured CPU time per step and process (2 processes, 1 thread each):
full 0.75 s, SwitchLoRA 0.84 s, so the five methods take about 35 minutes on 2 idle cores."""


def _cpu_small_data(output: Path) -> dict[str, Any]:
    return prepare_shakespeare_bpe(output / "data")


def cpu_small() -> Suite:
    """~5M parameters (dim 256, 4 layers, 4k BPE vocabulary), 42 Shakespeare texts, 2 CPU cores."""
    steps = CPU_SMALL_STEPS
    common = {
        "model.flavor": "small",
        "training.steps": steps,
        "training.global_batch_size": 16,
        "training.seq_len": 256,
        "training.max_norm": 1.0,
        "training.val_every": steps // 10,
        "training.val_batches": 8,
        "lr_schedule.warmup_steps": steps // 20,
        "lr_schedule.decay": "cosine",
        "lr_schedule.min_lr_ratio": 0.0,
        "checkpoint.enable": True,
        "checkpoint.interval": steps // 4,
        "checkpoint.keep_latest": 1,
        "metrics.log_every": 20,
        "metrics.rank_diagnostic_every": steps // 4,
        "method.rank": 64,
    }
    recipes = {
        "full": Recipe("full", 3e-3),
        "lora": Recipe("lora", 1e-2),
        "relora": Recipe(
            "relora",
            6e-3,
            overrides={
                "relora.interval": steps // 4,
                "relora.restart_warmup_steps": steps // 60,
                "relora.alpha": 16.0,  # s = 16 / 64 = 0.25, ReLoRA's 32 / 128
                "lr_schedule.min_lr_ratio": 0.1,
            },
        ),
        "galore": Recipe(
            "galore",
            1e-2,
            overrides={
                "training.max_norm": 0.0,
                "lr_schedule.warmup_steps": steps // 10,
                "lr_schedule.min_lr_ratio": 0.1,
                "galore.update_interval": 200,
                "galore.scale": 0.25,
            },
        ),
        "switchlora": Recipe("switchlora", 1e-2),
    }
    return Suite(
        name="cpu-small",
        description=(
            "LLaMA dim 256, 4 layers, FFN 688, 4k byte-level BPE (about 5.3M dense parameters); "
            "39 Shakespeare texts for training, 3 plays held out; "
            f"{steps} steps x 16 x 256 tokens; rank 64 for every low-rank method"
        ),
        recipes=recipes,
        common=common,
        nproc=2,
        prepare=_cpu_small_data,
        seconds_per_step={  # CPU seconds per step and process (full, switchlora measured)
            "full": 0.75,
            "lora": 0.80,
            "relora": 0.80,
            "galore": 0.80,
            "switchlora": 0.84,
        },
        seconds_per_run=40.0,
    )


CPU_SWITCH_MIN_SWITCHES = 10
"""cpu-switch: every adapter vector index switches at least this many times in a run."""

CPU_SWITCH_INTERVAL0 = 10.0
"""cpu-switch's initial interval: the least that 5 freeze steps allow (the paper's is 40)."""

CPU_SWITCH_DESCENT_RATIO = 0.1
"""cpu-switch keeps the paper's decay: the frequency falls to 0.3x at 10 % of the run."""

CPU_SWITCH_STEPS = steps_for_switches(
    CPU_SWITCH_MIN_SWITCHES, CPU_SWITCH_INTERVAL0, CPU_SWITCH_DESCENT_RATIO
)
"""1250: under interval(t) = 10 / 0.3^((t+1) / (0.1 T)) each index switches sum_t 1/interval(t)
= 10.3 times (trainer/reproduce/switch_budget.py); the paper's interval0 of 40 would need
4,850 steps for the same count, and gets about 1 switch per index in cpu-small's 480."""

CPU_SWITCH_SECONDS_PER_STEP = {
    "full": 0.074,
    "lora": 0.098,
    "relora": 0.095,
    "galore": 0.077,
    "switchlora": 0.079,
}
"""Seconds per step and process (2 processes, one thread each) at 8 x 128 tokens: the fastest
30-second progress window of each method's runs in the suite's first full run (2 cores, torch
2.13 CPU, shared with niced test jobs for most of it, so these are upper bounds for idle cores).
The 30 runs then take about 67 minutes."""


def cpu_switch() -> Suite:
    """The tiny model long enough for switching to happen: each vector index switches >= 10 times.

    An lr sweep (x0.5, x1, x2) for every method, the best lr on validation trained with two more
    seeds, and the ablations candidates (pool with and without write-back, seeded), freeze
    (0 and 5) and precision (pure_bf16 against bf16 compute with fp32 master weights).
    """
    steps = CPU_SWITCH_STEPS
    common = {
        "model.flavor": "tiny",
        "data.source": "embedded:shakespeare",
        "data.tokenizer": "byte",
        "training.steps": steps,
        "training.global_batch_size": 8,
        "training.seq_len": 128,
        "training.max_norm": 1.0,
        "training.val_every": steps // 10,
        "training.val_tokens": 16 * 1024,
        "training.final_val_tokens": 48 * 1024,  # of the 51,456 the split holds
        "lr_schedule.warmup_steps": 50,
        "lr_schedule.decay": "cosine",
        "lr_schedule.min_lr_ratio": 0.1,
        "checkpoint.enable": True,
        "checkpoint.interval": steps // 5,
        "checkpoint.keep_latest": 1,
        "metrics.log_every": 50,
        "metrics.rank_diagnostic_every": steps // 5,
        "method.rank": 32,
        "switchlora.interval0": CPU_SWITCH_INTERVAL0,
        "switchlora.descent_ratio": CPU_SWITCH_DESCENT_RATIO,
        "switchlora.freeze_steps": 5,
    }
    recipes = {
        "full": Recipe("full", 3e-3),
        "lora": Recipe("lora", 1e-2),
        "relora": Recipe(
            "relora",
            6e-3,
            overrides={
                "relora.interval": steps // 5,
                "relora.restart_warmup_steps": 25,
                "relora.alpha": 8.0,  # s = 8 / 32 = 0.25, ReLoRA's 32 / 128
            },
        ),
        "galore": Recipe(
            "galore",
            1e-2,
            overrides={"training.max_norm": 0.0, "galore.update_interval": 200},
        ),
        "switchlora": Recipe("switchlora", 1e-2),
    }
    return Suite(
        name="cpu-switch",
        description=(
            "LLaMA dim 128, 4 layers (about 1M parameters), byte tokenizer, embedded Shakespeare; "
            f"{steps} steps x 8 x 128 tokens; rank 32; SwitchLoRA interval0 "
            f"{CPU_SWITCH_INTERVAL0:g}, descent ratio {CPU_SWITCH_DESCENT_RATIO:g}: each vector "
            f"index switches at least {CPU_SWITCH_MIN_SWITCHES} times"
        ),
        recipes=recipes,
        common=common,
        nproc=2,
        lr_multipliers=(0.5, 2.0),
        seeds=(1, 2),
        default_ablations=("candidates", "freeze", "precision"),
        seconds_per_step=CPU_SWITCH_SECONDS_PER_STEP,
        seconds_per_run=30.0,
    )


def micro() -> Suite:
    """A few steps of the debug model on the embedded corpus: tests of the tool itself."""
    return Suite(
        name="micro",
        description="debug model (dim 64, 2 layers), byte tokenizer, 6 steps x 4 x 32 tokens",
        recipes={
            "full": Recipe("full", 3e-3),
            "lora": Recipe("lora", 1e-2),
            "relora": Recipe(
                "relora",
                6e-3,
                overrides={"relora.interval": 3, "relora.restart_warmup_steps": 1},
            ),
            "galore": Recipe(
                "galore", 1e-2, overrides={"galore.update_interval": 3, "training.max_norm": 0.0}
            ),
            "switchlora": Recipe("switchlora", 1e-2),
        },
        common={
            "model.flavor": "debug",
            "data.source": "embedded:shakespeare",
            "data.tokenizer": "byte",
            "training.steps": 6,
            "training.global_batch_size": 4,
            "training.seq_len": 32,
            "training.val_every": 3,
            "training.val_batches": 1,
            "lr_schedule.warmup_steps": 1,
            "checkpoint.enable": True,
            "checkpoint.interval": 2,
            "checkpoint.keep_latest": 1,
            "metrics.log_every": 1,
            "metrics.rank_diagnostic_every": 3,
            "method.rank": 4,
        },
        nproc=1,
    )


def llama(size: str) -> Suite:
    """The paper's setup at one size: configs/llama<size>_<method>.toml on C4 with a 32k tokenizer.

    Every method gets the SwitchLoRA config's steps, batch, sequence length and evaluation and
    the full-rank config's micro-batch (GaLore's own recipe uses 256-token sequences and 512
    per batch; here it sees the same tokens as the others), and keeps the rest of its own
    config (lr, schedule, clipping, rank, ReLoRA/GaLore settings; GaLore warms up for 10 %).
    """
    files = {
        m: f"configs/llama{size}_{'switch' if m == 'switchlora' else m}.toml"
        for m in ("full", "lora", "relora", "galore", "switchlora")
    }
    ref = load_toml(REPO / files["switchlora"])
    full = load_toml(REPO / files["full"])
    t = ref.training
    common = {
        "training.steps": t.steps,
        "training.global_batch_size": t.global_batch_size,
        "training.local_batch_size": full.training.local_batch_size,
        "training.seq_len": t.seq_len,
        "training.val_every": t.val_every,
        "training.val_batches": t.val_batches,
        "checkpoint.enable": True,
        "metrics.rank_diagnostic_every": t.val_every,
    }
    recipes = {}
    for method, path in files.items():
        cfg = load_toml(REPO / path)
        overrides = {"lr_schedule.warmup_steps": t.steps // 10} if method == "galore" else {}
        recipes[method] = Recipe(method, cfg.optimizer.lr, base=path, overrides=overrides)
    return Suite(
        name=f"llama{size}",
        description=(
            f"LLaMA {size.upper()} on C4 with a 32k tokenizer: {t.steps} steps x "
            f"{t.global_batch_size} x {t.seq_len} tokens (configs/llama{size}_*.toml)"
        ),
        recipes=recipes,
        common=common,
        nproc=8,
    )


SUITES = {
    "cpu-small": cpu_small,
    "cpu-switch": cpu_switch,
    "llama130m": lambda: llama("130m"),
    "llama350m": lambda: llama("350m"),
    "llama1b": lambda: llama("1b"),
    "micro": micro,
}
"""Suite builders by name (built on demand: the GPU suites read their TOML files)."""


def get_suite(name: str) -> Suite:
    """The suite called ``name``; ValueError naming the known ones otherwise."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]()
