"""Controller + optimizer state round trip: a restored run decides and trains identically."""

import copy

import pytest
import torch
from switchlora_testkit import batch, build, init_model_, loss_of, make_optimizer
from switchlora_testkit import options as make_options

from switchlora import SwitchController

TOTAL = 20


def _setup(opts, pools=True):
    model, layers = build(opts)
    init_pools = init_model_(model, layers, opts)
    opt = make_optimizer(model, layers)
    ctrl = SwitchController(layers, opts, total_steps=TOTAL, optimizer=opt)
    ctrl.init_state(init_pools if pools else None)
    return model, opt, ctrl


def _train(model, opt, ctrl, steps):
    stats = []
    for t in steps:
        loss_of(model, batch(t)).backward()
        stats.append(ctrl.step(t))
        opt.step()
        opt.zero_grad()
    return stats


@pytest.mark.parametrize(
    "overrides",
    [
        {"pool_choice": "random", "freeze_steps": 2},
        {"candidate_source": "seeded"},
        {"pool_offload_cpu": True, "freeze_steps": 2},  # deferred write-backs are saved too
    ],
    ids=["pool-random", "seeded", "pool-offloaded"],
)
def test_round_trip_continues_identically(overrides):
    opts = make_options(**overrides)
    model, opt, ctrl = _setup(opts)
    _train(model, opt, ctrl, range(6))
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    saved_ctrl = copy.deepcopy(ctrl.state_dict())
    expected = _train(model, opt, ctrl, range(6, 12))

    model2, opt2, ctrl2 = _setup(make_options(**overrides), pools=False)  # pools regenerated
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    ctrl2.load_state_dict(saved_ctrl)
    got = _train(model2, opt2, ctrl2, range(6, 12))

    assert got == expected
    assert sum(s["vectors_switched"] for s in got) > 0
    params2 = dict(model2.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(params2[name], param, rtol=0, atol=0, msg=name)
    ctrl.flush_pools()
    ctrl2.flush_pools()
    for st, st2 in zip(ctrl.layers, ctrl2.layers):
        assert (st.p_a, st.p_b) == (st2.p_a, st2.p_b)
        assert (st.frz_host_a == st2.frz_host_a).all() and (st.frz_host_b == st2.frz_host_b).all()
        if st.pool_a is not None:
            assert torch.equal(st.pool_a.entries, st2.pool_a.entries)
            assert list(st.pool_a.use) == list(st2.pool_a.use)


def test_pool_bytes_and_plain_lora():
    model, opt, ctrl = _setup(make_options())
    # 14 layers, C = 32 entries of n + m floats each: q/k/v 32+48, o 48+32, gate/up 32+33, down 33+32
    per_block = 4 * 32 * 80 + 3 * 32 * 65
    assert ctrl.pool_bytes() == 2 * per_block * 4
    _, _, seeded = _setup(make_options(candidate_source="seeded"))
    assert seeded.pool_bytes() == 0
    lora_opts = make_options(switching=False)
    model, opt, plain = _setup(lora_opts)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_of(model, batch(0)).backward()
    assert plain.step(0)["vectors_switched"] == 0
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])
        if param.grad is not None:
            assert param.grad.abs().sum() > 0


def test_load_rejects_other_layers():
    _, _, ctrl = _setup(make_options())
    sd = ctrl.state_dict()
    sd["layers"].pop(next(iter(sd["layers"])))
    with pytest.raises(ValueError, match="missing"):
        ctrl.load_state_dict(sd)
