"""float8 (torchao, emulated on CPU): which linears convert, and SwitchLoRA trains like bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from parallel.distributed import init_distributed, shutdown
from parallel.float8 import apply_float8, float8_linears, has_float8_hardware
from switchlora import AdapterLinear
from switchlora.sharding import local
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.config_checks import check_config
from trainer.methods import prepare_model
from trainer.model.args import resolve_model_args
from trainer.model.llama import Llama
from trainer.train import build_trainer, train_step

pytest.importorskip("torchao.float8")
from torchao.float8.float8_linear import Float8Linear  # noqa: E402

STEPS = 20
SMALL = ["--training.seq_len", "32", "--training.global_batch_size", "4"]


def _cfg(*flags: str):
    return parse_config(["--config", str(ROOT / "configs/tiny_switch.toml"), *SMALL, *flags])


def _meta_model(method: str) -> Llama:
    cfg = _cfg("--method.name", method)
    args = resolve_model_args("tiny", vocab_size=320, max_seq_len=32)
    with torch.device("meta"):
        model = Llama(args)
    prepare_model(model, cfg)
    return model


def test_full_rank_linears_convert_except_lm_head():
    model = _meta_model("full")
    converted = apply_float8(model, "tensorwise", all_gather=False, emulate=True)
    assert len(converted) == 7 * 4  # every projection of the 4 blocks
    assert not isinstance(model.lm_head, Float8Linear)
    assert all(p.requires_grad for p in model.parameters())


def test_dims_not_divisible_by_16_stay_high_precision():
    model = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 40), nn.Linear(40, 16))
    converted = apply_float8(model, "rowwise", all_gather=False, emulate=True)
    assert converted == ["0"]


def test_rowwise_all_gather_is_a_config_error():
    cfg = _cfg("--precision.mode", "float8", "--precision.float8_recipe", "rowwise")
    cfg.precision.float8_all_gather = True
    with pytest.raises(ConfigError, match="float8_all_gather"):
        check_config(cfg, 1)


def _train(mode: str, *flags: str) -> tuple[list[float], list[float], object]:
    """Losses and vectors switched per step, and the trainer, of a STEPS-step run."""
    cfg = _cfg("--precision.mode", mode, "--training.steps", str(STEPS), *flags)
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        it = iter(tr.data.train)
        losses, switched = [], []
        for _ in range(STEPS):
            out = train_step(tr, [next(it)])
            assert not out.skipped
            losses.append(out.loss)
            switched.append(out.metrics["switch/vectors_switched"])
        return losses, switched, tr
    finally:
        shutdown()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine spinning OpenMP threads cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_float8_switchlora_trains_like_bf16(one_thread):
    bf16, bf16_switched, _ = _train("bf16")
    fp8, fp8_switched, tr = _train("float8", "--precision.float8_all_gather", "True")
    # switching really happened, and the schedule does not depend on the precision
    assert sum(fp8_switched) > 0 and fp8_switched == bf16_switched
    layers = [m for m in tr.model.modules() if isinstance(m, AdapterLinear)]
    assert len(layers) == 28
    # The frozen bases are float8 modules, the adapters are not, lm_head stays bf16.
    assert set(float8_linears(tr.model)) == {
        f"{n}.base" for n, m in tr.model.named_modules() if isinstance(m, AdapterLinear)
    }
    for layer in layers:
        assert isinstance(layer.base, Float8Linear)
        assert layer.base.config.emulate == (not has_float8_hardware(tr.info.device))
        assert layer.base.config.enable_fsdp_float8_all_gather
        assert not layer.base.weight.requires_grad
        assert layer.base.weight.grad is None
        assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert not isinstance(tr.model.lm_head, Float8Linear)
    assert bf16[-1] < bf16[0] - 1.0  # it learns
    _check_all_gather_scales_are_current(layers)
    _check_switch_edits_float8_weight(tr)
    if tr.info.device.type == "cpu":
        assert not has_float8_hardware(tr.info.device)  # emulated on the CPU
    assert fp8 != bf16  # the float8 matmuls were in the loop: not bit-identical to bf16
    diffs = [abs(a - b) for a, b in zip(bf16, fp8)]
    assert max(diffs) < 0.05, diffs
    assert abs(bf16[-1] - fp8[-1]) / bf16[-1] < 0.01


def _effective(layer: AdapterLinear) -> torch.Tensor:
    w, a, b = (local(t).float() for t in (layer.base.weight, layer.lora_A, layer.lora_B))
    return w + layer.scale * b @ a


@torch.no_grad()
def _check_all_gather_scales_are_current(layers: list[AdapterLinear]) -> None:
    """After the last step (its switch edited W) each base weight's float8 all-gather scale
    is float8_max / max|W| of the weight as it is now, not of an earlier W."""
    float8_max = torch.finfo(torch.float8_e4m3fn).max
    for layer in layers:
        weight = layer.base.weight
        full = weight.full_tensor() if hasattr(weight, "full_tensor") else weight
        want = (float8_max / full.abs().max().double().clamp(min=1e-12)).float()
        got = weight._local_tensor._precomputed_scale  # the torchao wrapper inside the shard
        assert got is not None, "no precomputed float8 scale"
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@torch.no_grad()
def _check_switch_edits_float8_weight(tr) -> None:
    """A forced switch edits the fp32 storage behind the float8 all-gather wrapper, keeping
    W + s*B*A unchanged (single process: local tensors are whole)."""
    layer = next(m for m in tr.model.modules() if isinstance(m, AdapterLinear))
    w_before = local(layer.base.weight).clone()
    eff_before = _effective(layer)
    tr.method.stateful["switch"].step(STEPS, force_k=2)
    assert not torch.equal(local(layer.base.weight), w_before)
    torch.testing.assert_close(_effective(layer), eff_before, rtol=1e-5, atol=1e-5)


def test_compiled_frozen_float8_linear_has_no_weight_gradient_matmul():
    """torchao's float8 matmul always returns a weight gradient; for a frozen weight the
    compiled backward drops it (one matmul: the input gradient) and saves no input."""
    from torch._functorch.aot_autograd import aot_module_simplified

    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(64, 64, bias=False))
    model[0].weight.requires_grad_(False)
    apply_float8(model, "tensorwise", all_gather=False, emulate=True)
    graphs = {}

    def backend(gm, inputs):
        def keep(name):
            def compiler(graph, _):
                graphs[name] = graph
                return graph

            return compiler

        return aot_module_simplified(gm, inputs, fw_compiler=keep("fw"), bw_compiler=keep("bw"))

    x = torch.randn(8, 64, requires_grad=True)
    torch.compile(model, backend=backend, fullgraph=True)(x).sum().backward()
    matmuls = [n for n in graphs["bw"].graph.nodes if n.target is torch.ops.aten.mm.default]
    assert len(matmuls) == 1
    assert x.grad is not None and model[0].weight.grad is None
