"""An interrupted suite resumes: finished runs are skipped, an unfinished one continues."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.checkpoint.faults import KILL_AFTER_CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]


def reproduce(output: Path, *args: str, env: dict[str, str] | None = None):
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--suite", "micro"]
    # One lr per method: this test is about resuming, not the sweep.
    cmd += ["--output", str(output), "--progress-every", "0", "--no-lr-sweep", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env, cwd=ROOT)


def attempts(run: Path) -> list[dict]:
    return json.loads((run / "attempts.json").read_text())


@pytest.mark.slow
def test_interrupted_suite_resumes_without_retraining(tmp_path):
    out = tmp_path / "micro"
    full, sw = out / "runs" / "full", out / "runs" / "switchlora"

    first = reproduce(out, "--methods", "full")
    assert first.returncode == 0, first.stdout + first.stderr
    summary_bytes = (full / "summary.json").read_bytes()
    summary_mtime = (full / "summary.json").stat().st_mtime_ns

    # The second invocation dies inside the SwitchLoRA run right after its step-4 checkpoint
    # (SIGKILL of the trainer, as a machine failure would); the suite reports it and fails.
    second = reproduce(out, "--methods", "full", "switchlora", env={KILL_AFTER_CHECKPOINT: "4"})
    assert second.returncode == 1, second.stdout + second.stderr
    assert "skip full: finished" in second.stdout
    assert "switchlora: FAILED" in second.stdout
    assert not (sw / "summary.json").exists()
    assert (sw / "checkpoints" / "step-4").is_dir()

    third = reproduce(out, "--methods", "full", "switchlora")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "skip full: finished" in third.stdout
    assert "switchlora (lr 0.01): resuming from its checkpoint" in third.stdout
    # The finished run was never launched again; the interrupted one continued from step 4.
    assert len(attempts(full)) == 1
    assert (full / "summary.json").read_bytes() == summary_bytes
    assert (full / "summary.json").stat().st_mtime_ns == summary_mtime
    sw_attempts = attempts(sw)
    assert [a["exit_code"] == 0 for a in sw_attempts] == [False, True]
    last_attempt = (sw / "train.log").read_text().rsplit("\n=== ", 1)[1]
    assert "resumed from" in last_attempt and "step-4" in last_attempt
    assert "step 0 | val loss" not in last_attempt  # no fresh start

    results = json.loads((out / "results.json").read_text())
    assert results["best"] == {"full": "full", "switchlora": "switchlora"}
    for name in ("full", "switchlora"):
        run = results["runs"][name]
        assert run["status"] == "finished"
        assert [t for t, _ in run["val_curve"]] == [0, 3 * 128, 6 * 128]
        assert run["optimizer_state_bytes"] > 0 and run["tokens_per_s"] > 0
        assert run["rank"]["step"] == 6
    sw_rank = results["runs"]["switchlora"]["rank"]
    assert sw_rank["numerical_rank_frac"] < results["runs"]["full"]["rank"]["numerical_rank_frac"]
    report = (out / "report.md").read_text()
    assert "| full | 0.003 |" in report and "| switchlora | 0.01 |" in report
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "val_loss.png").stat().st_size > 0
    assert list((sw / "tb").glob("events.out.tfevents.*"))
