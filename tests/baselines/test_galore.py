"""GaLore on a single process against a reference written here: SVD-projected Adam in loops.

The reference follows GaLore's galore_projector.py / adamw.py: at every update_interval-th
step of a weight, P = top-r right singular vectors (m >= n) or left ones (m < n) of the
gradient from torch.linalg.svd, signed by the project's rule (largest-magnitude entry
positive); Adam on the projected gradient with GaLore's bias correction; the normalised
update projected back, scaled by alpha; decoupled weight decay after the update.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from switchlora.baselines.galore import GaLoreAdamW, refresh_count
from switchlora.baselines.galore_projector import (
    compute_projector,
    moment_shape,
    projector_shape,
    state_numel,
)
from trainer.cli import parse_config
from trainer.methods.galore import galore_param_groups
from trainer.model.args import resolve_model_args
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama

STEPS, INTERVAL, RANK = 20, 7, 8
LR, BETAS, EPS, WD, ALPHA = 1e-2, (0.9, 0.999), 1e-6, 0.1, 0.25


def signed(vectors: torch.Tensor) -> torch.Tensor:
    """Columns flipped so that each one's largest-magnitude entry is positive."""
    out = vectors.clone()
    for j in range(out.shape[1]):
        i = out[:, j].abs().argmax()
        if out[i, j] < 0:
            out[:, j] = -out[:, j]
    return out


def reference_projector(grad: torch.Tensor, rank: int) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(grad.double(), full_matrices=False)
    if grad.shape[0] >= grad.shape[1]:
        return signed(vh[:rank].T).T.float()  # [r, n]
    return signed(u[:, :rank]).float()  # [m, r]


class ReferenceGaLore:
    """Plain-loop GaLore AdamW; `projected` holds the ids of the projected weights."""

    def __init__(self, params: list[torch.nn.Parameter], projected: set[int]) -> None:
        self.params = params
        self.projected = projected
        self.state: dict[int, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = BETAS
        for p in self.params:
            st = self.state.setdefault(id(p), {"step": 0})
            grad = p.grad
            right = p.dim() == 2 and p.shape[0] >= p.shape[1]
            if id(p) in self.projected:
                if st["step"] % INTERVAL == 0:
                    st["P"] = reference_projector(grad, RANK)
                grad = grad @ st["P"].T if right else st["P"].T @ grad
            if "m" not in st:
                st["m"] = torch.zeros_like(grad)
                st["v"] = torch.zeros_like(grad)
            st["step"] += 1
            t = st["step"]
            st["m"] = b1 * st["m"] + (1 - b1) * grad
            st["v"] = b2 * st["v"] + (1 - b2) * grad * grad
            step_size = LR * math.sqrt(1 - b2**t) / (1 - b1**t)
            norm = st["m"] / (st["v"].sqrt() + EPS)
            if id(p) in self.projected:
                norm = ALPHA * (norm @ st["P"] if right else st["P"] @ norm)
            p -= step_size * norm
            p -= LR * WD * p


def build_model() -> tuple[Llama, object]:
    cfg = parse_config(
        ["--model.flavor", "debug", "--method.name", "galore", "--method.rank", str(RANK)]
        + ["--galore.update_interval", str(INTERVAL), "--galore.scale", str(ALPHA)]
    )
    args = resolve_model_args("debug", vocab_size=256, max_seq_len=64)
    model = Llama(args)
    init_dense_weights(model, 0, 0.02)
    return model, cfg


def loss_of(model: Llama, step: int) -> torch.Tensor:
    x = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(step))
    return F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())


def test_galore_matches_the_svd_reference_over_20_steps():
    model, cfg = build_model()
    ref_model = copy.deepcopy(model)
    groups = galore_param_groups(model, cfg)
    opt = GaLoreAdamW(groups, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    names = dict(model.named_parameters())
    ref_params = dict(ref_model.named_parameters())
    projected_names = {n for n, p in names.items() if any(p is q for q in groups[0]["params"])}
    assert len(projected_names) == 14  # q, k, v, o, gate, up, down in 2 blocks
    ref = ReferenceGaLore(list(ref_params.values()), {id(ref_params[n]) for n in projected_names})
    sides = set()
    for step in range(STEPS):
        for m, o in ((model, opt), (ref_model, ref)):
            loss_of(m, step).backward()
            o.step()
            for p in m.parameters():
                p.grad = None
        for name in names:
            torch.testing.assert_close(
                names[name], ref_params[name], atol=2e-6, rtol=1e-5, msg=f"{name} at {step}"
            )
    for p in groups[0]["params"]:
        state = opt.state[p]
        assert tuple(state["projector"].shape) == projector_shape(*p.shape, RANK)
        assert tuple(state["exp_avg"].shape) == moment_shape(*p.shape, RANK)
        assert state["step"].item() == STEPS
        sides.add("right" if p.shape[0] >= p.shape[1] else "left")
    assert sides == {"right", "left"}
    assert refresh_count(STEPS, INTERVAL) == 3  # steps 0, 7 and 14


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32)])
def test_projector_is_the_signed_top_singular_basis(shape):
    gen = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(shape[0], 20, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(shape[1], 20, generator=gen)).Q
    grad = (u * torch.linspace(3.0, 0.1, 20)) @ v.T  # well separated singular values
    got = compute_projector(grad, 6)
    torch.testing.assert_close(got, reference_projector(grad, 6), atol=1e-6, rtol=0)


def test_state_sizes_and_refresh_counts():
    assert moment_shape(2048, 2048, 512) == (2048, 512)
    assert moment_shape(2048, 5461, 512) == (5461, 512)
    assert state_numel(5461, 2048, 512) == 2 * 5461 * 512 + 512 * 2048
    assert [refresh_count(s, 200) for s in (0, 1, 200, 201, 400, 401)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="rank"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.zeros(4, 3))], "rank": 4}])
