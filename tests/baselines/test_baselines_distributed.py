"""ReLoRA and GaLore in the trainer on one process and on two FSDP2 processes (gloo).

One launch per world size runs every check (baselines_worker.py); the tests below compare
its results with references written here and across the two world sizes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, run_torchrun

WORKER = ROOT / "tests/baselines/baselines_worker.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run_torchrun(WORKER, [str(out)], nproc=2)  # first: the 1-process launch resumes from it
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return {w: (out / str(w), torch.load(out / str(w) / "results.pt")) for w in (1, 2)}


@pytest.mark.parametrize("world", [1, 2])
def test_relora_merge_and_reinit_keep_the_logits(results, world):
    r = results[world][1]["relora"]
    diff = (r["logits_after"] - r["logits_before"]).abs().max().item()
    assert diff <= 1e-5, diff
    for name, old in r["before"].items():
        new = r["after"][name]
        assert torch.count_nonzero(old["B"]) > 0, name
        merged = old["W"] + old["scale"] * old["B"] @ old["A"]
        torch.testing.assert_close(new["W"], merged, atol=1e-7, rtol=0, msg=name)
        assert torch.count_nonzero(new["B"]) == 0, name
        assert new["A"].abs().max() <= 1 / math.sqrt(old["A"].shape[1]), name


@pytest.mark.parametrize("world", [1, 2])
def test_relora_pruning_keeps_the_requested_fraction(results, world):
    r = results[world][1]["relora"]
    kept = eligible = 0
    for name, old in r["before"].items():
        new = r["after"][name]
        for key in ("A_exp_avg", "A_exp_avg_sq", "B_exp_avg", "B_exp_avg_sq"):
            alive = old[key] != 0
            survivors = new[key] != 0
            assert not (survivors & ~alive).any(), (name, key)
            assert torch.equal(new[key][survivors], old[key][survivors]), (name, key)
            kept += survivors.sum().item()
            eligible += alive.sum().item()
        for factor in ("A", "B"):
            assert new[f"{factor}_step"] == old[f"{factor}_step"] == 3.0, name
    keep = 1 - r["prune_ratio"]
    assert eligible > 30_000
    assert abs(kept - keep * eligible) <= 5 * math.sqrt(eligible * keep * (1 - keep)) + 1, kept


def test_relora_reset_is_world_size_independent(results):
    one, two = results[1][1]["relora"], results[2][1]["relora"]
    placements = two["a_placements"]
    assert placements["layers.0.mlp.down_proj"] == ["S(0)"]  # n = 175: row-sharded fallback
    assert placements["layers.0.mlp.up_proj"] == ["S(1)"]
    torch.testing.assert_close(two["logits_after"], one["logits_after"], atol=1e-5, rtol=0)
    for name, new in one["after"].items():
        assert torch.equal(two["after"][name]["A"], new["A"]), name  # keyed draw
        for key in ("A_exp_avg", "A_exp_avg_sq", "B_exp_avg", "B_exp_avg_sq"):
            assert torch.equal(two["after"][name][key] != 0, new[key] != 0), (name, key)


def test_galore_two_processes_match_one(results):
    one, two = results[1][1]["galore"], results[2][1]["galore"]
    assert len(one["losses"]) == 20
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0]
    for name, value in one["params"].items():
        torch.testing.assert_close(two["params"][name], value, atol=5e-6, rtol=1e-4, msg=name)
    # q/k/v/o (64 x 64) and gate/up (175 x 64) project on the right, down (64 x 175) on the left.
    assert two["projector_shapes"] == {(64, 64): (8, 64), (175, 64): (8, 64), (64, 175): (64, 8)}


def scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tb"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_training_loop_runs_match_and_log_the_method_scalars(results):
    for run in ("relora_run", "galore_run"):
        s1, s2 = (json.loads((results[w][0] / run / "summary.json").read_text()) for w in (1, 2))
        assert s2["train_losses"] == pytest.approx(s1["train_losses"], rel=1e-5), run
        assert s2["final_val_loss"] == pytest.approx(s1["final_val_loss"], rel=1e-5), run
        assert s1["final_val_loss"] < s1["initial_val_loss"], run
    # Resets after steps 4 and 8 (reset_interval 4); the value logged at step s counts the
    # resets before that step's update.
    resets = scalars(results[2][0] / "relora_run", "relora/resets")
    assert resets == {s: float((s - 1) // 4) for s in range(1, 11)}
    # Projectors computed at steps 1, 8 and 15 (update_interval 7), counted with that step.
    updates = scalars(results[2][0] / "galore_run", "galore/projector_updates")
    assert updates == {s: float((s - 1) // 7 + 1) for s in range(1, 16)}


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("method", ["relora", "galore"])
def test_exact_resume_across_a_reset_and_a_projector_refresh(results, world, method):
    folder = results[world][0]
    straight = json.loads((folder / f"{method}_straight/summary.json").read_text())
    resumed = json.loads((folder / f"{method}_resumed/summary.json").read_text())
    assert sorted(int(s) for s in resumed["train_losses"]) == list(range(1, 13))
    assert resumed["train_losses"] == straight["train_losses"]
    assert resumed["val_losses"] == straight["val_losses"]


@pytest.mark.parametrize("world", [1, 2])
def test_relora_warm_start_from_a_full_rank_checkpoint(results, world):
    folder = results[world][0]
    full = json.loads((folder / "full_run/summary.json").read_text())
    warm = json.loads((folder / "relora_warm/summary.json").read_text())
    # B = 0: the adapter model computes the full-rank checkpoint's function at step 0.
    assert warm["initial_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-6)
    assert warm["final_val_loss"] < warm["initial_val_loss"]


@pytest.mark.parametrize("method", ["relora", "galore"])
def test_resume_on_one_process_from_a_two_process_checkpoint(results, method):
    two = json.loads((results[2][0] / f"{method}_straight/summary.json").read_text())
    one = json.loads((results[1][0] / f"{method}_from2/summary.json").read_text())
    assert one["train_losses"] == pytest.approx(two["train_losses"], rel=1e-5)
    assert one["val_losses"] == pytest.approx(two["val_losses"], rel=1e-5)


def exported_logits(checkpoint, output, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of a plain Llama loaded from the merged dense export of ``checkpoint``."""
    from trainer.export import export_checkpoint
    from trainer.model.args import ModelArgs
    from trainer.model.llama import Llama

    export_checkpoint(checkpoint, output, fmt="torch", log=lambda _: None)
    cfg = json.loads((output / "config.json").read_text())
    args = ModelArgs(
        dim=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg["num_key_value_heads"],
        ffn_dim=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        max_seq_len=cfg["max_position_embeddings"],
    )
    model = Llama(args)
    state = torch.load(output / "model.pt")
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    with torch.no_grad():
        return model(tokens)


@pytest.mark.parametrize("world", [1, 2])
def test_dense_export_computes_the_trained_model(results, world, tmp_path):
    from tests.baselines.baselines_worker import fixed_tokens

    folder, r = results[world]
    relora = r["relora"]["logits_after"]
    tokens = fixed_tokens(relora.shape[-1])
    for name, want in (("relora", relora), ("galore", r["galore"]["logits"])):
        checkpoint = next((folder / f"{name}_export/checkpoints").iterdir())
        got = exported_logits(checkpoint, tmp_path / name, tokens)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=name)
