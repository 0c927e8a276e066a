"""Export of a trained 2-process SwitchLoRA checkpoint: transformers loads it and agrees."""

from __future__ import annotations

import json

import pytest
import torch

from tests.checkpoint.conftest import STEPS, digest
from trainer.checkpoint.dcp_index import read_metadata, read_tensor
from trainer.export import dense_export_bytes, export_checkpoint
from trainer.model.args import resolve_model_args

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def step8(reference):
    return reference["dump"] / "checkpoints" / f"step-{STEPS}"


def hf_logits(folder, tokens, dtype):
    model, info = transformers.LlamaForCausalLM.from_pretrained(
        folder, dtype=dtype, output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    with torch.no_grad():
        return model(tokens).logits.float(), model


def test_hf_export_matches_trainer_logits_in_fp32(step8, probe, reference, tmp_path):
    out = tmp_path / "hf"
    files = export_checkpoint(step8, out, dtype="fp32", log=lambda _: None)
    assert sorted(f.name for f in files) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    trained = torch.load(probe["logits"])
    logits, model = hf_logits(out, trained["tokens"], torch.float32)
    ref = trained["logits"]
    assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    payload = sum(p.numel() * 4 for p in model.parameters())
    args = resolve_model_args("debug", vocab_size=model.config.vocab_size, max_seq_len=64)
    assert dense_export_bytes(args, torch.float32) == payload
    assert digest(reference["dump"] / "checkpoints") == reference["digest"]


def test_sharded_bf16_export_loads_and_torch_format_holds_the_same_tensors(step8, probe, tmp_path):
    out = tmp_path / "bf16"
    files = export_checkpoint(step8, out, dtype="bf16", max_shard_bytes=60_000, log=lambda _: None)
    names = sorted(f.name for f in files)
    assert "model.safetensors.index.json" in names and len(names) > 3
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {n for n in names if n.startswith("model-")}
    trained = torch.load(probe["logits"])
    logits, model = hf_logits(out, trained["tokens"], torch.bfloat16)
    assert model.dtype == torch.bfloat16
    ref = trained["logits"]
    assert (logits - ref).abs().max() <= 5e-2 * ref.abs().max()

    pt = tmp_path / "pt"
    export_checkpoint(step8, pt, fmt="torch", dtype="bf16", log=lambda _: None)
    state = torch.load(pt / "model.pt")
    assert set(state) == set(index["weight_map"])
    for name, tensor in state.items():
        shard = safetensors_torch.load_file(out / index["weight_map"][name])
        assert torch.equal(tensor, shard[name]), name


def test_adapters_only_export(step8, tmp_path):
    out = tmp_path / "adapters"
    export_checkpoint(step8, out, adapters_only=True, log=lambda _: None)
    description = json.loads((out / "adapter_config.json").read_text())
    assert description["method"] == "switchlora" and description["rank"] == 8
    assert description["alpha"] == 1.0 and len(description["target_modules"]) == 7
    assert len(description["layers"]) == 14 and set(description["scale"].values()) == {0.125}
    tensors = safetensors_torch.load_file(out / "adapters.safetensors")
    assert len(tensors) == 28 and not any("base" in k for k in tensors)
    meta = read_metadata(step8).state_dict_metadata
    key = "layers.1.mlp.down_proj.lora_B"
    assert torch.equal(tensors[key], read_tensor(step8, "model." + key, meta["model." + key]))
    assert tensors["layers.0.self_attn.q_proj.lora_A"].shape == (8, 64)


def test_llama1b_export_sizes():
    """The 1.3B model of the paper (hidden 2048, FFN 5461, 24 layers, vocab 32100)."""
    args = resolve_model_args("1b", vocab_size=32100, max_seq_len=1024)
    assert args.num_params() == 1_339_492_352
    assert dense_export_bytes(args, torch.bfloat16) == 2 * 1_339_492_352
    assert dense_export_bytes(args, torch.float32) == 4 * 1_339_492_352
