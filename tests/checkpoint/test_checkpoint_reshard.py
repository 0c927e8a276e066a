"""A 2-process checkpoint on 1 process: same validation loss; model-only loads across methods."""

from __future__ import annotations

import pytest

from tests.checkpoint.conftest import STEPS, val_losses


def test_two_process_checkpoint_gives_same_val_loss_on_one_process(reference, probe):
    case = probe["results"]["reshard"]
    assert case["error"] is None and case["step"] == STEPS
    assert f"(step {STEPS}, written by 2 processes)" in probe["log"]
    want = val_losses(reference["dump"])[STEPS]
    assert case["val_loss"] == pytest.approx(want, rel=1e-6)


def test_model_only_loads_between_adapter_and_dense_models_keep_the_function(reference, probe):
    """SwitchLoRA -> full (merged W + sBA), saved, then full -> SwitchLoRA (W - sBA)."""
    want = val_losses(reference["dump"])[STEPS]
    dense = probe["results"]["full_from_switch"]
    back = probe["results"]["switch_from_dense"]
    assert dense["error"] is None and dense["step"] == 0
    assert back["error"] is None and back["step"] == 0
    assert dense["val_loss"] == pytest.approx(want, rel=1e-5)
    assert back["val_loss"] == pytest.approx(want, rel=1e-5)
    assert "initial weights: " in probe["log"]
