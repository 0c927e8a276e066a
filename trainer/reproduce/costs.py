"""Memory and communication costs of a run, counted from its parameter shapes.

The model of a resolved config is built on the meta device and converted by the method
(:func:`trainer.methods.prepare_model`), so the counts follow the same target modules, ranks
and projections as training; nothing is allocated, so the 1B suite is counted on a laptop.

- optimizer state: every tensor the method's optimizer keeps, over all ranks (global
  sizes): AdamW moments (2 x the parameter), GaLore's projected moments and projector, step
  counts (a scalar per tensor; per row of A / column of B for SwitchLoRA's per-vector AdamW);
- gradient bytes per step: the gradients of the trainable parameters, as a data-parallel
  reduction moves them (fp32: the gradient reduce dtype of every precision mode);
- candidate pools: SwitchLoRA's stored banks (C = min(m, n) vectors per factor per layer,
  fp32; 0 for the seeded source and for layers whose pool is not larger than the rank).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from switchlora.baselines.galore_projector import state_numel
from switchlora.candidates import layer_switchable, pool_size
from switchlora.layer import ROLE_ATTR, AdapterLinear
from trainer.config import JobConfig
from trainer.methods import prepare_model
from trainer.model.args import ModelArgs, resolve_model_args
from trainer.model.llama import Llama

FP32 = 4
"""Bytes of a float32 number (moments, step counts, reduced gradients, pools)."""


@dataclass(frozen=True)
class RunCosts:
    """Parameter counts and memory / communication bytes of one run."""

    params: int
    """Every parameter, frozen base weights included."""
    trainable_params: int
    optimizer_state_bytes: int
    grad_bytes_per_step: int
    pool_bytes: int

    def as_dict(self) -> dict[str, int]:
        """Plain JSON-ready dict."""
        return asdict(self)


def model_args_of(cfg: JobConfig, tokenizer_vocab: int) -> ModelArgs:
    """The resolved model hyper-parameters, as :func:`trainer.train.build_trainer` makes them."""
    vocab = cfg.model.vocab_size or -(-tokenizer_vocab // 64) * 64
    overrides = {
        k: getattr(cfg.model, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")
    }
    args = resolve_model_args(
        cfg.model.flavor, vocab_size=vocab, max_seq_len=cfg.training.seq_len, overrides=overrides
    )
    return ModelArgs(**{**args.__dict__, "init_std": cfg.model.init_std})


def meta_model(cfg: JobConfig, tokenizer_vocab: int) -> nn.Module:
    """The method-converted model on the meta device."""
    with torch.device("meta"):
        model = Llama(model_args_of(cfg, tokenizer_vocab))
    prepare_model(model, cfg)
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total parameters (frozen base weights included) and trainable ones of ``model``."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": params, "trainable_params": trainable}


def _galore_projected(model: nn.Module, cfg: JobConfig) -> set[int]:
    targets = set(cfg.method.target_modules)
    return {
        id(module.weight)
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and path.rpartition(".")[2] in targets
    }


def optimizer_state_numel(model: nn.Module, cfg: JobConfig) -> int:
    """Numbers held by the method's optimizer after its first step."""
    method = cfg.method.name
    projected = _galore_projected(model, cfg) if method == "galore" else set()
    total = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        role = getattr(p, ROLE_ATTR, None)
        if id(p) in projected:
            m, n = p.shape
            total += state_numel(m, n, cfg.method.rank) + 1
        elif method in ("lora", "switchlora") and role == "lora_A":
            total += 2 * p.numel() + p.shape[0]
        elif method in ("lora", "switchlora") and role == "lora_B":
            total += 2 * p.numel() + p.shape[1]
        else:
            total += 2 * p.numel() + 1
    return total


def pool_numel(model: nn.Module, cfg: JobConfig) -> int:
    """Numbers in SwitchLoRA's candidate pools (0 unless method switchlora with source pool)."""
    if cfg.method.name != "switchlora" or cfg.switchlora.candidate_source != "pool":
        return 0
    total = 0
    for layer in model.modules():
        if isinstance(layer, AdapterLinear):
            m, n = layer.out_features, layer.in_features
            if layer_switchable(m, n, layer.rank):
                total += pool_size(m, n) * (m + n)
    return total


def run_costs(cfg: JobConfig, tokenizer_vocab: int) -> RunCosts:
    """Counts of one resolved config (the tokenizer's vocabulary sizes the embeddings)."""
    model = meta_model(cfg, tokenizer_vocab)
    counts = parameter_counts(model)
    return RunCosts(
        **counts,
        optimizer_state_bytes=FP32 * optimizer_state_numel(model, cfg),
        grad_bytes_per_step=FP32 * counts["trainable_params"],
        pool_bytes=FP32 * pool_numel(model, cfg),
    )
