"""Library (controller + kernel + SwitchAdamW) vs an independent loop implementation of the
SwitchLoRA step (per-vector AdamW with decoupled weight decay), 30 steps of a tiny model, fp32."""

import math

import pytest
import torch
from switchlora_testkit import (
    WEIGHT_DECAY,
    batch,
    build,
    clone_model,
    init_model_,
    loss_of,
    make_optimizer,
)
from switchlora_testkit import options as make_options

from switchlora import SwitchController
from switchlora.candidates import FACTOR_A, FACTOR_B, seeded_candidates
from switchlora.init import init_bounds
from switchlora.schedule import max_slots
from switchlora.seeding import CHOICE_STREAM, DECISION_STREAM, numpy_generator

STEPS = 30
LR = 1e-2
# eps 1e-4 instead of 1e-8: right after a reset Adam's update is ~lr * sign(g), so for
# |g| << eps-free scales fp32 rounding differences of 1e-9 in g would flip 1e-3 updates.
# A larger eps keeps the update Lipschitz in g, so rounding cannot be amplified.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-4


class ReferenceSwitchLoRA:
    """The switching algorithm written out with Python loops; state in plain lists."""

    def __init__(self, model, layers, opts, pools):
        self.opts = opts
        self.layers = list(layers.items())
        self.r = opts.rank
        self.rng = numpy_generator(opts.seed, DECISION_STREAM)  # documented decision protocol
        self.choice_rng = numpy_generator(opts.seed, CHOICE_STREAM)
        self.state = []
        for name, layer in self.layers:
            r = self.r
            st = {"ptrA": 0, "ptrB": r // 2, "frzA": [0] * r, "frzB": [0] * r}
            if opts.candidate_source == "pool":
                pool_a = pools[name]["pool_A"].clone().to(layer.lora_A.device)
                pool_b = pools[name]["pool_B"].clone().to(layer.lora_A.device)
                c = pool_a.shape[0]
                # A0 = the last r entries; B rotated so that position r//2 holds entry C - r
                st.update(
                    poolA=pool_a,
                    poolB=pool_b,
                    C=c,
                    useA=[c - r + p for p in range(r)],
                    useB=[c - r + (p - r // 2) % r for p in range(r)],
                )
                assert torch.equal(layer.lora_A.detach(), pool_a[st["useA"]])
                assert torch.equal(layer.lora_B.detach(), pool_b[st["useB"]].T)
            self.state.append(st)
        kinds = {}
        for _, layer in self.layers:
            kinds[id(layer.lora_A)] = "A"
            kinds[id(layer.lora_B)] = "B"
        self.params = [
            (p, kinds.get(id(p), "dense")) for p in model.parameters() if p.requires_grad
        ]
        self.adam = {}
        for p, kind in self.params:
            steps = [0] * self.r if kind != "dense" else 0
            self.adam[id(p)] = {"m": torch.zeros_like(p), "v": torch.zeros_like(p), "t": steps}

    def choose(self, st, layer, factor, positions):
        """Write back outgoing vectors, then pick incoming pool entries (one at a time)."""
        opts, r = self.opts, self.r
        use, pool = st["use" + factor], st["pool" + factor]
        if opts.pool_write_back:
            for i in positions:
                vector = layer.lora_A[i] if factor == "A" else layer.lora_B[:, i]
                pool[use[i]] = vector.detach().clone()
        if opts.pool_choice == "sequential":
            for i in positions:  # position i takes the entry after the one at position i - 1
                use[i] = (use[(i - 1) % r] + 1) % st["C"]
            return [pool[use[i]].clone() for i in positions]
        others = {use[j] for j in range(r) if j not in positions}
        free = sorted(set(range(st["C"])) - others)
        picked = self.choice_rng.choice(free, size=len(positions), replace=False)
        for i, entry in zip(positions, picked):
            use[i] = int(entry)
        return [pool[use[i]].clone() for i in positions]

    @torch.no_grad()
    def switch(self, t):
        opts, r = self.opts, self.r
        interval = opts.interval0 * 0.3 ** (-(t + 1) / (opts.descent_ratio * STEPS))
        x = r / interval
        n_frz = opts.freeze_steps
        for index, ((_, layer), st) in enumerate(zip(self.layers, self.state)):
            k = math.floor(x) + int(self.rng.random() < x - math.floor(x))
            f_a = sum(f > 0 for f in st["frzA"])
            f_b = sum(f > 0 for f in st["frzB"])
            k = min(k, (st["ptrA"] - f_a - st["ptrB"]) % r, (st["ptrB"] - f_b - st["ptrA"]) % r)
            ia = [(st["ptrA"] + i) % r for i in range(k)]
            ib = [(st["ptrB"] + i) % r for i in range(k)]
            st["ptrA"] += k
            st["ptrB"] += k
            w, a, b = layer.base.weight, layer.lora_A, layer.lora_B
            s = layer.scale
            m, n = w.shape
            if opts.candidate_source == "pool":
                new_a = self.choose(st, layer, "A", ia) if k else []
                new_b = self.choose(st, layer, "B", ib) if k else []
            else:
                slots = max_slots(r, opts.interval0)
                bound_a, bound_b = init_bounds(m, n, r, opts.init)
                ca = seeded_candidates(opts.seed, index, FACTOR_A, t, slots, n, bound_a).to(
                    w.device
                )
                cb = seeded_candidates(opts.seed, index, FACTOR_B, t, slots, m, bound_b).to(
                    w.device
                )
                new_a, new_b = list(ca[:k]), list(cb[:k])
            just_set_a, just_set_b = set(), set()
            for i, c in zip(ia, new_a):
                w += s * torch.outer(b[:, i], a[i] - c)
                a[i] = c
                st["frzB"][i] = n_frz
                just_set_b.add(i)
            for j, d in zip(ib, new_b):
                w += s * torch.outer(b[:, j] - d, a[j])
                b[:, j] = d
                st["frzA"][j] = n_frz
                just_set_a.add(j)
            for i in range(r):
                reset_a = st["frzA"][i] == n_frz if n_frz > 0 else i in just_set_a
                reset_b = st["frzB"][i] == n_frz if n_frz > 0 else i in just_set_b
                if reset_a:
                    sa = self.adam[id(a)]
                    sa["m"][i] = 0
                    sa["v"][i] = 0
                    sa["t"][i] = 0
                if reset_b:
                    sb = self.adam[id(b)]
                    sb["m"][:, i] = 0
                    sb["v"][:, i] = 0
                    sb["t"][i] = 0
            for i in range(r):
                if st["frzA"][i] > 0:
                    a.grad[i] = 0
                    st["frzA"][i] -= 1
                if st["frzB"][i] > 0:
                    b.grad[:, i] = 0
                    st["frzB"][i] -= 1

    @torch.no_grad()
    def adam_step(self):
        for p, kind in self.params:
            st = self.adam[id(p)]
            g = p.grad
            if kind == "dense":
                st["t"] += 1
                self._update(p, g, st["m"], st["v"], st["t"])
                continue
            for i in range(self.r):
                st["t"][i] += 1
                if kind == "A":
                    self._update(p[i], g[i], st["m"][i], st["v"][i], st["t"][i])
                else:
                    self._update(p[:, i], g[:, i], st["m"][:, i], st["v"][:, i], st["t"][i])

    @staticmethod
    def _update(p, g, m, v, t):
        p.mul_(1 - LR * WEIGHT_DECAY)  # decoupled decay, on every vector (frozen ones too)
        m.mul_(BETA1).add_((1 - BETA1) * g)
        v.mul_(BETA2).add_((1 - BETA2) * g * g)
        m_hat = m / (1 - BETA1**t)
        v_hat = v / (1 - BETA2**t)
        p.sub_(LR * m_hat / (v_hat.sqrt() + EPS))


CASES = {
    "pool-sequential-writeback-N2": {"freeze_steps": 2},
    "pool-sequential-nowriteback-N1": {"freeze_steps": 1, "pool_write_back": False},
    "pool-random-writeback-N2": {"freeze_steps": 2, "pool_choice": "random"},
    "pool-sequential-N0": {"freeze_steps": 0},
    "seeded-N2": {"freeze_steps": 2, "candidate_source": "seeded"},
    "pool-offload-cpu": {"freeze_steps": 2, "pool_offload_cpu": True},
    # deferred write-backs, and same-step returns of released entries that cannot wait
    "pool-offload-cpu-random": {
        "freeze_steps": 2,
        "pool_offload_cpu": True,
        "pool_choice": "random",
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_library_matches_reference(case):
    compare_with_reference(case, torch.device("cpu"))


def compare_with_reference(case: str, device: torch.device) -> None:
    """30 steps of the library and of the reference side by side on `device` (the model is
    built and initialised on the CPU, then moved; candidates are drawn on the CPU)."""
    opts = make_options(**CASES[case])
    model, layers = build(opts)
    pools = init_model_(model, layers, opts)
    model.to(device)
    ref_model = clone_model(model)
    ref_layers = {name: ref_model.get_submodule(name) for name in layers}
    ref = ReferenceSwitchLoRA(ref_model, ref_layers, opts, pools)

    opt = make_optimizer(model, layers, lr=LR, eps=EPS)
    ctrl = SwitchController(layers, opts, total_steps=STEPS, optimizer=opt)
    ctrl.init_state(pools)
    switched = frozen_seen = 0
    for t in range(STEPS):
        tokens = batch(t).to(device)
        loss = loss_of(model, tokens)
        ref_loss = loss_of(ref_model, tokens)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        loss.backward()
        ref_loss.backward()
        stats = ctrl.step(t)
        switched += stats["vectors_switched"]
        frozen_seen += stats["frozen_vectors"]
        ref.switch(t)
        opt.step()
        ref.adam_step()
        opt.zero_grad()
        ref_model.zero_grad()
    assert switched > 40  # switching really happened, repeatedly
    if opts.freeze_steps > 0:
        assert frozen_seen > 0
    ctrl.flush_pools()
    params = dict(model.named_parameters())
    for name, ref_param in ref_model.named_parameters():
        torch.testing.assert_close(params[name], ref_param, rtol=1e-5, atol=1e-5, msg=name)
    for st, ref_st in zip(ctrl.layers, ref.state):
        assert st.p_a == ref_st["ptrA"] % opts.rank and st.p_b == ref_st["ptrB"] % opts.rank
        assert st.frz_host_a.tolist() == ref_st["frzA"]
        assert st.frz_host_b.tolist() == ref_st["frzB"]
        if opts.candidate_source == "pool":
            assert st.pool_a.use.tolist() == ref_st["useA"]
            assert st.pool_b.use.tolist() == ref_st["useB"]
            torch.testing.assert_close(st.pool_a.entries, ref_st["poolA"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(st.pool_b.entries, ref_st["poolB"], rtol=1e-5, atol=1e-5)
