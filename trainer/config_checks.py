"""Consistency checks that need more than one field (or the world size)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from parallel.activation_checkpoint import parse_every
from trainer.config import ConfigError, JobConfig
from trainer.methods import get_method
from trainer.model.args import ModelArgs, resolve_model_args


def check_config(cfg: JobConfig, world_size: int) -> None:
    """Raise :class:`ConfigError` naming the key of the first inconsistency found."""
    t = cfg.training
    if t.steps <= 0:
        raise ConfigError(f"training.steps: must be positive, got {t.steps}")
    if t.seq_len <= 0:
        raise ConfigError(f"training.seq_len: must be positive, got {t.seq_len}")
    if t.global_batch_size % world_size:
        raise ConfigError(
            f"training.global_batch_size: {t.global_batch_size} is not divisible by the "
            f"world size {world_size}"
        )
    per_rank = t.global_batch_size // world_size
    if t.local_batch_size < 0 or (t.local_batch_size and per_rank % t.local_batch_size):
        raise ConfigError(
            f"training.local_batch_size: {t.local_batch_size} does not divide the per-rank "
            f"batch {per_rank} (global_batch_size {t.global_batch_size} / world size {world_size})"
        )
    if t.max_norm < 0:
        raise ConfigError(
            f"training.max_norm: must be >= 0 (0 disables clipping), got {t.max_norm}"
        )
    if t.max_skipped_steps < 0:
        raise ConfigError(
            f"training.max_skipped_steps: must be >= 0 (0 = stop at the first), got "
            f"{t.max_skipped_steps}"
        )
    ac = cfg.activation_checkpoint
    if ac.mode == "selective" and ac.selective_ac_option != "op":
        try:
            parse_every(ac.selective_ac_option)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if cfg.profiling.profile_freq <= 0:
        raise ConfigError(
            f"profiling.profile_freq: must be positive, got {cfg.profiling.profile_freq}"
        )
    if cfg.metrics.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "metrics.wandb: the wandb package is not installed (pip install '.[wandb]')"
        )
    for key in ("val_tokens", "final_val_tokens"):
        if getattr(t, key) < 0:
            raise ConfigError(f"training.{key}: must be >= 0 (0 = off), got {getattr(t, key)}")
    if cfg.metrics.log_every <= 0:
        raise ConfigError(f"metrics.log_every: must be positive, got {cfg.metrics.log_every}")
    if cfg.job.lock_timeout_s < 1:
        raise ConfigError(f"job.lock_timeout_s: must be positive, got {cfg.job.lock_timeout_s}")
    if cfg.checkpoint.enable and cfg.checkpoint.interval <= 0:
        raise ConfigError(f"checkpoint.interval: must be positive, got {cfg.checkpoint.interval}")
    if cfg.checkpoint.keep_latest < 1:
        raise ConfigError(
            f"checkpoint.keep_latest: must be at least 1, got {cfg.checkpoint.keep_latest}"
        )
    if not 0.0 <= cfg.lr_schedule.min_lr_ratio <= 1.0:
        raise ConfigError(
            f"lr_schedule.min_lr_ratio: must be in [0, 1], got {cfg.lr_schedule.min_lr_ratio}"
        )
    if cfg.optimizer.lr <= 0:
        raise ConfigError(f"optimizer.lr: must be positive, got {cfg.optimizer.lr}")
    source = cfg.data.source
    if not source.startswith("embedded:") and not Path(source).exists():
        raise ConfigError(
            f"data.source: {source} does not exist (prepare it with scripts/prepare_data.py "
            "or use 'embedded:shakespeare')"
        )
    tok = cfg.data.tokenizer
    if tok != "byte" and not Path(tok).is_file():
        raise ConfigError(f"data.tokenizer: tokenizer file {tok} does not exist")
    if cfg.precision.float8_all_gather and cfg.precision.float8_recipe != "tensorwise":
        raise ConfigError(
            "precision.float8_all_gather: needs precision.float8_recipe = 'tensorwise'"
        )
    if cfg.precision.float8_all_gather and cfg.precision.mode != "float8":
        raise ConfigError(
            f"precision.float8_all_gather: needs precision.mode = 'float8', got "
            f"'{cfg.precision.mode}'"
        )
    get_method(cfg.method.name).check_config(cfg)


def model_args_from_config(cfg: JobConfig, vocab_size: int) -> ModelArgs:
    """The flavour named by ``model.flavor`` with the config's explicit overrides applied."""
    overrides = {
        k: getattr(cfg.model, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")
    }
    try:
        args = resolve_model_args(
            cfg.model.flavor,
            vocab_size=vocab_size,
            max_seq_len=cfg.training.seq_len,
            overrides=overrides,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ModelArgs(**{**args.__dict__, "init_std": cfg.model.init_std})


def check_model_config(cfg: JobConfig) -> None:
    """Model-size checks that need no tokenizer (run before the process group starts)."""
    vocab = cfg.model.vocab_size or 1
    check_model_args(model_args_from_config(cfg, vocab), cfg, None)


def check_model_args(args: ModelArgs, cfg: JobConfig, tokenizer_vocab: int | None) -> None:
    """Checks of the resolved model sizes (flavour plus overrides); vocab only when given."""
    if args.dim % args.n_heads:
        raise ConfigError(f"model.n_heads: {args.n_heads} does not divide model.dim {args.dim}")
    if args.n_heads % args.n_kv_heads:
        raise ConfigError(
            f"model.n_kv_heads: {args.n_kv_heads} does not divide model.n_heads {args.n_heads}"
        )
    if args.head_dim % 2:
        raise ConfigError(
            f"model.dim / model.n_heads = {args.head_dim} must be even for rotary embeddings"
        )
    if tokenizer_vocab is not None and args.vocab_size < tokenizer_vocab:
        raise ConfigError(
            f"model.vocab_size: {args.vocab_size} is smaller than the tokenizer's vocabulary "
            f"({tokenizer_vocab})"
        )
    if cfg.training.seq_len > args.max_seq_len:
        raise ConfigError(f"training.seq_len: {cfg.training.seq_len} exceeds {args.max_seq_len}")
    if get_method(cfg.method.name).low_rank:
        smallest = min(args.dim, args.ffn_dim, args.n_kv_heads * args.head_dim)
        if cfg.method.rank > smallest:
            raise ConfigError(
                f"method.rank: {cfg.method.rank} exceeds the smallest adapted dimension {smallest}"
            )
