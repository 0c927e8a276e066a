"""Parameter counts of a config's model, built on the meta device, and the gradient traffic
they imply per step (no data, no process group, no memory)."""

from __future__ import annotations

import dataclasses

import torch

from trainer.config import JobConfig
from trainer.methods import prepare_model
from trainer.model.args import resolve_model_args
from trainer.model.llama import Llama


def model_counts(cfg: JobConfig) -> dict[str, int]:
    """Total and trainable parameters of ``cfg``'s model after the method's conversion."""
    overrides = {
        k: getattr(cfg.model, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")
    }
    if cfg.model.vocab_size is None:
        raise ValueError("model.vocab_size must be set to count parameters without a tokenizer")
    args = resolve_model_args(
        cfg.model.flavor, cfg.model.vocab_size, cfg.training.seq_len, overrides=overrides
    )
    with torch.device("meta"):
        model = Llama(args)
    prepare_model(model, cfg)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": params, "trainable_params": trainable}


def traffic_saving(cfg: JobConfig) -> dict[str, float]:
    """Gradient traffic of ``cfg``'s method against full-rank training of the same model.

    Replicate (DDP semantics): one all-reduce of the trainable gradients per step, so the
    ratio is trainable / full-rank parameters. FSDP with bf16 all-gathers (forward and
    backward) and fp32 reduce-scatters: 2 * 2 B * all parameters + 4 B * trainable ones.
    """
    method = count_for(cfg, cfg.method.name)
    full = count_for(cfg, "full")
    replicate = method["trainable_params"] / full["params"]
    fsdp_method = 4 * method["params"] + 4 * method["trainable_params"]
    fsdp_full = 4 * full["params"] + 4 * full["params"]
    return {
        **method,
        "full_params": full["params"],
        "trainable_fraction": replicate,
        "replicate_saving": 1 - replicate,
        "fsdp_saving": 1 - fsdp_method / fsdp_full,
    }


def count_for(cfg: JobConfig, method: str) -> dict[str, int]:
    """:func:`model_counts` with ``method.name`` replaced."""
    return model_counts(
        dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, name=method))
    )
