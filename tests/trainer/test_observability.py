"""[profiling] traces, per-device throughput figures, and the offline Weights & Biases run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.config_checks import check_config
from trainer.train import run


def _cfg(dump, *flags: str):
    return parse_config(
        [
            "--config", str(ROOT / "configs/tiny_full.toml"),
            "--model.flavor", "debug",
            "--training.seq_len", "32",
            "--training.global_batch_size", "4",
            "--training.steps", "4",
            "--training.val_batches", "1",
            "--lr_schedule.warmup_steps", "1",
            "--metrics.log_every", "2",
            "--checkpoint.enable", "False",
            "--job.dump_folder", str(dump),
            *flags,
        ]
    )  # fmt: skip


def test_profiler_traces_the_configured_steps_and_per_device_figures(tmp_path, capsys):
    dump = tmp_path / "run"
    run(_cfg(dump, "--profiling.enable_profiling", "True", "--profiling.profile_freq", "2"))
    traces = sorted(p.relative_to(dump).as_posix() for p in dump.glob("profile_trace/*/*"))
    assert traces == [
        "profile_trace/iteration_2/rank0_trace.json",
        "profile_trace/iteration_4/rank0_trace.json",
    ]
    events = json.loads((dump / traces[0]).read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::mm") for e in events)
    assert not (dump / "memory_snapshot").exists()  # CPU: no CUDA memory snapshots
    out = capsys.readouterr().out
    step_lines = [line for line in out.splitlines() if line.startswith("step 2/4 |")]
    assert step_lines and "tok/s/dev" in step_lines[0] and "TFLOP/s/dev" in step_lines[0]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(dump / "tb"))
    acc.Reload()
    total = [e.value for e in acc.Scalars("perf/tokens_per_s")]
    per_device = [e.value for e in acc.Scalars("perf/tokens_per_s_per_device")]
    assert per_device == pytest.approx(total)  # one process: the device is the world
    assert len(acc.Scalars("perf/tflops_per_device")) == 2


def test_no_profiling_writes_no_trace(tmp_path):
    dump = tmp_path / "run"
    run(_cfg(dump, "--metrics.tensorboard", "False"))
    assert not (dump / "profile_trace").exists()


def test_wandb_offline_writes_a_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    dump = tmp_path / "run"
    run(_cfg(dump, "--metrics.wandb", "True", "--metrics.tensorboard", "False"))
    runs = list((dump / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("*.wandb")
    records = log.read_bytes()  # protobuf records: the logged keys appear as plain UTF-8
    for tag in ("train/loss", "perf/tokens_per_s_per_device", "val/loss"):
        assert tag.encode() in records, tag


def test_bad_profiling_and_missing_wandb_fail_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="profiling.profile_freq"):
        check_config(_cfg(tmp_path, "--profiling.profile_freq", "0"), 1)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="metrics.wandb: the wandb package"):
        check_config(_cfg(tmp_path, "--metrics.wandb", "True"), 1)
