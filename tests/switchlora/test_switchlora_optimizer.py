"""SwitchAdamW: dense groups equal torch.optim.AdamW; per-vector bias correction."""

import copy

import pytest
import torch

from switchlora import SwitchAdamW
from switchlora.vector_bank import BankIndex


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(5, 7), (7,), ()]]


def _grads(step: int, params) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) * (step + 1) for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_dense_equals_torch_adamw(weight_decay):
    ours, ref = _params(0), _params(0)
    opt = SwitchAdamW(ours, lr=3e-3, weight_decay=weight_decay)
    ref_opt = torch.optim.AdamW(ref, lr=3e-3, weight_decay=weight_decay, foreach=False)
    for step in range(12):
        for p, q, g in zip(ours, ref, _grads(step, ours)):
            p.grad, q.grad = g.clone(), g.clone()
        if step == 6:
            for group, ref_group in zip(opt.param_groups, ref_opt.param_groups):
                group["lr"] = ref_group["lr"] = 1e-3
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(ours, ref):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[q][key], rtol=0, atol=0)


def test_per_vector_counts_and_reset():
    a = torch.nn.Parameter(torch.zeros(4, 6))
    b = torch.nn.Parameter(torch.zeros(6, 4))
    opt = SwitchAdamW(
        [{"params": [a], "kind": "lora_A"}, {"params": [b], "kind": "lora_B"}], lr=0.1
    )
    assert opt.state_for(a)["step"].shape == (4, 1)
    assert opt.state_for(b)["step"].shape == (1, 4)
    beta1, beta2 = 0.9, 0.999
    for _ in range(5):
        a.grad, b.grad = torch.ones(4, 6), torch.ones(6, 4)
        opt.step()
    # zero the state of A row 1 and B column 2 (what the switch does), then one more step
    for key in ("exp_avg", "exp_avg_sq"):
        opt.state[a][key][1] = 0
        opt.state[b][key][:, 2] = 0
    opt.state[a]["step"][1] = 0
    opt.state[b]["step"][:, 2] = 0
    before_a, before_b = a.detach().clone(), b.detach().clone()
    a.grad, b.grad = torch.ones(4, 6), torch.ones(6, 4)
    opt.step()
    # fresh vectors: t = 1, m = (1-b1) g, v = (1-b2) g^2 -> update = lr * 1 / (1 + eps)
    torch.testing.assert_close(before_a[1] - a[1], torch.full((6,), 0.1), rtol=1e-5, atol=0)
    torch.testing.assert_close(before_b[:, 2] - b[:, 2], torch.full((6,), 0.1), rtol=1e-5, atol=0)
    assert opt.state[a]["step"].flatten().tolist() == [6, 1, 6, 6]
    assert opt.state[b]["step"].flatten().tolist() == [6, 6, 1, 6]
    # other rows: constant gradient -> m_hat = v_hat = 1 -> update = lr / (1 + eps)
    torch.testing.assert_close(before_a[0] - a[0], torch.full((6,), 0.1), rtol=1e-5, atol=0)
    del beta1, beta2


def test_per_vector_equals_adamw_without_resets():
    a, ref = _params(1)[0], _params(1)[0]
    opt = SwitchAdamW([{"params": [a], "kind": "lora_A"}], lr=1e-2)
    ref_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.0, foreach=False)
    for step in range(8):
        g = _grads(step, [a])[0]
        a.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(a, ref, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip():
    def make():
        params = _params(2)
        opt = SwitchAdamW(
            [{"params": params[:1], "kind": "lora_A"}, {"params": params[1:], "lr": 5e-3}], lr=1e-2
        )
        return params, opt

    params, opt = make()
    for step in range(3):
        for p, g in zip(params, _grads(step, params)):
            p.grad = g
        opt.step()
    opt.state[params[0]]["step"][2] = 0
    saved = copy.deepcopy(opt.state_dict())  # state_dict() aliases the live state tensors
    params2, opt2 = make()
    with torch.no_grad():
        for p, q in zip(params2, params):
            p.copy_(q)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["kind"] == "lora_A" and opt2.param_groups[1]["lr"] == 5e-3
    for step in range(3, 6):
        for p, q, g in zip(params, params2, _grads(step, params)):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    for p, q in zip(params, params2):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert opt2.state[params2[0]]["step"].dtype == torch.float32


def test_errors():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="kind"):
        SwitchAdamW([{"params": [p], "kind": "lora_C"}])
    with pytest.raises(ValueError, match="2-D"):
        SwitchAdamW([{"params": [p], "kind": "lora_A"}])
    with pytest.raises(ValueError, match="lr"):
        SwitchAdamW([p], lr=-1.0)


