"""Shared runs for the checkpoint tests: a few small 2-process SwitchLoRA jobs, run once.

All runs share the same model, data and method settings (SwitchLoRA rank 8 switching every
step, debug model, seq 64), so their losses must agree bit for bit however they were
interrupted. Fixtures are session-scoped: each torchrun launch costs several seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, launch_env, train_command

STEPS = 8
HALF = 4

COMMON = [
    "--config",
    str(ROOT / "configs/tiny_switch.toml"),
    "--model.flavor",
    "debug",
    "--training.steps",
    str(STEPS),
    "--training.seq_len",
    "64",
    "--training.global_batch_size",
    "8",
    "--training.val_batches",
    "2",
    "--metrics.log_every",
    "1",
    "--metrics.tensorboard",
    "False",
    "--lr_schedule.warmup_steps",
    "2",
    "--checkpoint.enable",
    "True",
]
"""Model, data, schedule and checkpoint flags shared by every run."""

SWITCH = [
    *COMMON,
    "--method.name",
    "switchlora",
    "--method.rank",
    "8",
    "--switchlora.interval0",
    "4",
    "--switchlora.freeze_steps",
    "1",
    "--switchlora.fixed_interval",
    "True",
]
"""Training flags of every run (SwitchLoRA switching 2 of 8 vectors per factor every step)."""


def launch(
    args: list[str], nproc: int = 2, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run scripts/train.py (torchrun for nproc > 1) and return the finished process."""
    cmd = train_command(ROOT / "scripts/train.py", nproc)
    full_env = launch_env(env)
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=600, env=full_env, cwd=ROOT
    )


def check_ok(proc: subprocess.CompletedProcess) -> str:
    """The output of a run that must have succeeded."""
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-5000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc.stdout


def train_losses(dump: Path) -> dict[int, float]:
    """train/loss per step from a finished run's summary.json."""
    summary = json.loads((dump / "summary.json").read_text())
    return {int(k): v for k, v in summary["train_losses"].items()}


