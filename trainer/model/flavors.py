"""Named LLaMA sizes.

The paper's sizes (SiLU, RMSNorm eps 1e-6, untied embeddings)
plus small ones that train on a CPU. ``vocab_size`` is left to the tokenizer unless set.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavor:
    dim: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    n_kv_heads: int | None = None
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0


FLAVORS: dict[str, Flavor] = {
    # CPU sizes: tests, the README's default run, the benchmark's ~7M model.
    "debug": Flavor(dim=64, n_layers=2, n_heads=4, ffn_dim=176),
    "tiny": Flavor(dim=128, n_layers=4, n_heads=4, ffn_dim=352),
    "small": Flavor(dim=256, n_layers=4, n_heads=4, ffn_dim=688),
    "cpu5m": Flavor(dim=256, n_layers=6, n_heads=4, ffn_dim=688),
    # The sizes used by the paper and its baselines (ReLoRA, GaLore).
    "60m": Flavor(dim=512, n_layers=8, n_heads=8, ffn_dim=1376),
    "130m": Flavor(dim=768, n_layers=12, n_heads=12, ffn_dim=2048),
    "250m": Flavor(dim=768, n_layers=24, n_heads=16, ffn_dim=2560),
    "350m": Flavor(dim=1024, n_layers=24, n_heads=16, ffn_dim=2736),
    "1b": Flavor(dim=2048, n_layers=24, n_heads=32, ffn_dim=5461),
    "7b": Flavor(dim=4096, n_layers=32, n_heads=32, ffn_dim=11008),
}
