"""The baselines' official settings reach the model and optimizer: ReLoRA dropout, GaLore eps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parallel.distributed import init_distributed, shutdown
from switchlora.layer import AdapterLinear
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.config_checks import check_config
from trainer.train import build_trainer

SMALL = [
    "--model.flavor", "debug",
    "--training.seq_len", "16",
    "--training.global_batch_size", "2",
    "--training.steps", "4",
    "--method.rank", "4",
    "--checkpoint.enable", "False",
    "--metrics.tensorboard", "False",
]  # fmt: skip


def _build(tmp_path, config: str, *extra: str):
    cfg = parse_config(
        ["--config", str(ROOT / config), *SMALL, *extra, "--job.dump_folder", str(tmp_path)]
    )
    return build_trainer(cfg, init_distributed())


def test_relora_dropout_reaches_every_adapter_and_drops_the_adapter_input(tmp_path):
    try:
        tr = _build(tmp_path, "configs/tiny_relora.toml", "--relora.dropout", "0.1")
        layers = [m for m in tr.model.modules() if isinstance(m, AdapterLinear)]
        assert layers and all(m.dropout == 0.1 for m in layers)
    finally:
        shutdown()
    # The layer itself, against W x + s B (A dropout(x)) written here with nn.Dropout's mask.
    base = nn.Linear(12, 10, bias=False)
    layer = AdapterLinear(base, rank=3, scale=0.5, dropout=0.1)
    with torch.no_grad():
        layer.lora_A.normal_()
        layer.lora_B.normal_()
    x = torch.randn(64, 12)
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    dropped = nn.Dropout(0.1)(x)
    want = x @ base.weight.T + 0.5 * (dropped @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(got, want)
    assert not torch.allclose(
        got, x @ base.weight.T + 0.5 * F.linear(F.linear(x, layer.lora_A), layer.lora_B)
    )
    layer.eval()  # no dropout when evaluating
    plain = x @ base.weight.T + 0.5 * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), plain)


def test_relora_default_has_no_dropout(tmp_path):
    try:
        tr = _build(tmp_path, "configs/tiny_relora.toml")
        assert all(m.dropout == 0.0 for m in tr.model.modules() if isinstance(m, AdapterLinear))
    finally:
        shutdown()


@pytest.mark.parametrize(("extra", "eps"), [((), 1e-8), (("--galore.eps", "1e-6"), 1e-6)])
def test_galore_eps_reaches_every_param_group(tmp_path, extra, eps):
    try:
        tr = _build(tmp_path, "configs/tiny_galore.toml", "--optimizer.eps", "1e-8", *extra)
        groups = tr.method.optimizer.param_groups
        assert len(groups) == 2 and all(g["eps"] == eps for g in groups)
    finally:
        shutdown()


@pytest.mark.parametrize(
    ("config", "key", "value"),
    [
        ("configs/tiny_relora.toml", "relora.dropout", 1.0),
        ("configs/tiny_galore.toml", "galore.eps", -1.0),
    ],
)
def test_out_of_range_values_name_the_key(config, key, value):
    cfg = parse_config(["--config", str(ROOT / config)])
    section, _, name = key.partition(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=key):
        check_config(cfg, 1)
