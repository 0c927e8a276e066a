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

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each projection of one block, by module name."""
        kv = self.n_kv_heads * self.head_dim
        return {
            "q_proj": (self.dim, self.dim),
            "k_proj": (kv, self.dim),
            "v_proj": (kv, self.dim),
            "o_proj": (self.dim, self.dim),
            "gate_proj": (self.ffn_dim, self.dim),
            "up_proj": (self.ffn_dim, self.dim),
            "down_proj": (self.dim, self.ffn_dim),
        }

    def flops_per_token(
        self, seq_len: int, adapter_rank: int = 0, adapted: tuple[str, ...] = ()
    ) -> float:
        """Training FLOPs per token (forward + backward), as the model really computes them.

        A trained m x n projection costs 6mn (forward, input gradient, weight gradient). A frozen
        base weight with a rank-r adapter costs 4mn (no weight gradient) plus 6r(m + n). Causal
        attention adds 6 * layers * dim * seq_len (half of the full score/value products).
        """
        per_block = 0.0
        for name, (m, n) in self.linear_shapes().items():
            if adapter_rank and name in adapted:
                per_block += 4.0 * m * n + 6.0 * adapter_rank * (m + n)
            else:
                per_block += 6.0 * m * n
        lm_head = 6.0 * self.vocab_size * self.dim
        return self.n_layers * per_block + lm_head + 6.0 * self.n_layers * self.dim * seq_len


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
