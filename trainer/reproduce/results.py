"""Collect the finished (and unfinished) runs of an output folder into results.json."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from trainer.config import JobConfig, load_toml
from trainer.data.tokenizer import build_tokenizer
from trainer.diagnostics.rank import JSONL_FILE
from trainer.reproduce.costs import run_costs
from trainer.reproduce.plan import ablation_points, suite_ablations
from trainer.reproduce.runner import (
    ATTEMPTS_FILE,
    CONFIG_FILE,
    read_spec,
    read_summary,
    runs_root,
    wall_seconds,
)
from trainer.reproduce.spec import METHODS, RunSpec, Suite

RESULTS_FILE = "results.json"
RANK_KEYS = ("entropy_rank", "stable_rank", "numerical_rank", "energy_rank")


def tensorboard_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar tag in ``<folder>/tb`` (all event files), by step."""
    tb = Path(folder) / "tb"
    if not tb.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 1})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    by_step = {e.step: e.value for e in acc.Scalars(tag)}
    return sorted(by_step.items())


def tokens_per_second(folder: Path) -> float | None:
    """Median training throughput of the run's log windows (the first, warm-up one dropped)."""
    values = [v for _, v in tensorboard_scalars(folder, "perf/tokens_per_s")]
    if len(values) > 1:
        values = values[1:]
    return statistics.median(values) if values else None


def rank_summary(folder: Path) -> dict[str, Any] | None:
    """The last rank-diagnostic record: mean fractions of full rank and per-layer measures."""
    path = Path(folder) / JSONL_FILE
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return None
    record = json.loads(lines[-1])
    layers = record["layers"]
    out: dict[str, Any] = {"step": record["step"], "layers": layers}
    for key in RANK_KEYS:
        fractions = [v[key] / v["max_rank"] for v in layers.values()]
        out[f"{key}_frac"] = sum(fractions) / len(fractions)
        out[f"{key}_min_frac"] = min(fractions)
    return out


def _vocab(cfg: JobConfig, cache: dict[str, int]) -> int:
    spec = cfg.data.tokenizer
    if spec not in cache:
        cache[spec] = build_tokenizer(spec).vocab_size
    return cache[spec]


def _status(folder: Path, finished: bool) -> str:
    if finished:
        return "finished"
    path = folder / ATTEMPTS_FILE
    if path.is_file():
        attempts = json.loads(path.read_text())
        if attempts and attempts[-1]["exit_code"] not in (0, None):
            return "failed"
        return "unfinished"
    return "pending"


def run_result(folder: Path, spec: RunSpec, vocab_cache: dict[str, int]) -> dict[str, Any]:
    """Everything the report needs about one run folder."""
    cfg = load_toml(folder / CONFIG_FILE)
    summary = read_summary(folder)
    tokens_per_step = cfg.training.global_batch_size * cfg.training.seq_len
    out: dict[str, Any] = {
        "name": spec.name,
        "method": spec.method,
        "lr": spec.lr,
        "label": spec.label,
        "group": spec.group,
        "variant": dict(spec.variant),
        "status": _status(folder, summary is not None),
        "steps": cfg.training.steps,
        "tokens_per_step": tokens_per_step,
        "tokens": cfg.training.steps * tokens_per_step,
        "wall_s": wall_seconds(folder),
    }
    try:
        out.update(run_costs(cfg, _vocab(cfg, vocab_cache)).as_dict())
    except (OSError, ValueError, ImportError) as exc:
        out["costs_error"] = str(exc)
    if summary is None:
        return out
    val = {int(k): float(v) for k, v in summary["val_losses"].items()}
    out.update(
        final_val_loss=summary["final_val_loss"],
        final_val_ppl=math.exp(summary["final_val_loss"]),
        initial_val_ppl=math.exp(summary["initial_val_loss"]),
        params=summary["params"],
        trainable_params=summary["trainable_params"],
        val_curve=[[step * tokens_per_step, loss] for step, loss in sorted(val.items())],
        tokens_per_s=tokens_per_second(folder),
        rank=rank_summary(folder),
    )
    return out


def _order(result: dict[str, Any]) -> tuple:
    group = {"main": 0, "lr-sweep": 1, "seeds": 2, "ablation": 3}.get(result["group"], 4)
    method = METHODS.index(result["method"]) if result["method"] in METHODS else len(METHODS)
    return (group, method, result["name"])


def best_runs(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per method, the finished recipe run (any swept lr) with the lowest validation loss."""
    best: dict[str, str] = {}
    for name, r in runs.items():
        if r["group"] not in ("main", "lr-sweep") or r["variant"] or "final_val_loss" not in r:
            continue
        current = best.get(r["method"])
        if current is None or r["final_val_loss"] < runs[current]["final_val_loss"]:
            best[r["method"]] = name
    return {m: best[m] for m in METHODS if m in best}


def collect(output: Path, suite: Suite) -> dict[str, Any]:
    """results.json content for every run folder under ``<output>/runs``."""
    vocab_cache: dict[str, int] = {}
    results = []
    root = runs_root(output)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        spec = read_spec(folder)
        if spec is not None and (folder / CONFIG_FILE).is_file():
            results.append(run_result(folder, spec, vocab_cache))
    runs = {r["name"]: r for r in sorted(results, key=_order)}
    points = ablation_points(suite)
    ablations = {
        name: {
            "description": ab.description,
            "points": [
                {"label": label, "method": method, "run": run}
                for label, method, _, run in points[name]
            ],
        }
        for name, ab in suite_ablations(suite).items()
        # Only ablations with a run of their own: the recipe runs they share compare nothing.
        if any(
            run != method and "final_val_ppl" in runs.get(run, {})
            for _, method, _, run in points[name]
        )
    }
    best = best_runs(runs)
    return {
        "suite": suite.name,
        "description": suite.description,
        "runs": runs,
        "best": best,
        "seeds": seed_statistics(runs, best),
        "ablations": ablations,
    }


def seed_statistics(runs: dict[str, dict[str, Any]], best: dict[str, str]) -> dict[str, Any]:
    """Per method: the finished runs at its best lr over seeds (the best run and its "seeds"
    runs), with the mean and the sample standard deviation of their validation perplexity."""
    out: dict[str, Any] = {}
    for method, best_name in best.items():
        lr = runs[best_name]["lr"]
        names = [best_name] + [
            n
            for n, r in runs.items()
            if r["group"] == "seeds"
            and r["method"] == method
            and r["lr"] == lr
            and "final_val_ppl" in r
        ]
        ppl = [runs[n]["final_val_ppl"] for n in names]
        mean = sum(ppl) / len(ppl)
        std = (sum((p - mean) ** 2 for p in ppl) / (len(ppl) - 1)) ** 0.5 if len(ppl) > 1 else None
        out[method] = {"lr": lr, "runs": names, "ppl_mean": mean, "ppl_std": std}
    return out


def write_results(output: Path, results: dict[str, Any]) -> Path:
    path = Path(output) / RESULTS_FILE
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
