"""AdapterLinear and convert_to_adapters."""

import pytest
import torch
from switchlora_testkit import TinyLlama, options
from torch import nn

from switchlora import AdapterLinear, convert_to_adapters
from switchlora.layer import ROLE_ATTR


def test_forward_matches_formula():
    torch.manual_seed(0)
    base = nn.Linear(32, 48, bias=False)
    layer = AdapterLinear(base, rank=4, scale=0.25)
    nn.init.normal_(layer.lora_A)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 5, 32)
    expected = x @ base.weight.T + 0.25 * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.lora_A.shape == (4, 32) and layer.lora_B.shape == (48, 4)
    assert not base.weight.requires_grad
    assert getattr(layer.lora_A, ROLE_ATTR) == "lora_A"


def test_meta_construction_and_convert():
    opts = options()
    with torch.device("meta"):
        model = TinyLlama()
    linear = model.layers[0].mlp.down_proj
    layers = convert_to_adapters(model, opts)
    assert len(layers) == 14
    assert list(layers)[:2] == ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj"]
    down = layers["layers.0.mlp.down_proj"]
    assert down.base is linear and model.layers[0].mlp.down_proj is down
    assert down.lora_A.is_meta and down.lora_A.shape == (8, 33)
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight.requires_grad
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{name}.base.weight" for name in layers}
    assert down.scale == pytest.approx(1 / 8)


def test_convert_errors():
    opts = options()
    model = TinyLlama()
    convert_to_adapters(model, opts)
    with pytest.raises(ValueError, match="already contains"):
        convert_to_adapters(model, opts)
    with pytest.raises(ValueError, match="no nn.Linear"):
        convert_to_adapters(TinyLlama(), options(target_modules=("nope",)))
