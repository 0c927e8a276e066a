"""Hugging Face LLaMA layout: names, config.json and (sharded) safetensors files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainer.model.args import ModelArgs

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def hf_name(name: str) -> str:
    """Trainer parameter name -> transformers.LlamaForCausalLM name."""
    return name if name == "lm_head.weight" else "model." + name


def hf_config(args: ModelArgs, dtype: torch.dtype, eos_id: int | None) -> dict[str, Any]:
    """config.json of a LlamaForCausalLM with the trained sizes (rope in both spellings)."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len,
        "initializer_range": args.init_std,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": DTYPE_NAMES[dtype],
        "dtype": DTYPE_NAMES[dtype],
    }
    if eos_id is not None:
        # The run's EOS also pads (batched generation, sequence classification); no BOS is used.
        config.update(eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=None)
    return config


def plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Consecutive groups of names whose bytes stay under ``max_shard_bytes`` (one tensor
    larger than the limit gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def write_safetensors(
    folder: Path,
    sizes: dict[str, int],
    produce: Callable[[str], torch.Tensor],
    max_shard_bytes: int,
) -> list[Path]:
    """Write HF-named tensors shard by shard; ``produce(name)`` makes one tensor on demand.

    One shard (``model.safetensors``) when everything fits, else
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``. At most one
    shard is held in memory.
    """
    from safetensors.torch import save_file

    shards = plan_shards(sizes, max_shard_bytes)
    written = []
    weight_map = {}
    for i, names in enumerate(shards, start=1):
        file = (
            SINGLE_FILE if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        )
        tensors = {name: produce(name) for name in names}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        del tensors
        readable_by_all(folder / file)
        weight_map.update(dict.fromkeys(names, file))
        written.append(folder / file)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
        written.append(folder / INDEX_FILE)
    return written


def readable_by_all(path: Path) -> None:
    """Give a file the usual permissions of new files (safetensors creates them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
