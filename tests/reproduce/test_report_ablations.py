"""The report lists an ablation only once one of its own runs has finished."""

from __future__ import annotations

import json

from trainer.reproduce.plan import build_config, plan_runs, suite_ablations
from trainer.reproduce.results import collect
from trainer.reproduce.runner import run_folder, write_run_files
from trainer.reproduce.spec import METHODS
from trainer.reproduce.suites import get_suite


def _finish(folder) -> None:
    """A summary.json as a finished trainer run leaves it."""
    summary = {
        "final_val_loss": 2.0,
        "initial_val_loss": 5.0,
        "val_losses": {"6": 2.0},
        "params": 1000,
        "trainable_params": 100,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_an_ablation_appears_once_a_run_of_its_own_finished(tmp_path):
    suite = get_suite("micro")
    specs = {s.name: s for s in plan_runs(suite, METHODS, False, list(suite_ablations(suite)))}
    for spec in specs.values():
        cfg = build_config(suite, suite.recipes[spec.method], spec.variant, spec.lr)
        write_run_files(run_folder(tmp_path, spec.name), cfg, spec)
    for method in METHODS:  # the main table: the recipe runs the ablations share
        _finish(run_folder(tmp_path, method))
    assert collect(tmp_path, suite)["ablations"] == {}

    freeze_runs = [n for n, s in specs.items() if "freeze" in s.ablations and n != "switchlora"]
    _finish(run_folder(tmp_path, freeze_runs[0]))
    assert set(collect(tmp_path, suite)["ablations"]) == {"freeze"}
