"""The LLaMA model against Hugging Face's LlamaForCausalLM and the init rules."""

from __future__ import annotations

import pytest
import torch

from trainer.model.args import resolve_model_args
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama


def _tiny(n_kv_heads=None):
    return resolve_model_args(
        "debug", vocab_size=96, max_seq_len=32, overrides={"n_kv_heads": n_kv_heads}
    )


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_logits_match_transformers_llama(n_kv_heads):
    transformers = pytest.importorskip("transformers")
    args = _tiny(n_kv_heads)
    model = Llama(args)
    init_dense_weights(model, seed=3, std=0.02)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        rms_norm_eps=args.norm_eps,
        rope_theta=args.rope_theta,
        max_position_embeddings=args.max_seq_len,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    state = {
        ("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v
        for k, v in model.state_dict().items()
    }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    tokens = torch.randint(0, args.vocab_size, (2, 17))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_init_statistics_and_determinism():
    args = resolve_model_args("tiny", vocab_size=320, max_seq_len=64)
    a, b = Llama(args), Llama(args)
    init_dense_weights(a, seed=1, std=0.02)
    init_dense_weights(b, seed=1, std=0.02)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    w = a.layers["0"].mlp.up_proj.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.equal(a.norm.weight, torch.ones_like(a.norm.weight))
    # Different tensors get different draws.
    assert not torch.equal(
        a.layers["0"].self_attn.q_proj.weight, a.layers["0"].self_attn.k_proj.weight
    )


def test_meta_build_then_init_matches_eager():
    args = _tiny()
    with torch.device("meta"):
        meta = Llama(args)
    meta.to_empty(device="cpu")
    init_dense_weights(meta, seed=5, std=0.02)
    eager = Llama(args)
    init_dense_weights(eager, seed=5, std=0.02)
    tokens = torch.randint(0, args.vocab_size, (1, 9))
    torch.testing.assert_close(meta(tokens), eager(tokens), rtol=0, atol=0)


def test_param_count_and_flops():
    args = resolve_model_args("1b", vocab_size=32100, max_seq_len=512)
    model_params = args.num_params()
    assert 1.33e9 < model_params < 1.35e9  # spec table: 1.34 B
    assert args.flops_per_token(512) > 6 * 1.2e9


def test_flops_per_token_counts_frozen_and_adapter_matmuls():
    args = resolve_model_args("debug", vocab_size=96, max_seq_len=32)
    dense = args.flops_per_token(32)
    linear = sum(6 * m * n for m, n in args.linear_shapes().values()) * args.n_layers
    assert dense == linear + 6 * 96 * 64 + 6 * args.n_layers * 64 * 32
    lora = args.flops_per_token(32, adapter_rank=8, adapted=("q_proj",))
    m, n = args.linear_shapes()["q_proj"]
    assert lora == dense + args.n_layers * (-2 * m * n + 6 * 8 * (m + n))