def _factors(seed: int) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Three A (two of one shape) and three B (two of one shape) parameters."""
    g = torch.Generator().manual_seed(seed)
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(4, 6), (4, 6), (4, 9)]]
    b = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(6, 4), (6, 4), (9, 4)]]
    return a, b


def test_stacked_banks_equal_one_parameter_at_a_time():
    """Shared banks (with frozen vectors and a parameter without gradient at one step) update
    exactly like separate optimizers holding one parameter each, fp32, bit for bit."""
    a, b = _factors(3)
    ref_a, ref_b = _factors(3)
    opt = SwitchAdamW(
        [{"params": a, "kind": "lora_A"}, {"params": b, "kind": "lora_B"}], lr=1e-2, eps=1e-6
    )
    refs = [
        SwitchAdamW([{"params": [p], "kind": kind}], lr=1e-2, eps=1e-6)
        for params, kind in ((ref_a, "lora_A"), (ref_b, "lora_B"))
        for p in params
    ]
    bank_a, first = opt.bank_of(a[1])
    assert first == 1 and opt.bank_of(a[0])[0] is bank_a and opt.bank_of(a[2])[0] is not bank_a
    bank_b, _ = opt.bank_of(b[0])
    gen = torch.Generator().manual_seed(7)
    for step in range(10):
        grads = [torch.randn(p.shape, generator=gen) for p in a + b]
        missing = a[0] if step == 4 else None  # no gradient this step: not stepped at all
        for p, q, g in zip(a + b, ref_a + ref_b, grads):
            p.grad = None if p is missing else g.clone()
            q.grad = None if p is missing else g.clone()
        if step % 3 == 1:  # freeze A row 2 of a[1] and B column 3 of b[0] for this step
            bank_a.freeze_next_update = BankIndex(torch.tensor([1 * 4 + 2]))
            bank_b.freeze_next_update = BankIndex(torch.tensor([0 * 4 + 3]))
            ref_a[1].grad[2] = 0
            ref_b[0].grad[:, 3] = 0
        if step == 6:  # reset (what the switch does to counterparts): A row 0 of a[0]
            bank_a.reset(BankIndex(torch.tensor([0]), torch.tensor([0])))
            ref_state = refs[0].state[ref_a[0]]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                ref_state[key][0] = 0
        opt.step()
        for ref in refs:
            ref.step()
    for p, q in zip(a + b, ref_a + ref_b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q, ref in zip(a + b, ref_a + ref_b, refs):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt.state[p][key], ref.state[q][key], rtol=0, atol=0)
    assert opt.state[a[0]]["step"][1].item() == 9  # skipped once


def _plain_decoupled_adamw_(p, g, m, v, t, lr, wd, eps, betas=(0.9, 0.999)) -> None:
    """Loshchilov & Hutter's AdamW on one vector with its own step count t (already advanced):
    p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)."""
    beta1, beta2 = betas
    p.mul_(1 - lr * wd)
    m.mul_(beta1).add_((1 - beta1) * g)
    v.mul_(beta2).add_((1 - beta2) * g * g)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


@pytest.mark.parametrize("missing_step", [None, 3])
def test_adapter_weight_decay_equals_plain_adamw_and_torch(missing_step):
    """Weight decay > 0 on stacked banks of A rows and B columns: equal to the decoupled AdamW
    formula (per vector, with a reset vector) and, for the vectors never reset, to
    torch.optim.AdamW on the same tensors. `missing_step`: one parameter has no gradient at
    that step (the one-by-one path; the others of its bank are then updated alone too)."""
    lr, wd, eps = 1e-2, 0.5, 1e-6  # lr * wd = 5e-3 per step: 4 % shrink over 8 steps
    a, b = _factors(5)
    plain = [p.detach().clone() for p in a + b]
    torch_params = [torch.nn.Parameter(p.detach().clone()) for p in a + b]
    opt = SwitchAdamW(
        [{"params": a, "kind": "lora_A"}, {"params": b, "kind": "lora_B"}],
        lr=lr,
        eps=eps,
        weight_decay=wd,
    )
    torch_opt = torch.optim.AdamW(torch_params, lr=lr, eps=eps, weight_decay=wd, foreach=False)
    kinds = ["A"] * len(a) + ["B"] * len(b)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in plain]
    counts = [[0] * 4 for _ in plain]  # r = 4 vectors per factor
    gen = torch.Generator().manual_seed(11)
    for step in range(8):
        grads = [torch.randn(p.shape, generator=gen) for p in plain]
        skip = 0 if step == missing_step else None
        for i, (p, q, g) in enumerate(zip(a + b, torch_params, grads)):
            p.grad = None if i == skip else g.clone()
            q.grad = None if i == skip else g.clone()
        if step == 5:  # reset A row 1 of a[2] (what a switch does to a counterpart)
            opt.bank_of(a[2])[0].reset(BankIndex(torch.tensor([1]), torch.tensor([1])))
            moments[2][0][1] = moments[2][1][1] = 0
            counts[2][1] = 0
        opt.step()
        torch_opt.step()
        for i, (p, g) in enumerate(zip(plain, grads)):
            if i == skip:
                continue
            m, v = moments[i]
            for j in range(4):
                counts[i][j] += 1
                if kinds[i] == "A":
                    vec = (p[j], g[j], m[j], v[j])
                else:
                    vec = (p[:, j], g[:, j], m[:, j], v[:, j])
                _plain_decoupled_adamw_(*vec, counts[i][j], lr, wd, eps)
    for p, q, r in zip(a + b, plain, torch_params):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)
        if p is a[2]:  # the reset row restarts its bias correction: torch's AdamW cannot
            rows = [0, 2, 3]
            torch.testing.assert_close(p.detach()[rows], r.detach()[rows], rtol=1e-6, atol=1e-7)
        else:
            torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-7)
    for i, p in enumerate(a + b):
        torch.testing.assert_close(opt.state[p]["exp_avg"], moments[i][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], moments[i][1], rtol=1e-6, atol=0)
