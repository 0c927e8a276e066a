"""Config loading: every key and type is checked, errors are one line and name the key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import parse_config
from trainer.config import ConfigError, JobConfig, config_from_dict, load_toml, to_toml
from trainer.config_checks import check_config, check_model_config

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_config_loads():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_toml(path)
        assert cfg.job.name, path


SHIPPED = sorted((ROOT / "configs").glob("*.toml"))


def _documented_world_sizes(path: Path) -> list[int]:
    """1, plus the process counts the config's header launches it with (--nproc_per_node=N)."""
    counts = re.findall(r"--nproc_per_node=(\d+)", path.read_text())
    return sorted({1, *map(int, counts)})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_passes_its_own_checks(path, monkeypatch):
    """check_config and the model-size checks on each shipped config, at 1 process and at the
    world sizes its header names. Only the data files are replaced, when not prepared here
    (the corpus by the embedded one, the tokenizer by the byte tokenizer)."""
    monkeypatch.chdir(ROOT)  # data paths in the configs are relative to the repository
    cfg = load_toml(path)
    if not cfg.data.source.startswith("embedded:") and not Path(cfg.data.source).exists():
        cfg.data.source = "embedded:shakespeare"
    if cfg.data.tokenizer != "byte" and not Path(cfg.data.tokenizer).is_file():
        cfg.data.tokenizer = "byte"
    for world_size in _documented_world_sizes(path):
        check_config(cfg, world_size)
    check_model_config(cfg)


def test_toml_round_trip(tmp_path):
    cfg = load_toml(ROOT / "configs" / "tiny_full.toml")
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_toml(path) == cfg


def test_cli_overrides_toml():
    cfg = parse_config(
        [
            "--config",
            str(ROOT / "configs/tiny_full.toml"),
            "--training.steps",
            "7",
            "--job.dump_folder",
            "x",
            "--compile.enable",
            "True",
            "--method.target_modules",
            "q_proj",
            "v_proj",
        ]
    )
    assert cfg.training.steps == 7 and cfg.job.dump_folder == "x" and cfg.compile.enable
    assert cfg.method.target_modules == ("q_proj", "v_proj")
    assert cfg.optimizer.lr == 3e-3  # from the file


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model.nheads", "5"], "unknown key 'model.nheads' (did you mean 'n_heads'?)"),
        (["--trainin.steps", "5"], "unknown key 'trainin.steps'"),
        (["--training.steps", "abc"], "training.steps: expected an integer, got 'abc'"),
        (["--training.steps=1.5"], "training.steps: expected an integer, got '1.5'"),
        (["--compile.enable", "yes"], "compile.enable: expected true or false, got 'yes'"),
        (["--precision.mode", "fp16"], "precision.mode: expected one of"),
        (["--training.steps", "3", "4"], "training.steps: expected one value, got 2"),
        (["--steps", "3"], "unknown option '--steps'"),
        (["steps"], "unexpected argument 'steps'"),
        (
            ["--parallel.activation_checkpoint", "true"],
            "parallel.activation_checkpoint: moved to activation_checkpoint.mode",
        ),
        (["--method.interval0", "20"], "method.interval0: moved to switchlora.interval0"),
    ],
)
def test_cli_override_errors_name_the_key(flags, message):
    with pytest.raises(ConfigError) as err:
        parse_config(["--config", str(ROOT / "configs/tiny_full.toml"), *flags])
    assert message in str(err.value)


def test_cli_values_read_as_the_field_needs():
    cfg = parse_config(
        [
            "--job.name",
            "123",  # a string field given a number-like token
            "--model.vocab_size",
            "None",
            "--model.vocab_size=512",
            "--optimizer.lr",
            "1e-3",
        ]
    )
    assert cfg.job.name == "123" and cfg.model.vocab_size == 512 and cfg.optimizer.lr == 1e-3


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"training": {"stepz": 3}}, "unknown key 'training.stepz' (did you mean 'steps'?)"),
        ({"trainin": {"steps": 3}}, "unknown key 'trainin'"),
        ({"training": {"steps": "many"}}, "training.steps: expected an integer, got 'many'"),
        ({"training": {"steps": 1.5}}, "training.steps: expected an integer"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr: expected a number"),
        ({"precision": {"mode": "fp16"}}, "precision.mode: expected one of"),
        ({"compile": {"enable": 1}}, "compile.enable: expected true or false"),
        ({"training": 5}, "training: expected a [training] table"),
        (
            {"parallel": {"activation_checkpoint": True}},
            "parallel.activation_checkpoint: moved to activation_checkpoint.mode",
        ),
        ({"method": {"interval0": 20.0}}, "method.interval0: moved to switchlora.interval0"),
        (
            {"method": {"pool_offload_cpu": True}},
            "method.pool_offload_cpu: moved to switchlora.pool_offload_cpu",
        ),
    ],
)
def test_bad_keys_and_types(raw, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "raw, world, fragment",
    [
        (
            {"training": {"global_batch_size": 9}},
            2,
            "training.global_batch_size: 9 is not divisible by the world size 2",
        ),
        (
            {"training": {"global_batch_size": 8, "local_batch_size": 3}},
            2,
            "training.local_batch_size: 3 does not divide",
        ),
        (
            {"data": {"source": "/nonexistent/shards"}},
            1,
            "data.source: /nonexistent/shards does not exist",
        ),
        ({"data": {"tokenizer": "/nonexistent/tok.json"}}, 1, "data.tokenizer: tokenizer file"),
        (
            {"method": {"name": "switchlora"}, "switchlora": {"interval0": 6.0, "freeze_steps": 5}},
            1,
            "switchlora.interval0: interval0 (6.0) must be >= 2 * freeze_steps (10)",
        ),
        ({"training": {"steps": 0}}, 1, "training.steps: must be positive"),
        ({"training": {"max_norm": -1.0}}, 1, "training.max_norm: must be >= 0"),
        ({"training": {"max_skipped_steps": -1}}, 1, "training.max_skipped_steps: must be >= 0"),
    ],
)
def test_inconsistent_values(raw, world, fragment):
    with pytest.raises(ConfigError) as err:
        check_config(config_from_dict(raw), world)
    assert fragment in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: /no/such.toml"):
        load_toml("/no/such.toml")


def test_train_script_reports_model_inconsistency_in_one_line(tmp_path):
    """Heads not dividing dim is caught before any compute, as a one-line error, exit code 2."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            "--config",
            str(ROOT / "configs/tiny_full.toml"),
            "--model.n_heads",
            "5",
            "--job.dump_folder",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1] == "config error: model.n_heads: 5 does not divide model.dim 128", proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_defaults_are_consistent():
    check_config(JobConfig(), 1)


@pytest.mark.parametrize("spelling", ["true", "TRUE", "True", "false", "False", "fAlSe"])
def test_booleans_accept_any_case(spelling):
    expected = spelling.lower() == "true"
    cfg = parse_config(["--checkpoint.enable", spelling, f"--compile.enable={spelling}"])
    assert cfg.checkpoint.enable is expected and cfg.compile.enable is expected


def test_string_field_keeps_a_boolean_like_value():
    cfg = parse_config(["--job.name", "true", "--method.target_modules", "False", "q_proj"])
    assert cfg.job.name == "true" and cfg.method.target_modules == ("False", "q_proj")


def test_config_given_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=f"--config {tmp_path} is a folder"):
        parse_config(["--config", str(tmp_path)])
