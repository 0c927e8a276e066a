"""Merge per-case benchmark results (scripts/bench.py results.json files) into one report.

    python scripts/bench_merge.py OUT case1/results.json case2/results.json ...

Writes OUT/bench.json and OUT/bench.md: the benchmark's tables over every case, then the
GPU targets as ratios of this one run (full-rank MFU in bf16, SwitchLoRA over full-rank
step time, the switch's share of the step, float8 over bf16 step time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.bench.report import add_ratios, markdown_table  # noqa: E402

TARGETS = (
    ("full-rank MFU, bf16", ">= 0.40"),
    ("SwitchLoRA / full-rank step time, bf16", "<= 1.10"),
    ("switch share of the SwitchLoRA step, bf16", "< 0.01"),
    ("float8 / bf16 step time, SwitchLoRA", "reported"),
    ("float8 / bf16 step time, full-rank", "reported"),
)


def target_values(results: list[dict[str, Any]]) -> list[float | None]:
    """The measured value of each of :data:`TARGETS` (None when its cases are missing)."""
    by = {(r["method"], r["precision"]): r for r in results}
    full, switch = by.get(("full", "bf16")), by.get(("switchlora", "bf16"))
    return [
        full.get("mfu") if full else None,
        switch.get("vs_full", {}).get("step_time") if switch else None,
        switch["hook_share"] if switch else None,
        by.get(("switchlora", "float8"), {}).get("vs_bf16", {}).get("step_time"),
        by.get(("full", "float8"), {}).get("vs_bf16", {}).get("step_time"),
    ]


def targets_table(results: list[dict[str, Any]]) -> str:
    rows = ["| target | goal | this run |", "|---|---|---:|"]
    for (name, goal), value in zip(TARGETS, target_values(results)):
        rows.append(f"| {name} | {goal} | {'not measured' if value is None else f'{value:.3f}'} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    out, files = Path(argv[0]), [Path(a) for a in argv[1:]]
    results, meta = [], []
    for f in files:
        if f.is_file():
            data = json.loads(f.read_text())
            meta.append(data["meta"])
            results += [r for r in data["results"] if "error" not in r]
    for r in results:
        r.pop("vs_full", None), r.pop("vs_bf16", None), r.pop("vs_lora", None)
    add_ratios(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    header = f"{meta[0]['device']}, torch {meta[0]['torch']}\n\n" if meta else ""
    text = header + (markdown_table(results) if results else "no finished case\n")
    (out / "bench.md").write_text(text + "\nTargets:\n\n" + targets_table(results))
    print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