def val_losses(dump: Path) -> dict[int, float]:
    """val/loss per step from a finished run's summary.json."""
    summary = json.loads((dump / "summary.json").read_text())
    return {int(k): v for k, v in summary["val_losses"].items()}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative paths)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted 2-process run with checkpoints at steps 4 and 8."""
    dump = tmp_path_factory.mktemp("ckpt") / "reference"
    out = check_ok(
        launch([*SWITCH, "--checkpoint.interval", str(HALF), "--job.dump_folder", str(dump)])
    )
    return {"dump": dump, "log": out, "digest": digest(dump / "checkpoints")}


def full_args(dump: Path) -> list[str]:
    """Flags of a full-rank run of the same model and data."""
    return [*COMMON, "--method.name", "full", "--job.dump_folder", str(dump)]


@pytest.fixture(scope="session")
def probe(reference, tmp_path_factory) -> dict:
    """One single-process probe over the reference checkpoints (tests/checkpoint/probe.py).

    Cases: resume-and-evaluate on 1 process (reshard), model-only loads across methods,
    and every load error (shape, method, missing, partial, corrupt).
    """
    base = tmp_path_factory.mktemp("probe")
    ref = reference["dump"]
    step8 = ref / "checkpoints" / f"step-{STEPS}"
    corrupt = base / "corrupt"
    shutil.copytree(ref, corrupt)
    victim = sorted((corrupt / "checkpoints" / f"step-{STEPS}").glob("*.distcp"))[-1]
    victim.write_bytes(victim.read_bytes()[:-100])
    partial = base / f"step-{STEPS}.partial"
    shutil.copytree(step8, partial)
    (partial / "manifest.json").unlink()
    switch_flags = [*SWITCH, "--job.dump_folder"]
    cases = [
        {"name": "reshard", "args": [*switch_flags, str(ref)], "eval": True, "logits": True},
        {
            "name": "full_from_switch",
            "args": [*full_args(base / "f"), "--checkpoint.initial_load_path", str(step8)],
            "eval": True,
            "save_to": str(base / "dense"),
        },
        {
            "name": "switch_from_dense",
            "args": [
                *switch_flags,
                str(base / "s"),
                "--checkpoint.initial_load_path",
                str(base / "dense"),
            ],
            "eval": True,
        },
        {"name": "resume_other_dim", "args": [*switch_flags, str(ref), "--model.dim", "128"]},
        {"name": "resume_other_rank", "args": [*switch_flags, str(ref), "--method.rank", "4"]},
        {"name": "resume_other_method", "args": full_args(ref)},
        {"name": "resume_corrupt", "args": [*switch_flags, str(corrupt)]},
        {
            "name": "resume_missing_step",
            "args": [*switch_flags, str(ref), "--checkpoint.load_step", "5"],
        },
        {
            "name": "init_other_layers",
            "args": [
                *switch_flags,
                str(base / "x"),
                "--model.n_layers",
                "3",
                "--checkpoint.initial_load_path",
                str(step8),
            ],
        },
        {
            "name": "init_partial",
            "args": [
                *switch_flags,
                str(base / "y"),
                "--checkpoint.initial_load_path",
                str(partial),
            ],
        },
    ]
    spec = base / "spec.json"
    spec.write_text(json.dumps(cases))
    result = base / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/checkpoint/probe.py"), str(spec), str(result)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    check_ok(proc)
    return {
        "results": json.loads(result.read_text()),
        "logits": f"{result}.reshard.pt",
        "corrupt_digest": digest(corrupt / "checkpoints"),
        "corrupt": corrupt,
        "partial": partial,
        "partial_digest": digest(partial),
        "log": proc.stdout,
    }


TOKENIZER_STEPS = 4
"""Steps of the single-process runs with a BPE or SentencePiece tokenizer."""


def shakespeare_lines(limit: int = 20000) -> list[str]:
    """Non-empty lines of the embedded corpus (tokenizer training text)."""
    from trainer.data.embedded import load_embedded_documents

    docs = load_embedded_documents("embedded:shakespeare")
    return [line for doc in docs for line in doc.splitlines() if line.strip()][:limit]


def train_bpe(path: Path, vocab_size: int = 400) -> Path:
    """A tiny byte-level BPE tokenizer.json with an <|endoftext|> token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(shakespeare_lines(), trainer)
    tok.save(str(path))
    return path


def train_sentencepiece(prefix: Path, vocab_size: int = 800) -> Path:
    """A tiny SentencePiece BPE model (byte fallback, default nmt_nfkc normalization)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(shakespeare_lines()),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def tokenizer_run(base: Path, tokenizer: Path) -> dict:
    """A single-process SwitchLoRA run of TOKENIZER_STEPS steps with ``tokenizer``; afterwards
    the tokenizer file is moved away, so everything downstream must use the checkpoint's copy."""
    dump = base / "run"
    check_ok(
        launch(
            [
                *SWITCH,
                "--training.steps",
                str(TOKENIZER_STEPS),
                "--checkpoint.interval",
                str(TOKENIZER_STEPS),
                "--data.tokenizer",
                str(tokenizer),
                "--job.dump_folder",
                str(dump),
            ],
            nproc=1,
        )
    )
    moved = base / ("moved" + tokenizer.suffix)
    tokenizer.rename(moved)
    return {
        "dump": dump,
        "step": dump / "checkpoints" / f"step-{TOKENIZER_STEPS}",
        "original": tokenizer,
        "moved": moved,
    }


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory) -> dict:
    """A run with a byte-level BPE tokenizer.json (vocab 400), its original file moved away."""
    pytest.importorskip("tokenizers")
    base = tmp_path_factory.mktemp("bpe_run")
    return tokenizer_run(base, train_bpe(base / "tokenizer.json"))


@pytest.fixture(scope="session")
def sp_run(tmp_path_factory) -> dict:
    """A run with a SentencePiece .model tokenizer (vocab 800), its original file moved away."""
    pytest.importorskip("sentencepiece")
    base = tmp_path_factory.mktemp("sp_run")
    return tokenizer_run(base, train_sentencepiece(base / "sp"))
