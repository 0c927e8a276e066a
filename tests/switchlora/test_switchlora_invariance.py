"""A switch of K_max vectors in every adapted layer leaves the model output unchanged."""

import pytest
import torch
from switchlora_testkit import batch, build, init_model_, make_optimizer, options

from switchlora import SwitchController


@pytest.mark.parametrize("source", ["pool", "seeded"])
def test_output_unchanged_by_full_switch(source):
    opts = options(interval0=2.0, candidate_source=source)
    model, layers = build(opts)
    pools = init_model_(model, layers, opts)
    opt = make_optimizer(model, layers)
    ctrl = SwitchController(layers, opts, total_steps=100, optimizer=opt)
    ctrl.init_state(pools)
    assert ctrl.max_slots == 4
    tokens = batch(0)
    with torch.no_grad():
        before = model(tokens)
    factors = {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in layers.items()}
    weights = {n: m.base.weight.detach().clone() for n, m in layers.items()}
    stats = ctrl.step(0, force_k=ctrl.max_slots)
    assert stats["vectors_switched"] == 2 * ctrl.max_slots * len(layers)
    with torch.no_grad():
        after = model(tokens)
    rel = (after - before).norm() / before.norm()
    assert rel < 1e-5
    for name, layer in layers.items():
        a0, b0 = factors[name]
        changed_rows = (layer.lora_A != a0).any(dim=1).nonzero().flatten().tolist()
        changed_cols = (layer.lora_B != b0).any(dim=0).nonzero().flatten().tolist()
        assert changed_rows == [0, 1, 2, 3] and changed_cols == [4, 5, 6, 7]
        assert not torch.equal(layer.base.weight, weights[name])
        # effective weight preserved layer by layer
        eff0 = weights[name] + layer.scale * b0 @ a0
        eff1 = layer.base.weight + layer.scale * layer.lora_B @ layer.lora_A
        torch.testing.assert_close(eff1, eff0, rtol=1e-5, atol=1e-6)
