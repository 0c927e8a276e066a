"""The whole training loop against a plain loop written here, fed the same batches.

The reference is ``transformers.LlamaForCausalLM`` holding the trainer's initial weights,
``torch.optim.AdamW``, ``torch.nn.utils.clip_grad_norm_`` and the LR schedule written out;
for LoRA, A and B are plain tensors beside a frozen W. The trainer runs as a user runs it
(``scripts/train.py``, 1 or 2 processes) and its logged per-step losses must match the
reference within 1e-5 (fp32). The settings make every term matter: AdamW eps 1e-3 is large
against sqrt(v), so the update scales with the gradient and a clip at 0.05 (the norm is
about 1) changes the losses by far more than 1 % (checked below); weight decay is on.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT, launch_env, train_command
from trainer.cli import parse_config
from trainer.data.loader import build_data
from trainer.train import build_trainer

transformers = pytest.importorskip("transformers")

STEPS = 12
PEAK_LR = 3e-3
WARMUP = 3
MIN_LR_RATIO = 0.1
EPS = 1e-3
WEIGHT_DECAY = 0.1
MAX_NORM = 0.05
GLOBAL_BATCH = 8
SEQ_LEN = 64

ARGS = [
    "--config", str(ROOT / "configs/tiny_full.toml"),
    "--model.flavor", "debug",
    "--training.steps", str(STEPS),
    "--training.seq_len", str(SEQ_LEN),
    "--training.global_batch_size", str(GLOBAL_BATCH),
    "--training.max_norm", str(MAX_NORM),
    "--training.val_batches", "1",
    "--training.val_every", "0",
    "--optimizer.lr", str(PEAK_LR),
    "--optimizer.eps", str(EPS),
    "--optimizer.weight_decay", str(WEIGHT_DECAY),
    "--lr_schedule.warmup_steps", str(WARMUP),
    "--lr_schedule.decay", "cosine",
    "--lr_schedule.min_lr_ratio", str(MIN_LR_RATIO),
    "--metrics.log_every", "1",
    "--metrics.tensorboard", "False",
    "--checkpoint.enable", "False",
]  # fmt: skip
LORA = ["--method.name", "lora", "--method.rank", "8", "--method.alpha", "2.0"]


def lr_at(step: int) -> float:
    """Linear warm-up to the peak, then cosine down to MIN_LR_RATIO of it at the last step."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return PEAK_LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def trainer_losses(tmp_path, extra: list[str], nproc: int) -> list[float]:
    """Per-step training losses logged by scripts/train.py (summary.json)."""
    folder = tmp_path / f"run{nproc}"
    cmd = [*train_command(ROOT / "scripts/train.py", nproc), *ARGS, *extra]
    cmd += ["--job.dump_folder", str(folder)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=launch_env(), cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["skipped_steps"] == 0
    return [summary["train_losses"][str(step)] for step in range(1, STEPS + 1)]


def initial_state(extra: list[str]) -> tuple[dict[str, torch.Tensor], object]:
    """The trainer's step-0 parameters (full tensors) and its model sizes."""
    cfg = parse_config([*ARGS, *extra, "--job.dump_folder", "unused"])
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        state = {
            name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for name, p in tr.model.named_parameters()
        }
        return state, tr.model_args
    finally:
        shutdown()


def global_batches(extra: list[str], world: int) -> list[dict[str, torch.Tensor]]:
    """The sequences of each step over all ranks (the loss is a mean over all of them)."""
    cfg = parse_config([*ARGS, *extra, "--job.dump_folder", "unused"])
    iters = [
        iter(
            build_data(
                cfg.data.source,
                cfg.data.tokenizer,
                SEQ_LEN,
                GLOBAL_BATCH // world,
                rank,
                world,
                cfg.job.seed,
                val_fraction=cfg.data.val_fraction,
            ).train
        )
        for rank in range(world)
    ]
    steps = []
    for _ in range(STEPS):
        parts = [next(it) for it in iters]
        steps.append({k: torch.cat([p[k] for p in parts]) for k in ("input", "target")})
    return steps


def hf_llama(args, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A LlamaForCausalLM of the trainer's sizes holding ``weights`` (trainer names)."""
    config = transformers.LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps,
        rope_theta=args.rope_theta,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    model = transformers.LlamaForCausalLM(config).float()
    renamed = {k if k == "lm_head.weight" else f"model.{k}": v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert not unexpected and not [k for k in missing if "rotary" not in k], (missing, unexpected)
    return model


class PlainLoRA(nn.Module):
    """y = x W^T + s (x A^T) B^T with W a frozen buffer and A, B plain parameters."""

    def __init__(self, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.scale * (x @ self.a.T) @ self.b.T


def lora_llama(args, state: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """The HF model with every adapted projection replaced by a :class:`PlainLoRA`."""
    paths = {k.removesuffix(".lora_A") for k in state if k.endswith(".lora_A")}
    dense = {k: v for k, v in state.items() if not k.startswith(tuple(paths))}
    for path in paths:  # a placeholder for load_state_dict; replaced right below
        dense[f"{path}.weight"] = state[f"{path}.base.weight"]
    model = hf_llama(args, dense)
    for path in paths:
        parent, _, leaf = f"model.{path}".rpartition(".")
        layer = PlainLoRA(
            state[f"{path}.base.weight"], state[f"{path}.lora_A"], state[f"{path}.lora_B"], scale
        )
        setattr(model.get_submodule(parent), leaf, layer)
    for name, p in model.named_parameters():
        assert p.requires_grad, name
    return model


def reference_losses(model: nn.Module, batches, clip: bool) -> list[float]:
    """The plain loop: forward, mean token loss, backward, clip, schedule, AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=PEAK_LR, eps=EPS, weight_decay=WEIGHT_DECAY)
    losses = []
    for step, batch in enumerate(batches):
        logits = model(input_ids=batch["input"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch["target"].flatten())
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def check_against_reference(trainer: list[float], build, batches) -> None:
    clipped = reference_losses(build(), batches, clip=True)
    unclipped = reference_losses(build(), batches, clip=False)
    worst = max(abs(a - b) for a, b in zip(trainer, clipped))
    assert worst < 1e-5, list(zip(trainer, clipped))
    # The clip binds: leaving it out moves the losses by more than 1 %.
    moved = max(abs(a - b) / b for a, b in zip(unclipped, clipped))
    assert moved > 0.01, moved


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_full_rank_matches_plain_loop(tmp_path, nproc):
    torch.manual_seed(0)
    state, args = initial_state([])
    batches = global_batches([], nproc)
    trainer = trainer_losses(tmp_path, [], nproc)
    check_against_reference(trainer, lambda: hf_llama(args, state), batches)


@pytest.mark.slow
def test_lora_matches_plain_loop(tmp_path):
    state, args = initial_state(LORA)
    assert any(k.endswith("lora_A") for k in state)
    batches = global_batches(LORA, 1)
    trainer = trainer_losses(tmp_path, LORA, 1)
    check_against_reference(trainer, lambda: lora_llama(args, state, 2.0 / 8), batches)
