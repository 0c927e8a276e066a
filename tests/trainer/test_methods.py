"""The method table: one entry per method.name choice, unknown names named in one line."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest

from trainer.config import ConfigError, JobConfig, Method
from trainer.methods import METHODS, get_method
from trainer.model.args import resolve_model_args
from trainer.train import training_flops_per_token


def test_table_has_every_configurable_method():
    choices = typing.get_args(typing.get_type_hints(Method)["name"])
    assert set(METHODS) == set(choices)
    assert all(METHODS[name].name == name for name in METHODS)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_method("dora")
    message = str(err.value)
    assert message.startswith("method.name: unknown method 'dora'")
    assert all(name in message for name in METHODS)
    assert "\n" not in message


@pytest.mark.parametrize("name", ["lora", "switchlora", "relora", "galore", "full"])
def test_training_flops_count_adapter_matmuls_only_for_adapter_methods(name):
    cfg = JobConfig()
    cfg.method.name, cfg.method.rank = name, 8
    cfg.method.target_modules = ("q_proj", "down_proj")
    args = resolve_model_args("tiny", 256, cfg.training.seq_len)
    full = SimpleNamespace(cfg=JobConfig(), model_args=args)
    d, f, r = args.dim, args.ffn_dim, 8
    # An adapted m x n projection: no weight gradient for W (-2mn), plus 6 r (m + n) for A, B.
    adapter_extra = args.n_layers * ((6 * r * (d + d) - 2 * d * d) + (6 * r * (d + f) - 2 * d * f))
    want = training_flops_per_token(full) + (
        adapter_extra if name in ("lora", "switchlora", "relora") else 0
    )
    assert training_flops_per_token(SimpleNamespace(cfg=cfg, model_args=args)) == want
