"""training.val_tokens: exactly that many target tokens are evaluated, on 1 and 2 processes.

The reference runs the model on the validation windows in order, one at a time, and sums the
cross-entropy of the first BUDGET targets of that stream.
"""

from __future__ import annotations

import json

import pytest
import torch.nn.functional as F

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT, run_torchrun
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.data.padded import IGNORE_INDEX
from trainer.train import build_trainer, evaluation_sums

SEQ = 32
BUDGET = 4 * SEQ + 7  # five windows, the last one cut; on 2 ranks one rank gets fewer
ARGS = [
    "--config", str(ROOT / "configs/tiny_full.toml"),
    "--model.flavor", "debug",
    "--training.seq_len", str(SEQ),
    "--training.global_batch_size", "2",
    "--checkpoint.enable", "False",
    "--metrics.tensorboard", "False",
]  # fmt: skip
WORKER = ROOT / "tests/data/val_budget_worker.py"


def _reference(tr, budget: int) -> tuple[float, int]:
    """Sum of the cross-entropy of the first ``budget`` real targets, window by window."""
    tr.model.eval()
    total, count, i = 0.0, 0, 0
    while count < budget:
        window = tr.data.val_windows[i]
        targets = window[1:]
        real = int((targets != IGNORE_INDEX).sum())  # padding sits at the end of a window
        take = min(real, budget - count)
        logits = tr.model(window[:-1].clamp_min(0)[None]).float()[0]
        total += F.cross_entropy(logits[:take], targets[:take], reduction="sum").item()
        count += take
        i += 1
    return total, count


@pytest.mark.parametrize("packing", ["packed", "pad"])
def test_val_tokens_evaluates_exactly_that_many_on_one_and_two_processes(
    tmp_path, packing, prepare_data_cli
):
    args = [*ARGS, "--data.packing", packing, "--job.dump_folder", str(tmp_path / "run")]
    if packing == "pad":  # many short documents (the embedded corpus has a few long ones)
        lines = tmp_path / "lines.txt"
        lines.write_text("".join(f"line {i} " + "ab" * (i % 23) + "\n" for i in range(60)))
        prepare_data_cli.main(
            ["--input", str(lines), "--txt-lines", "--output", str(tmp_path / "shards"),
             "--val-fraction", "0.5"]
        )  # fmt: skip
        args += ["--data.source", str(tmp_path / "shards")]
    info = init_distributed()
    try:
        tr = build_trainer(parse_config(args), info)
        want_sum, want_count = _reference(tr, BUDGET)
        got_sum, got_count = evaluation_sums(tr, BUDGET)
    finally:
        shutdown()
    assert want_count == got_count == BUDGET
    assert got_sum == pytest.approx(want_sum, rel=1e-5)
    if packing == "pad":
        return
    out = tmp_path / "two.json"
    run_torchrun(WORKER, [str(out), str(BUDGET), *args], nproc=2)
    two = json.loads(out.read_text())
    assert two["tokens"] == BUDGET
    assert two["loss_sum"] == pytest.approx(want_sum, rel=1e-5)


def test_a_budget_larger_than_the_validation_split_is_a_config_error(tmp_path):
    args = [*ARGS, "--training.final_val_tokens", str(10**9), "--job.dump_folder", str(tmp_path)]
    info = init_distributed()
    try:
        with pytest.raises(
            ConfigError, match=r"training.final_val_tokens: 1,000,000,000 tokens exceed"
        ):
            build_trainer(parse_config(args), info)
    finally:
        shutdown()


def test_the_final_evaluation_uses_its_own_budget(tmp_path):
    from trainer.train import run

    args = [*ARGS, "--training.steps", "2", "--training.val_tokens", str(SEQ),
            "--training.final_val_tokens", str(3 * SEQ), "--job.dump_folder", str(tmp_path)]  # fmt: skip
    calls = []
    import trainer.train as train_module

    original = train_module.evaluate

    def spy(tr, max_tokens=0):
        calls.append(max_tokens)
        return original(tr, max_tokens)

    train_module.evaluate = spy
    try:
        run(parse_config(args))
    finally:
        train_module.evaluate = original
    assert calls == [SEQ, 3 * SEQ]
