"""Suite planning, run folders, progress lines and the report, without training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trainer.config import ConfigError
from trainer.config_checks import check_config, check_model_args
from trainer.reproduce.costs import model_args_of
from trainer.reproduce.plan import build_config, plan_runs, run_name, suite_ablations
from trainer.reproduce.progress import Progress, duration
from trainer.reproduce.report import render
from trainer.reproduce.runner import RunConflict, train_command, write_run_files
from trainer.reproduce.runner import check_config as check_run_folder
from trainer.reproduce.spec import METHODS
from trainer.reproduce.suites import SUITES, get_suite

ROOT = Path(__file__).resolve().parents[2]


def _load_cli():
    spec = importlib.util.spec_from_file_location("reproduce_cli", ROOT / "scripts/reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(SUITES))
def test_every_run_of_every_suite_has_a_valid_config(name):
    suite = get_suite(name)
    runs = plan_runs(suite, METHODS, True, list(suite_ablations(suite)))
    local_data = {"data.source": "embedded:shakespeare", "data.tokenizer": "byte"}
    configs = {
        r.name: build_config(suite, suite.recipes[r.method], r.variant, r.lr, local_data)
        for r in runs
    }
    vocab = {"cpu-small": 4096, "micro": 257}.get(name, 32000)
    for cfg in configs.values():  # the trainer's own consistency checks, before any compute
        check_config(cfg, suite.nproc)
        check_model_args(model_args_of(cfg, vocab), cfg, vocab)
    ref = configs["full"].training
    for run_name_, cfg in configs.items():  # same model, data and token budget everywhere
        t = cfg.training
        assert (t.steps, t.global_batch_size, t.seq_len) == (
            ref.steps,
            ref.global_batch_size,
            ref.seq_len,
        )
        assert cfg.model.flavor == configs["full"].model.flavor, run_name_
        assert cfg.data.source == configs["full"].data.source, run_name_
    assert {configs[m].method.name for m in METHODS} == set(METHODS)
    assert len({r.name for r in runs}) == len(runs)


def test_shared_points_are_trained_once():
    suite = get_suite("micro")
    runs = {r.name: r for r in plan_runs(suite, ["switchlora"], False, ["freeze", "rank"])}
    assert set(runs) == {
        "switchlora",
        "switchlora__freeze_steps=0",
        "lora",
        "lora__rank=2",
        "lora__rank=8",
        "switchlora__rank=2",
        "switchlora__rank=8",
    }
    assert runs["switchlora"].group == "main"
    assert set(runs["switchlora"].ablations) == {"freeze", "rank"}
    assert run_name("full", {}, 6e-3, 3e-3) == "full__lr=0.006"


def test_cpu_small_is_about_5m_parameters_and_fits_the_time_budget():
    from trainer.reproduce.costs import run_costs
    from trainer.reproduce.suite_run import estimate_s

    suite = get_suite("cpu-small")
    runs = plan_runs(suite, METHODS, False, [])
    configs = {r.name: build_config(suite, suite.recipes[r.method], {}, r.lr) for r in runs}
    assert 4.5e6 < run_costs(configs["full"], 4096).params < 6e6
    assert 35 * 60 < estimate_s(suite, runs, configs) < 60 * 60


def test_run_folder_conflicts(tmp_path):
    suite = get_suite("micro")
    (spec,) = plan_runs(suite, ["full"], False, [])
    cfg = build_config(suite, suite.recipes["full"], {}, spec.lr)
    other = build_config(suite, suite.recipes["full"], {}, spec.lr * 2)
    folder = tmp_path / "full"
    write_run_files(folder, cfg, spec)
    check_run_folder(folder, cfg)
    check_run_folder(folder, other)  # nothing to keep yet: the new config may replace it
    (folder / "summary.json").write_text("{}")
    with pytest.raises(RunConflict):
        check_run_folder(folder, other)


def test_bad_override_fails_before_training():
    suite = get_suite("micro")
    with pytest.raises(ConfigError):
        build_config(suite, suite.recipes["full"], {}, 1e-3, {"training.stepz": 3})


def test_train_command_uses_torchrun_for_several_processes():
    single = train_command(Path("run.toml"), 1)
    assert "torch.distributed.run" not in single and single[-2:] == ["--config", "run.toml"]
    multi = train_command(Path("run.toml"), 2)
    assert "--nproc_per_node=2" in multi and "--standalone" in multi
    nodes = train_command(Path("run.toml"), 8, ["--nnodes", "2"])
    assert "--standalone" not in nodes and "--nnodes" in nodes


def test_progress_lines_and_eta():
    lines: list[str] = []
    progress = Progress(
        pending=[("full", "full", 100), ("lora", "lora", 100)],
        hints={"full": 1.0, "lora": 2.0},
        overhead_s=10.0,
        every_s=0.0,
        emit=lines.append,
    )
    assert progress.estimate() == pytest.approx(100 * 1.0 + 10 + 100 * 2.0 + 10)
    progress.start_run()
    progress.on_line("step  50/100 | loss 3.0 | lr 1e-3 | gnorm 1.0 | 1.0k tok/s | 0.500 s/step")
    assert progress.estimate() == pytest.approx(50 * 0.5 + 100 * 1.0 + 10)
    assert lines and "step 50/100 (50%)" in lines[-1] and "run ETA 25s" in lines[-1]
    progress.on_line("step 50 | val loss 3.1 | val ppl 22.2")  # not a step line
    assert len(lines) == 1
    assert duration(3725) == "1h02m" and duration(65) == "1m05s" and duration(None) == "?"


def test_set_values_parse_as_toml():
    cli = _load_cli()
    assert cli.parse_set(
        ["training.steps=100", "data.source=/x/y", "metrics.tensorboard=false"]
    ) == {
        "training.steps": 100,
        "data.source": "/x/y",
        "metrics.tensorboard": False,
    }


def test_report_states_distance_to_full_rank():
    def run(method, ppl, lr=1e-2):
        return {
            "name": method,
            "method": method,
            "lr": lr,
            "group": "main",
            "variant": {},
            "status": "finished",
            "tokens": 1000,
            "final_val_ppl": ppl,
            "params": 100,
            "trainable_params": 50,
        }

    results = {
        "suite": "x",
        "description": "d",
        "runs": {"full": run("full", 20.0, 1e-3), "lora": run("lora", 25.0)},
        "best": {"full": "full", "lora": "lora"},
        "ablations": {},
    }
    text = render(results)
    assert "| lora | 0.01 | 25.00 | +25.0% | 50 (50%) |" in text
    assert "| full | 0.001 | 20.00 | - |" in text
