"""PNG plots of validation loss against training tokens (matplotlib: the optional extra 'plot')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.reproduce.spec import METHODS

PLOT_HINT = "plots need matplotlib: pip install -e '.[plot]'"


def token_unit(results: dict[str, Any]) -> tuple[float, str]:
    """Divisor and name of the token axis unit (thousands, millions or billions)."""
    most = max((r.get("tokens", 0) for r in results["runs"].values()), default=0)
    for size, name in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if most >= 10 * size:
            return size, name
    return 1.0, ""


def _curve(run: dict[str, Any], unit: float) -> tuple[list[float], list[float]]:
    """Tokens (in ``unit``) and val loss, without the step-0 point (it dwarfs the rest)."""
    points = [(t / unit, loss) for t, loss in run.get("val_curve", []) if t > 0]
    return [p[0] for p in points], [p[1] for p in points]


def _xlabel(name: str) -> str:
    return f"training tokens ({name})" if name else "training tokens"


def plot_methods(results: dict[str, Any], path: Path) -> Path | None:
    """Val loss vs tokens of each method's best run; None when nothing finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, best = results["runs"], results["best"]
    if not best:
        return None
    unit, unit_name = token_unit(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        if method in best:
            run = runs[best[method]]
            x, y = _curve(run, unit)
            ax.plot(x, y, marker="o", ms=3, label=f"{method} (lr {run['lr']:g})")
    ax.set_xlabel(_xlabel(unit_name))
    ax.set_ylabel("validation loss")
    ax.set_title(f"{results['suite']}: validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ablations(results: dict[str, Any], path: Path) -> Path | None:
    """One panel per ablation with two or more finished points; full-rank dashed for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    panels = {
        name: [(p["label"], runs[p["run"]]) for p in ab["points"] if p["run"] in runs]
        for name, ab in results["ablations"].items()
    }
    panels = {k: [(lab, r) for lab, r in v if "val_curve" in r] for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if len(v) >= 2}
    if not panels:
        return None
    full = runs.get(results["best"].get("full", ""))
    unit, unit_name = token_unit(results)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, points) in zip(axes.flat, panels.items()):
        for label, run in points:
            ax.plot(*_curve(run, unit), marker="o", ms=3, label=label)
        if full and "val_curve" in full:
            ax.plot(*_curve(full, unit), "k--", lw=1, label="full-rank")
        ax.set_title(name)
        ax.set_xlabel(_xlabel(unit_name))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for row in axes:
        row[0].set_ylabel("validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(results: dict[str, Any], output: Path) -> list[str]:
    """val_loss.png and ablations.png (when there is something to draw); [] without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(PLOT_HINT)
        return []
    made = [
        plot_methods(results, Path(output) / "val_loss.png"),
        plot_ablations(results, Path(output) / "ablations.png"),
    ]
    return [str(p) for p in made if p is not None]
