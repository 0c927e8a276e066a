"""ReLoRA on a single, unsharded model: init, merge-and-reinit, moment pruning, controller.

References (the merged weight, the kept entries) are written here in plain PyTorch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from switchlora.baselines.relora import (
    ReLoRAController,
    ReLoRAOptions,
    magnitude_keep_mask,
    merge_adapter_,
    prune_moments_,
    relora_reset_,
)
from switchlora.seeding import derive_seed
from trainer.cli import parse_config
from trainer.methods.base import adapter_layers
from trainer.methods.relora import init_relora, prepare_relora
from trainer.model.args import resolve_model_args
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama

ARGS = ["--model.flavor", "debug", "--method.rank", "8", "--training.seq_len", "64"]


def build(name: str) -> tuple[Llama, object]:
    cfg = parse_config([*ARGS, "--method.name", name])
    args = resolve_model_args("debug", vocab_size=256, max_seq_len=64)
    with torch.device("meta"):
        model = Llama(args)
    if name == "relora":
        prepare_relora(model, cfg)
    model.to_empty(device="cpu")
    init_dense_weights(model, cfg.job.seed, cfg.model.init_std)
    if name == "relora":
        init_relora(model, cfg)
    return model, cfg


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(seed))


def train(model: Llama, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        x = tokens(step)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_step_zero_equals_full_rank_init():
    relora, cfg = build("relora")
    full, _ = build("full")
    layers = adapter_layers(relora)
    assert len(layers) == 14
    for name, layer in layers.items():
        assert torch.equal(layer.base.weight, full.get_submodule(name).weight)
        assert torch.count_nonzero(layer.lora_B) == 0
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
        assert layer.scale == 32.0 / 8
        assert not layer.base.weight.requires_grad
    with torch.no_grad():
        assert torch.equal(relora(tokens()), full(tokens()))


def test_merge_and_reinit_keep_the_function():
    model, _ = build("relora")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train(model, opt, 3)
    layers = adapter_layers(model)
    old = {
        n: (m.base.weight.clone(), m.lora_A.clone(), m.lora_B.clone()) for n, m in layers.items()
    }
    with torch.no_grad():
        before = model(tokens(99))
    relora_reset_(layers, opt, ReLoRAOptions(), reset_index=1)
    with torch.no_grad():
        after = model(tokens(99))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    for name, layer in layers.items():
        w, a, b = old[name]
        assert torch.count_nonzero(b) > 0
        torch.testing.assert_close(layer.base.weight, w + layer.scale * b @ a, atol=1e-7, rtol=0)
        assert torch.count_nonzero(layer.lora_B) == 0
        assert not torch.equal(layer.lora_A, a)
        assert layer.lora_A.abs().max() <= 1 / math.sqrt(layer.in_features)


def test_reinit_is_keyed_by_seed_layer_and_reset():
    def draw(reset_index: int, seed: int = 0) -> torch.Tensor:
        model, _ = build("relora")
        opt = torch.optim.AdamW(model.parameters(), lr=0.0)
        relora_reset_(adapter_layers(model), opt, ReLoRAOptions(seed=seed), reset_index)
        return torch.cat([m.lora_A.flatten() for m in adapter_layers(model).values()])

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    assert not torch.equal(draw(1), draw(1, seed=1))


def test_merge_of_zero_b_is_exact():
    model, _ = build("relora")
    layer = next(iter(adapter_layers(model).values()))
    w = layer.base.weight.clone()
    merge_adapter_(layer)
    assert torch.equal(layer.base.weight, w)


def moment_state(shape: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, dict]:
    gen = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.zeros(shape))
    state = {
        "step": torch.tensor(17.0),
        "exp_avg": torch.randn(shape, generator=gen),
        "exp_avg_sq": torch.rand(shape, generator=gen) + 0.01,
    }
    return param, state


@pytest.mark.parametrize("ratio", [0.5, 0.999])
def test_random_pruning_keeps_the_requested_fraction(ratio):
    param, state = moment_state((512, 256))
    old = {k: v.clone() for k, v in state.items()}
    prune_moments_(param, state, ReLoRAOptions(prune_ratio=ratio), param_index=3, reset_index=1)
    n = param.numel()
    masks = []
    for key in ("exp_avg", "exp_avg_sq"):
        kept = state[key] != 0
        masks.append(kept)
        count = kept.sum().item()
        sigma = math.sqrt(n * ratio * (1 - ratio))
        assert abs(count - n * (1 - ratio)) <= 5 * sigma + 1, (key, count)
        assert torch.equal(state[key][kept], old[key][kept])
    assert not torch.equal(masks[0], masks[1])  # independent masks per moment, as in ReLoRA
    assert torch.equal(state["step"], old["step"])


def test_magnitude_pruning_keeps_the_largest_entries():
    param, state = moment_state((64, 100))
    old = {k: v.clone() for k, v in state.items()}
    opts = ReLoRAOptions(prune="magnitude", prune_ratio=0.9)
    prune_moments_(param, state, opts, param_index=0, reset_index=1)
    for key in ("exp_avg", "exp_avg_sq"):
        keep = 640  # 10 % of 6400 entries
        top = old[key].abs().flatten().sort(descending=True).indices[:keep]
        expected = torch.zeros(6400)
        expected[top] = old[key].flatten()[top]
        assert torch.equal(state[key].flatten(), expected), key
    assert torch.equal(state["step"], old["step"])
    assert magnitude_keep_mask(torch.ones(4, 4), 0.0).all()


def test_controller_resets_after_every_interval_and_round_trips():
    model, _ = build("relora")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ctrl = ReLoRAController(adapter_layers(model), opt, ReLoRAOptions(reset_interval=3))
    done = [ctrl.after_step(step) for step in range(7)]
    assert done == [False, False, True, False, False, True, False]
    assert ctrl.state_dict() == {"resets": 2}
    other = ReLoRAController(adapter_layers(model), opt, ReLoRAOptions(reset_interval=3))
    other.load_state_dict(ctrl.state_dict())
    assert other.resets == 2
    with pytest.raises(ValueError, match="prune_ratio"):
        ReLoRAOptions(prune_ratio=1.5).validate()


def _plain_keep_mask(old: torch.Tensor, opts: ReLoRAOptions, keys: tuple[int, ...]):
    """ReLoRA's pruning rule written out: random keeps an entry when a uniform draw from the
    generator keyed (seed, PRUNE_STREAM = 17, parameter, reset, moment) exceeds prune_ratio;
    magnitude keeps the entries above the k-th smallest |x|, k = floor(ratio * numel)."""
    if opts.prune == "random":
        gen = torch.Generator().manual_seed(derive_seed(opts.seed, 17, *keys))
        return torch.rand(old.shape, generator=gen) > opts.prune_ratio
    k = int(opts.prune_ratio * old.numel())
    threshold = old.abs().flatten().sort().values[k - 1]
    return old.abs() > threshold


@pytest.mark.parametrize("prune", ["random", "magnitude"])
def test_moments_after_a_reset_follow_the_plain_rule(prune):
    """A reset inside training (the controller after step 2): the adapters' moments are the
    old ones times the keep mask, steps unchanged, every other parameter's state untouched;
    the next step is plain AdamW from the pruned moments, bias correction not restarted."""
    lr, wd, betas, eps = 1e-2, 0.01, (0.9, 0.999), 1e-8
    opts = ReLoRAOptions(reset_interval=3, prune=prune, prune_ratio=0.6, seed=5)
    model, _ = build("relora")
    layers = adapter_layers(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    ctrl = ReLoRAController(layers, opt, opts)

    def backward(step: int) -> None:
        x = tokens(step)
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()

    for step in range(3):
        backward(step)
        opt.step()
        opt.zero_grad()
        if step == 2:
            old = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in trainable}
        assert ctrl.after_step(step) == (step == 2)
    adapter_keys = {}
    for index, layer in enumerate(layers.values()):
        adapter_keys[layer.lora_A] = 2 * index
        adapter_keys[layer.lora_B] = 2 * index + 1
    pruned = {}
    for p in trainable:
        state = opt.state[p]
        assert torch.equal(state["step"], old[p]["step"])  # 3: bias correction goes on
        if p not in adapter_keys:
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state[key], old[p][key])
            continue
        for moment, key in enumerate(("exp_avg", "exp_avg_sq")):
            keep = _plain_keep_mask(old[p][key], opts, (adapter_keys[p], 1, moment))
            assert 0.3 < keep.float().mean().item() < 0.5  # about 1 - prune_ratio kept
            torch.testing.assert_close(state[key], old[p][key] * keep, rtol=0, atol=0)
        pruned[p] = (state["exp_avg"].clone(), state["exp_avg_sq"].clone(), p.detach().clone())
    # one more step: decoupled AdamW written out, from the pruned moments, t = 4
    backward(3)
    grads = {p: p.grad.clone() for p in pruned}
    opt.step()
    beta1, beta2 = betas
    for p, (m, v, value) in pruned.items():
        g = grads[p]
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        torch.testing.assert_close(opt.state[p]["exp_avg"], m, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], v, rtol=1e-6, atol=1e-12)
        m_hat, v_hat = m / (1 - beta1**4), v / (1 - beta2**4)
        want = value * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7)
