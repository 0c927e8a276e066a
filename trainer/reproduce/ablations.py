"""SwitchLoRA ablations, relative to a suite's SwitchLoRA recipe.

Each ablation holds its default point (the recipe itself), so a variant table always has its
reference row; identical runs are trained once and shared between the main table and the
ablations.
"""

from __future__ import annotations

from trainer.reproduce.spec import Ablation, Variant


def ablations_for(rank: int) -> dict[str, Ablation]:
    """Every ablation by name (candidates, freeze, precision, interval0, descent-ratio, rank).

    ``rank`` is the SwitchLoRA recipe's rank; the rank ablation tries half and double.
    """
    sw = "switchlora"
    items = [
        Ablation(
            "candidates",
            "where switched-in vectors come from: a stored pool with or without write-back of "
            "the trained outgoing vector, or seeded on-the-fly draws (no pool memory)",
            (
                Variant(
                    "pool, write-back",
                    sw,
                    {"switchlora.candidate_source": "pool", "switchlora.pool_write_back": True},
                ),
                Variant(
                    "pool, no write-back",
                    sw,
                    {"switchlora.candidate_source": "pool", "switchlora.pool_write_back": False},
                ),
                Variant("seeded", sw, {"switchlora.candidate_source": "seeded"}),
            ),
        ),
        Ablation(
            "freeze",
            "steps a switched vector's counterpart stays frozen (0: reset its Adam state only)",
            (
                Variant("freeze 0", sw, {"switchlora.freeze_steps": 0}),
                Variant("freeze 5", sw, {"switchlora.freeze_steps": 5}),
            ),
        ),
        Ablation(
            "precision",
            "pure bf16 (parameters, W, pools and optimizer moments stored in bf16, as the official "
            "release trains) against bf16 compute with fp32 master weights",
            (
                Variant("bf16, fp32 masters", sw, {"precision.mode": "bf16"}),
                Variant("pure bf16", sw, {"precision.mode": "pure_bf16"}),
            ),
        ),
        Ablation(
            "interval0",
            "initial switching interval (steps between switches of one vector; 10 is the least that 5 freeze steps allow)",
            tuple(
                Variant(f"interval0 {v:g}", sw, {"switchlora.interval0": v})
                for v in (10.0, 20.0, 40.0, 80.0)
            ),
        ),
        Ablation(
            "descent-ratio",
            "the switching frequency falls to 0.3x its start at step ratio x steps",
            tuple(
                Variant(f"ratio {v:g}", sw, {"switchlora.descent_ratio": v})
                for v in (0.05, 0.1, 0.3)
            ),
        ),
        Ablation(
            "rank",
            "adapter rank of LoRA and SwitchLoRA (half, recipe, double)",
            tuple(
                Variant(f"{m} r={r}", m, {"method.rank": r})
                for m in ("lora", sw)
                for r in (rank // 2, rank, rank * 2)
            ),
        ),
    ]
    return {a.name: a for a in items}
