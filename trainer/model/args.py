"""Resolved model hyper-parameters (a flavour plus config overrides)."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.model.flavors import FLAVORS


@dataclass(frozen=True)
class ModelArgs:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def num_params(self) -> int:
        """Parameters of the dense model (embeddings and lm_head included)."""
        attn = self.dim * self.dim * 2 + 2 * self.dim * self.n_kv_heads * self.head_dim
        mlp = 3 * self.dim * self.ffn_dim
        block = attn + mlp + 2 * self.dim
        return self.n_layers * block + 2 * self.vocab_size * self.dim + self.dim

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) of the dense model, with attention.

        6 * (non-embedding matmul parameters + lm_head) plus the attention score/value
        products, 12 * layers * dim * seq_len / 2 for causal attention (PaLM appendix B).
        """
        matmul_params = (
            self.num_params() - self.vocab_size * self.dim - (2 * self.n_layers + 1) * self.dim
        )
        return 6.0 * matmul_params + 6.0 * self.n_layers * self.dim * seq_len


def resolve_model_args(
    flavor: str,
    vocab_size: int,
    max_seq_len: int,
    overrides: dict[str, object] | None = None,
) -> ModelArgs:
    """Combine a named flavour with explicit overrides (None values are ignored)."""
    if flavor not in FLAVORS:
        raise ValueError(f"model.flavor: unknown flavour {flavor!r}; known: {', '.join(FLAVORS)}")
    base = FLAVORS[flavor]
    values: dict[str, object] = {
        "dim": base.dim,
        "n_layers": base.n_layers,
        "n_heads": base.n_heads,
        "n_kv_heads": base.n_kv_heads,
        "ffn_dim": base.ffn_dim,
        "norm_eps": base.norm_eps,
        "rope_theta": base.rope_theta,
    }
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    if values["n_kv_heads"] is None:
        values["n_kv_heads"] = values["n_heads"]
    return ModelArgs(vocab_size=vocab_size, max_seq_len=max_seq_len, **values)  # type: ignore[arg-type]
