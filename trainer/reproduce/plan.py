"""From a suite and the command line to the list of runs and each run's full config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trainer.config import JobConfig, config_from_dict, config_to_dict, load_toml
from trainer.reproduce.ablations import ablations_for
from trainer.reproduce.spec import Ablation, Recipe, RunSpec, Suite
from trainer.reproduce.suites import REPO


def set_dotted(raw: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    """Set ``section.field`` in a nested config dict (None removes it: the default applies)."""
    section, _, name = key.partition(".")
    if not name:
        raise ValueError(f"config key {key!r} is not of the form section.field")
    table = raw.setdefault(section, {})
    if value is None:
        table.pop(name, None)
    else:
        table[name] = list(value) if isinstance(value, tuple) else value


def build_config(
    suite: Suite,
    recipe: Recipe,
    variant: Mapping[str, Any],
    lr: float,
    extra: Mapping[str, Any] = (),
) -> JobConfig:
    """The checked config of one run: base TOML, suite common, recipe, variant, lr, extra."""
    base = load_toml(REPO / recipe.base) if recipe.base else JobConfig()
    raw = config_to_dict(base)
    for mapping in (suite.common, recipe.overrides, variant, {"optimizer.lr": lr}, dict(extra)):
        for key, value in mapping.items():
            set_dotted(raw, key, value)
    set_dotted(raw, "method.name", recipe.method)
    return config_from_dict(raw)


def _get(cfg: JobConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def normalized(suite: Suite, method: str, variant: Mapping[str, Any]) -> dict[str, Any]:
    """``variant`` without the items its recipe already has (so equal runs get equal names)."""
    recipe = suite.recipes[method]
    cfg = build_config(suite, recipe, {}, recipe.lr)
    return {k: v for k, v in variant.items() if _get(cfg, k) != v}


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(method: str, variant: Mapping[str, Any], lr: float, recipe_lr: float) -> str:
    """``method[__field=value...][__lr=x]``: the run's folder name."""
    parts = [method]
    parts += [f"{k.rpartition('.')[2]}={_fmt(v)}" for k, v in sorted(variant.items())]
    if lr != recipe_lr:
        parts.append(f"lr={lr:g}")
    return "__".join(parts)


def suite_ablations(suite: Suite) -> dict[str, Ablation]:
    """The ablations of ``suite`` (the rank ablation is relative to its SwitchLoRA rank)."""
    recipe = suite.recipes["switchlora"]
    return ablations_for(build_config(suite, recipe, {}, recipe.lr).method.rank)


def plan_runs(
    suite: Suite, methods: Iterable[str], lr_sweep: bool, ablation_names: Iterable[str]
) -> list[RunSpec]:
    """Main runs of ``methods`` (plus the LR sweep), then ablation runs; duplicates merged."""
    runs: dict[str, RunSpec] = {}

    def add(spec: RunSpec) -> None:
        old = runs.get(spec.name)
        if old is None:
            runs[spec.name] = spec
        else:
            runs[spec.name] = RunSpec(
                old.name,
                old.method,
                old.lr,
                old.label,
                old.group,
                old.variant,
                tuple(dict.fromkeys(old.ablations + spec.ablations)),
            )

    for method in methods:
        recipe = suite.recipes[method]
        add(RunSpec(method, method, recipe.lr, method, "main"))
        if lr_sweep:
            for mult in suite.lr_multipliers:
                lr = recipe.lr * mult
                name = run_name(method, {}, lr, recipe.lr)
                add(RunSpec(name, method, lr, f"{method} lr {lr:g}", "lr-sweep"))
    points = ablation_points(suite)
    for ab_name in ablation_names:
        for label, method, variant, name in points[ab_name]:
            lr = suite.recipes[method].lr
            group = "main" if not variant else "ablation"
            add(RunSpec(name, method, lr, label, group, variant, (ab_name,)))
    return list(runs.values())


def ablation_points(suite: Suite) -> dict[str, list[tuple[str, str, dict[str, Any], str]]]:
    """Per ablation: (label, method, normalized variant, run name) of each of its points."""
    points: dict[str, list[tuple[str, str, dict[str, Any], str]]] = {}
    for ab_name, ablation in suite_ablations(suite).items():
        points[ab_name] = []
        for v in ablation.variants:
            variant = normalized(suite, v.method, v.overrides)
            lr = suite.recipes[v.method].lr
            points[ab_name].append(
                (v.label, v.method, variant, run_name(v.method, variant, lr, lr))
            )
    return points


def seed_runs(suite: Suite, best_lr: Mapping[str, float]) -> list[RunSpec]:
    """The extra-seed runs (``suite.seeds``) of each method at its best lr (method -> lr)."""
    runs = []
    for method, lr in best_lr.items():
        recipe = suite.recipes[method]
        for seed in suite.seeds:
            variant = {"job.seed": seed}
            name = run_name(method, variant, lr, recipe.lr)
            label = f"{method} lr {lr:g} seed {seed}"
            runs.append(RunSpec(name, method, lr, label, "seeds", variant))
    return runs
