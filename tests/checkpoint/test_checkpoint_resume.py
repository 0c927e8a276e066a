"""Exact resume after SIGKILL, crash in the middle of a save, and resume on 1 process.

Every run has the reference run's settings (see conftest.SWITCH): 2 processes, FSDP2,
SwitchLoRA switching every step. Faults are injected through the environment hooks of
trainer/checkpoint/faults.py, so the crash point is deterministic.
"""

from __future__ import annotations

import shutil

import pytest

from tests.checkpoint.conftest import (
    HALF,
    STEPS,
    SWITCH,
    check_ok,
    digest,
    launch,
    train_losses,
    val_losses,
)
from trainer.checkpoint.faults import KILL_AFTER_CHECKPOINT, KILL_DURING_SAVE


def test_sigkill_after_checkpoint_then_resume_is_bit_identical(reference, tmp_path):
    dump = tmp_path / "killed"
    args = [*SWITCH, "--checkpoint.interval", str(HALF), "--job.dump_folder", str(dump)]
    killed = launch(args, env={KILL_AFTER_CHECKPOINT: str(HALF)})
    assert killed.returncode != 0, "the fault hook did not kill the run"
    assert f"step {HALF + 1}/" not in killed.stdout
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == [f"step-{HALF}"]
    assert not (dump / "summary.json").exists()

    out = check_ok(launch(args))
    assert f"resumed from {dump / 'checkpoints' / f'step-{HALF}'} (step {HALF}" in out
    assert "step 1/" not in out  # nothing before the checkpoint was recomputed
    ref, got = train_losses(reference["dump"]), train_losses(dump)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(HALF + 1, STEPS + 1):
        assert got[step] == ref[step], (step, got[step], ref[step])  # bit-identical
    assert val_losses(dump) == val_losses(reference["dump"])
    assert "switched 56" in out  # SwitchLoRA switched at every resumed step


@pytest.fixture(scope="module")
def crashed_save(tmp_path_factory):
    """A run killed while writing step 6 (interval 2), then restarted in async mode."""
    dump = tmp_path_factory.mktemp("crash") / "run"
    args = [*SWITCH, "--checkpoint.interval", "2", "--job.dump_folder", str(dump)]
    crashed = launch(args, env={KILL_DURING_SAVE: "6"})
    root = dump / "checkpoints"
    after_crash = {
        "returncode": crashed.returncode,
        "folders": sorted(p.name for p in root.iterdir()),
        "partial_files": sorted(p.name for p in (root / "step-6.partial").iterdir()),
        "step4": digest(root / "step-4"),
    }
    snapshot = tmp_path_factory.mktemp("crash") / "step-4-copy"
    shutil.copytree(root / "step-4", snapshot)
    out = check_ok(launch([*args, "--checkpoint.async_mode", "async"]))
    return {"dump": dump, "after_crash": after_crash, "log": out, "step4_copy": snapshot}


def test_crash_during_save_keeps_previous_checkpoint(crashed_save):
    after = crashed_save["after_crash"]
    assert after["returncode"] != 0
    assert after["folders"] == ["step-2", "step-4", "step-6.partial"]
    assert (
        ".metadata" not in after["partial_files"] and "manifest.json" not in after["partial_files"]
    )
    assert any(name.endswith(".distcp") for name in after["partial_files"])  # died mid-save
    assert digest(crashed_save["step4_copy"]) == after["step4"]


def test_restart_after_crash_resumes_from_previous_complete_and_finishes(crashed_save, reference):
    dump, out = crashed_save["dump"], crashed_save["log"]
    assert "ignoring unfinished folders step-6.partial" in out
    assert f"resumed from {dump / 'checkpoints' / 'step-4'} (step 4" in out
    ref, got = train_losses(reference["dump"]), train_losses(dump)
    assert got == ref  # history before the crash plus bit-identical steps 5..8
    # keep_latest 2: the rewritten step 6 and the final step 8; the partial is gone.
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == ["step-6", "step-8"]
    assert "training blocked" in out


def test_async_checkpoint_resumes_on_one_process(crashed_save, reference, tmp_path):
    """The asynchronously written step 6 of 2 processes continues on 1 process."""
    dump = tmp_path / "one"
    shutil.copytree(crashed_save["dump"], dump)
    shutil.rmtree(dump / "checkpoints" / "step-8")
    (dump / "summary.json").unlink()
    out = check_ok(
        launch([*SWITCH, "--checkpoint.interval", "2", "--job.dump_folder", str(dump)], nproc=1)
    )
    assert "(step 6, written by 2 processes)" in out
    ref, got = train_losses(reference["dump"]), train_losses(dump)
    for step in (7, 8):
        assert got[step] == pytest.approx(ref[step], rel=1e-5), step
    assert val_losses(dump)[STEPS] == pytest.approx(val_losses(reference["dump"])[STEPS], rel=1e-5)
