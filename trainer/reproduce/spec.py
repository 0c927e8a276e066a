"""What a suite is made of: method recipes, ablations, and the runs planned from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("full", "lora", "relora", "galore", "switchlora")
"""Table order of the compared methods."""


@dataclass(frozen=True)
class Recipe:
    """One method's recommended setup: learning rate and config changes on top of the base."""

    method: str
    lr: float
    base: str | None = None
    """TOML file (relative to the repository root) to start from; None: JobConfig defaults."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Dotted config keys (``section.field``) -> values, applied after the suite's common ones."""


@dataclass(frozen=True)
class Variant:
    """One point of an ablation: a method and config changes on top of its recipe."""

    label: str
    method: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ablation:
    """A named set of variants compared in one table and one plot."""

    name: str
    description: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class Suite:
    """Runs that share data, model, token budget and schedule; only the method differs."""

    name: str
    description: str
    recipes: Mapping[str, Recipe]
    common: Mapping[str, Any]
    """Dotted config keys applied to every run of the suite (model, data, steps, batch ...)."""
    nproc: int = 1
    """Processes per run (torchrun when > 1)."""
    lr_multipliers: tuple[float, ...] = (0.5, 2.0)
    """The LR sweep (on by default): extra runs at these multiples of each recipe's lr; with the
    recipe's own lr every method is tried at three values and the best on validation is kept."""
    seeds: tuple[int, ...] = ()
    """Extra seeds (job.seed) trained at each method's best lr once its sweep has finished; the
    report gives the mean and spread over the best run and these."""
    default_ablations: tuple[str, ...] = ()
    """Ablations the suite trains when the command line names none."""
    prepare: Callable[[Path], dict[str, Any]] | None = None
    """Makes the suite's data under the given folder; returns its ``data.*`` overrides."""
    seconds_per_step: Mapping[str, float] = field(default_factory=dict)
    """Measured seconds per optimizer step by method (at ``nproc``), for the plan's estimate."""
    seconds_per_run: float = 0.0
    """Measured per-run overhead (start-up, evaluations, checkpoints), for the estimate."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of a suite; ``name`` is also its folder under ``<output>/runs``."""

    name: str
    method: str
    lr: float
    label: str
    group: str
    """"main" (a method at its recipe lr), "lr-sweep", "seeds" or "ablation"."""
    variant: Mapping[str, Any] = field(default_factory=dict)
    """Config changes on top of the method's recipe (lr excluded)."""
    ablations: tuple[str, ...] = ()
    """Ablations this run is a point of."""
