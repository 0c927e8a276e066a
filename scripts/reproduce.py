"""Reproduce the paper's comparison: full-rank, LoRA, ReLoRA, GaLore and SwitchLoRA on one suite.

    python scripts/reproduce.py --suite cpu-switch --plan          # the runs and their estimate
    python scripts/reproduce.py --suite cpu-switch                 # sweep, seeds, ablations
    python scripts/reproduce.py --suite cpu-small --no-lr-sweep    # one lr per method
    python scripts/reproduce.py --suite cpu-small --methods --ablation freeze rank
    python scripts/reproduce.py --suite llama350m --nproc 8 --set data.source=/data/c4_t5

Every run is a separate trainer process (torchrun when --nproc > 1) in
``<output>/runs/<name>``. Finished runs are skipped, so rerunning the same command after an
interruption continues where it stopped (an unfinished run resumes from its checkpoint). At
the end it writes ``results.json``, ``report.md`` and ``val_loss.png`` (+ ``ablations.png``)
in the output folder. See docs/reproduce.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import ConfigError  # noqa: E402
from trainer.reproduce.plan import suite_ablations  # noqa: E402
from trainer.reproduce.runner import RunConflict  # noqa: E402
from trainer.reproduce.spec import METHODS  # noqa: E402
from trainer.reproduce.suite_run import SuiteOptions, run_suite  # noqa: E402
from trainer.reproduce.suites import SUITES, get_suite  # noqa: E402


def parse_value(text: str) -> Any:
    """A TOML value (number, true/false, "string", [list]); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set expects section.field=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--suite", required=True, choices=list(SUITES))
    p.add_argument(
        "--output", type=Path, help="folder of the suite (default outputs/reproduce/SUITE)"
    )
    p.add_argument(
        "--methods",
        nargs="*",
        choices=METHODS,
        default=list(METHODS),
        help="methods of the main table (default: all five; give none to train only ablations)",
    )
    p.add_argument(
        "--no-lr-sweep",
        dest="lr_sweep",
        action="store_false",
        help="train each method at its recipe lr only (default: also x0.5 and x2, best on validation)",
    )
    p.add_argument(
        "--no-seeds",
        dest="seeds",
        action="store_false",
        help="skip the suite's extra seeds at each method's best lr",
    )
    p.add_argument(
        "--ablation",
        nargs="+",
        default=None,
        metavar="NAME",
        help="SwitchLoRA ablations: candidates, freeze, precision, interval0, descent-ratio, "
        "rank, all, or none (default: the suite's own, if any)",
    )
    p.add_argument("--nproc", type=int, help="processes per run (default: the suite's)")
    p.add_argument(
        "--torchrun-args",
        default="",
        help='extra torchrun arguments, e.g. "--nnodes 4 --rdzv-endpoint host:29500" (replaces --standalone)',
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field in every run (repeatable), e.g. data.source=/data/c4",
    )
    p.add_argument(
        "--plan", action="store_true", help="list the runs and the estimate; train nothing"
    )
    p.add_argument(
        "--report-only", action="store_true", help="rebuild results and report; train nothing"
    )
    p.add_argument(
        "--progress-every", type=float, default=30.0, help="seconds between progress lines"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suite = get_suite(args.suite)
    known = list(suite_ablations(suite))
    if args.ablation is None:
        ablations = list(suite.default_ablations)
    elif "all" in args.ablation:
        ablations = known
    else:
        ablations = [a for a in args.ablation if a != "none"]
    unknown = sorted(set(ablations) - set(known))
    if unknown:
        raise SystemExit(f"unknown ablation(s) {unknown}; known: {', '.join(known)}")
    opts = SuiteOptions(
        output=args.output or Path("outputs/reproduce") / suite.name,
        methods=args.methods,
        lr_sweep=args.lr_sweep,
        seeds=args.seeds,
        ablations=ablations,
        nproc=args.nproc,
        torchrun_args=args.torchrun_args.split(),
        overrides=parse_set(args.set),
        plan_only=args.plan,
        report_only=args.report_only,
        progress_every=args.progress_every,
    )
    try:
        return run_suite(suite, opts)
    except (ConfigError, RunConflict, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
