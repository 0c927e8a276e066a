"""Parameter counts of a config's model, built on the meta device, and the gradient traffic
they imply per step (no data, no process group, no memory)."""

from __future__ import annotations

import dataclasses

from trainer.config import JobConfig
from trainer.reproduce.costs import meta_model, parameter_counts


def model_counts(cfg: JobConfig) -> dict[str, int]:
    """Total and trainable parameters of ``cfg``'s model after the method's conversion."""
    if cfg.model.vocab_size is None:
        raise ValueError("model.vocab_size must be set to count parameters without a tokenizer")
    return parameter_counts(meta_model(cfg, cfg.model.vocab_size))


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
