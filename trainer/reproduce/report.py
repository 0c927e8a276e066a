"""The markdown report of results.json: methods table, LR sweep, effective rank, ablations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.reproduce.spec import METHODS

REPORT_FILE = "report.md"


def fmt_count(n: float | None) -> str:
    """12.3M / 456.7K / 89 parameters."""
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def fmt_bytes(n: float | None) -> str:
    """Binary units: 1.50 GiB, 12.3 MiB, 4.0 KiB."""
    if n is None:
        return "-"
    if n == 0:
        return "0"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_rate(tokens_per_s: float | None) -> str:
    if tokens_per_s is None:
        return "-"
    return f"{tokens_per_s / 1e3:.1f}k" if tokens_per_s >= 1e3 else f"{tokens_per_s:.0f}"


def rel(value: float | None, ref: float | None) -> str:
    """Relative difference as a signed percentage (``-`` when either side is missing)."""
    if value is None or ref is None:
        return "-"
    return f"{(value - ref) / ref:+.1%}"


def _ppl(run: dict[str, Any] | None) -> float | None:
    return run.get("final_val_ppl") if run else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def methods_table(results: dict[str, Any]) -> list[str]:
    runs, best = results["runs"], results["best"]
    full = _ppl(runs.get(best.get("full", "")))
    rows = []
    for method in METHODS:
        if method not in best:
            continue
        r = runs[best[method]]
        share = r["trainable_params"] / r["params"] if r.get("params") else None
        rows.append(
            [
                method,
                f"{r['lr']:g}",
                f"{r['final_val_ppl']:.2f}",
                "-" if method == "full" else rel(r["final_val_ppl"], full),
                f"{fmt_count(r['trainable_params'])} ({share:.0%})" if share else "-",
                fmt_bytes(r.get("optimizer_state_bytes")),
                fmt_bytes(r.get("grad_bytes_per_step")),
                fmt_bytes(r.get("pool_bytes")),
                fmt_rate(r.get("tokens_per_s")),
            ]
        )
    header = [
        "method",
        "lr",
        "val ppl",
        "vs full-rank",
        "trainable params",
        "optimizer state",
        "gradient bytes / step",
        "candidate pools",
        "tokens/s",
    ]
    return _table(header, rows)


def sweep_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for r in results["runs"].values():
        if r["group"] in ("main", "lr-sweep") and not r["variant"]:
            ppl = f"{r['final_val_ppl']:.2f}" if "final_val_ppl" in r else r["status"]
            chosen = "yes" if results["best"].get(r["method"]) == r["name"] else ""
            rows.append([r["method"], f"{r['lr']:g}", ppl, chosen])
    if len({row[0] for row in rows}) == len(rows):
        return []  # one lr per method: no sweep
    rows.sort(key=lambda row: (METHODS.index(row[0]), float(row[1])))
    return _table(["method", "lr", "val ppl", "best"], rows)


def rank_table(results: dict[str, Any]) -> list[str]:
    runs, best = results["runs"], results["best"]
    rows = []
    for method in METHODS:
        rank = runs[best[method]].get("rank") if method in best else None
        if not rank:
            continue
        rows.append(
            [
                method,
                str(rank["step"]),
                f"{rank['entropy_rank_frac']:.1%}",
                f"{rank['stable_rank_frac']:.1%}",
                f"{rank['numerical_rank_frac']:.1%} (min {rank['numerical_rank_min_frac']:.1%})",
                f"{rank['energy_rank_frac']:.1%}",
            ]
        )
    if not rows:
        return []
    header = ["method", "step", "entropy rank", "stable rank", "numerical rank", "90 % energy rank"]
    return _table(header, rows)


def ablation_table(results: dict[str, Any], name: str) -> list[str]:
    runs, ab = results["runs"], results["ablations"][name]
    full = _ppl(runs.get(results["best"].get("full", "")))
    default = _ppl(runs.get("switchlora"))
    rows = []
    for point in ab["points"]:
        r = runs.get(point["run"])
        if r is None:
            continue
        ppl = r.get("final_val_ppl")
        rank = r.get("rank") or {}
        rows.append(
            [
                point["label"],
                f"{ppl:.2f}" if ppl else r["status"],
                rel(ppl, default),
                rel(ppl, full),
                f"{rank['numerical_rank_frac']:.1%}" if rank else "-",
                fmt_bytes(r.get("pool_bytes")),
            ]
        )
    if sum(row[1][0].isdigit() for row in rows) < 2:
        return []  # fewer than two finished points: nothing to compare
    header = [
        "variant",
        "val ppl",
        "vs SwitchLoRA recipe",
        "vs full-rank",
        "numerical rank",
        "pools",
    ]
    return _table(header, rows)


def seeds_table(results: dict[str, Any]) -> list[str]:
    """Mean +- sample standard deviation of the validation perplexity over seeds."""
    stats = results.get("seeds", {})
    if not any(len(s["runs"]) > 1 for s in stats.values()):
        return []
    rows = []
    for method, s in stats.items():
        spread = f" +- {s['ppl_std']:.2f}" if s["ppl_std"] is not None else ""
        rows.append([method, f"{s['lr']:g}", str(len(s["runs"])), f"{s['ppl_mean']:.2f}{spread}"])
    return _table(["method", "best lr", "seeds", "val ppl (mean +- std)"], rows)


def render(results: dict[str, Any], plots: list[str] | None = None) -> str:
    """The whole report as markdown text."""
    runs = results["runs"]
    lines = [f"# Reproduction suite `{results['suite']}`", "", results["description"] + ".", ""]
    tokens = {r["tokens"] for r in runs.values()}
    if len(tokens) == 1:
        lines += [f"Every run trains on {fmt_count(tokens.pop())} tokens.", ""]
    lines += ["## Methods", ""]
    lines += methods_table(results) + [""]
    lines += [
        "Validation perplexity at the last step; *vs full-rank* is the relative perplexity "
        "difference. Optimizer state and candidate pools: bytes over all ranks; gradient bytes: "
        "the fp32 gradients a data-parallel reduction moves per step; tokens/s: median of the "
        "logged windows.",
        "",
    ]
    missing = [f"{r['name']} ({r['status']})" for r in runs.values() if "final_val_ppl" not in r]
    if missing:
        lines += ["Not finished: " + ", ".join(missing) + ".", ""]
    for title, block in (
        ("Learning-rate sweep", sweep_table(results)),
        ("Seeds at the best lr", seeds_table(results)),
        ("Effective rank of the accumulated update", rank_table(results)),
    ):
        if block:
            lines += [f"## {title}", ""] + block + [""]
            if title.startswith("Effective"):
                lines += [
                    "Mean over the adapted projections of each measure divided by the "
                    "projection's full rank min(m, n), for D = W - W_init + s*B*A at the "
                    "given step (numerical rank: singular values above 1e-3 of the largest). "
                    "A LoRA update cannot exceed rank 2r.",
                    "",
                ]
    for name, ab in results["ablations"].items():
        block = ablation_table(results, name)
        if block:
            lines += [f"## Ablation: {name}", "", ab["description"] + ".", ""] + block + [""]
    for plot in plots or []:
        lines += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    return "\n".join(lines)


def write_report(output: Path, results: dict[str, Any], plots: list[str] | None = None) -> Path:
    path = Path(output) / REPORT_FILE
    path.write_text(render(results, plots))
    return path
