"""The cpu-switch study, planned without training: switch counts, run list, time budget."""

from __future__ import annotations

import importlib.util

import pytest

from switchlora.schedule import interval
from tests.conftest import ROOT
from trainer.data.loader import build_data
from trainer.data.padded import target_counts
from trainer.reproduce.plan import build_config, plan_runs, seed_runs
from trainer.reproduce.results import seed_statistics
from trainer.reproduce.spec import METHODS
from trainer.reproduce.suite_run import SuiteOptions, estimate_s, run_configs, run_suite
from trainer.reproduce.suites import get_suite


def _study(suite):
    main = plan_runs(suite, METHODS, True, suite.default_ablations)
    seeds = seed_runs(suite, {m: suite.recipes[m].lr for m in METHODS})
    return main, seeds


def test_every_vector_index_switches_at_least_ten_times():
    suite = get_suite("cpu-switch")
    recipe = suite.recipes["switchlora"]
    for run in [r for r in plan_runs(suite, ["switchlora"], True, suite.default_ablations)]:
        cfg = build_config(suite, recipe, run.variant, run.lr)
        sw, steps = cfg.switchlora, cfg.training.steps
        assert not sw.fixed_interval and sw.descent_ratio == 0.1  # the paper's decay
        # Written here from the schedule: each step switches r / interval(t) vectors in turn
        # around the ring of r indices, so each index switches sum_t 1 / interval(t) times.
        per_index = sum(
            1.0 / interval(t, sw.interval0, sw.descent_ratio, steps) for t in range(steps)
        )
        assert per_index >= 10, (run.name, per_index)
    # And no shorter run of 50-step multiples would do: the suite is not oversized.
    shorter = steps - 50
    assert sum(1.0 / interval(t, 10.0, 0.1, shorter) for t in range(shorter)) < 10


def test_the_study_runs_and_fits_in_100_minutes():
    suite = get_suite("cpu-switch")
    main, seeds = _study(suite)
    names = {r.name for r in main}
    for method in METHODS:  # three lrs per method, the recipe's among them
        lr = suite.recipes[method].lr
        assert {method, f"{method}__lr={lr * 0.5:g}", f"{method}__lr={lr * 2:g}"} <= names
    assert {
        "switchlora__pool_write_back=False",
        "switchlora__candidate_source=seeded",
        "switchlora__freeze_steps=0",
        "switchlora__mode=bf16",
        "switchlora__mode=pure_bf16",
    } <= names
    assert len(main) == 5 * 3 + 5
    assert len(seeds) == 5 * 2 and {r.variant["job.seed"] for r in seeds} == {1, 2}
    opts = SuiteOptions(output=ROOT / "outputs/unused", methods=METHODS)
    configs = run_configs(suite, main + seeds, opts, {})
    assert {c.training.steps for c in configs.values()} == {1250}
    assert estimate_s(suite, main + seeds, configs) <= 100 * 60
    # The evaluation budgets fit the validation split of the suite's data.
    cfg = configs["switchlora"]
    val = build_data(cfg.data.source, cfg.data.tokenizer, cfg.training.seq_len, 4, 0, 1, 0)
    available = int(target_counts(val.val_windows).sum())
    assert cfg.training.val_tokens < cfg.training.final_val_tokens <= available


def test_plan_lists_the_sweep_then_the_seeds(tmp_path):
    lines: list[str] = []
    opts = SuiteOptions(
        output=tmp_path, methods=METHODS, lr_sweep=True, ablations=["freeze"], plan_only=True
    )
    assert run_suite(get_suite("cpu-switch"), opts, lines.append) == 0
    assert lines[0].startswith("suite cpu-switch: 16 runs")
    assert "then seeds 1, 2 at each method's best lr on validation: 10 runs" in lines[-1]


def test_cli_defaults_are_the_sweep_the_seeds_and_the_suite_ablations():
    spec = importlib.util.spec_from_file_location("reproduce_cli2", ROOT / "scripts/reproduce.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.parse_args(["--suite", "cpu-switch"])
    assert args.lr_sweep and args.seeds and args.ablation is None
    assert not cli.parse_args(["--suite", "cpu-switch", "--no-lr-sweep"]).lr_sweep


def test_seed_statistics_mean_and_spread():
    def run(name, lr, group, ppl):
        return {"name": name, "method": "lora", "lr": lr, "group": group, "variant": {},
                "final_val_ppl": ppl, "final_val_loss": 0.0}  # fmt: skip

    runs = {
        "lora": run("lora", 1e-2, "main", 10.0),
        "lora__seed=1": {**run("lora__seed=1", 1e-2, "seeds", 12.0), "variant": {"job.seed": 1}},
        "lora__seed=2": {**run("lora__seed=2", 1e-2, "seeds", 14.0), "variant": {"job.seed": 2}},
        "lora__seed=1__lr=0.02": {
            **run("lora__seed=1__lr=0.02", 2e-2, "seeds", 99.0),
            "variant": {"job.seed": 1},
        },
    }
    stats = seed_statistics(runs, {"lora": "lora"})["lora"]
    assert stats["runs"] == ["lora", "lora__seed=1", "lora__seed=2"]
    assert stats["ppl_mean"] == pytest.approx(12.0) and stats["ppl_std"] == pytest.approx(2.0)
