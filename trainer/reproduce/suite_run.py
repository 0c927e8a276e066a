"""Train a suite's runs in order (skipping finished ones), then write results, report, plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import JobConfig
from trainer.reproduce.plan import build_config, plan_runs, seed_runs
from trainer.reproduce.plot import make_plots
from trainer.reproduce.progress import Progress, duration
from trainer.reproduce.report import write_report
from trainer.reproduce.results import collect, write_results
from trainer.reproduce.runner import (
    check_config,
    child_env,
    launch,
    read_summary,
    run_folder,
    tail,
    train_command,
    write_run_files,
)
from trainer.reproduce.spec import RunSpec, Suite


@dataclass
class SuiteOptions:
    """What the command line asks for."""

    output: Path
    methods: Sequence[str]
    lr_sweep: bool = False
    ablations: Sequence[str] = ()
    nproc: int | None = None
    torchrun_args: Sequence[str] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """``--set section.field=value`` for every run."""
    seeds: bool = True
    """Train the suite's extra seeds at each method's best lr once the sweep has finished."""
    plan_only: bool = False
    report_only: bool = False
    progress_every: float = 30.0


def run_configs(
    suite: Suite, specs: list[RunSpec], opts: SuiteOptions, data: Mapping[str, Any]
) -> dict[str, JobConfig]:
    """Each run's checked config; its dump folder is its run folder."""
    configs = {}
    for spec in specs:
        folder = run_folder(opts.output, spec.name).resolve()
        extra = {
            **data,
            "job.name": f"{suite.name}/{spec.name}",
            "job.dump_folder": str(folder),
            **opts.overrides,
        }
        configs[spec.name] = build_config(
            suite, suite.recipes[spec.method], spec.variant, spec.lr, extra
        )
    return configs


def estimate_s(suite: Suite, specs: list[RunSpec], configs: dict[str, JobConfig]) -> float | None:
    """Wall time of ``specs`` from the suite's measured rates (None when it has none)."""
    if not suite.seconds_per_step:
        return None
    return sum(
        configs[s.name].training.steps * suite.seconds_per_step[s.method] + suite.seconds_per_run
        for s in specs
    )


def _train(
    suite: Suite,
    todo: list[RunSpec],
    configs: dict[str, JobConfig],
    opts: SuiteOptions,
    emit: Callable[[str], None],
    n_total: int,
    n_done: int,
) -> list[str]:
    """Launch each run of ``todo``; returns the names of runs that failed."""
    nproc = opts.nproc or suite.nproc
    progress = Progress(
        pending=[(s.name, s.method, configs[s.name].training.steps) for s in todo],
        hints=suite.seconds_per_step,
        overhead_s=suite.seconds_per_run or 30.0,
        every_s=opts.progress_every,
        emit=emit,
    )
    failed = []
    for i, spec in enumerate(todo, start=n_done + 1):
        folder = run_folder(opts.output, spec.name)
        config_path = write_run_files(folder, configs[spec.name], spec)
        resumed = any((folder / "checkpoints").glob("step-*"))
        emit(
            f"[{i}/{n_total}] {spec.name} (lr {spec.lr:g}): "
            f"{'resuming from its checkpoint' if resumed else 'training'} on {nproc} "
            f"process{'es' if nproc > 1 else ''} | suite ETA {duration(progress.estimate())}"
        )
        progress.start_run()
        code = launch(
            train_command(config_path, nproc, opts.torchrun_args),
            folder,
            child_env(nproc),
            progress.on_line,
        )
        progress.finish_run()
        summary = read_summary(folder)
        if code == 0 and summary is not None:
            emit(f"[{i}/{n_total}] {spec.name}: done | val ppl {_ppl(summary):.2f}")
        else:
            failed.append(spec.name)
            emit(f"[{i}/{n_total}] {spec.name}: FAILED (exit {code}); end of {folder}/train.log:")
            emit(tail(folder))
    return failed


def _train_seeds(
    suite: Suite, opts: SuiteOptions, data: Mapping[str, Any], emit: Callable[[str], None]
) -> list[str]:
    """The extra seeds at each method's best lr among its finished sweep runs."""
    results = collect(Path(opts.output), suite)
    best, runs = results["best"], results["runs"]
    best_lr = {m: runs[best[m]]["lr"] for m in opts.methods if m in best}
    specs = seed_runs(suite, best_lr)
    configs = run_configs(suite, specs, opts, data)
    todo = [s for s in specs if read_summary(run_folder(opts.output, s.name)) is None]
    for spec in todo:
        check_config(run_folder(opts.output, spec.name), configs[spec.name])
    emit(
        f"seeds at the best lr ({', '.join(f'{m} {lr:g}' for m, lr in best_lr.items())}): "
        f"{len(todo)} to train"
    )
    return _train(suite, todo, configs, opts, emit, len(specs), len(specs) - len(todo))


def _ppl(summary: dict[str, Any]) -> float:
    return float(summary["final_val_ppl"])


def run_suite(suite: Suite, opts: SuiteOptions, emit: Callable[[str], None] = print) -> int:
    """Plan, train what is missing, report. Returns the exit status (1 if a run failed)."""
    specs = plan_runs(suite, opts.methods, opts.lr_sweep, opts.ablations)
    output = Path(opts.output)
    training = not (opts.plan_only or opts.report_only)
    data = suite.prepare(output) if suite.prepare and training else {}
    configs = run_configs(suite, specs, opts, data)
    finished = [s for s in specs if read_summary(run_folder(output, s.name)) is not None]
    todo = [s for s in specs if s not in finished]
    if training:
        for spec in todo:
            check_config(run_folder(output, spec.name), configs[spec.name])
    est = estimate_s(suite, todo, configs)
    emit(
        f"suite {suite.name}: {len(specs)} runs, {len(finished)} finished, {len(todo)} to train"
        + (f" (about {duration(est)} at the measured rates)" if est is not None else "")
        + f" | output {output}"
    )
    for spec in finished:
        emit(
            f"  skip {spec.name}: finished (val ppl {_ppl(read_summary(run_folder(output, spec.name))):.2f})"
        )
    seeded = suite.seeds and opts.seeds
    if opts.plan_only:
        for spec in todo:
            cfg = configs[spec.name]
            emit(f"  plan {spec.name}: {spec.method} lr {spec.lr:g}, {cfg.training.steps} steps")
        if seeded:
            later = seed_runs(suite, {m: suite.recipes[m].lr for m in opts.methods})
            later_est = estimate_s(suite, later, run_configs(suite, later, opts, data))
            emit(
                f"  then seeds {', '.join(map(str, suite.seeds))} at each method's best lr on "
                f"validation: {len(later)} runs"
                + (f" (about {duration(later_est)})" if later_est is not None else "")
            )
        return 0
    failed: list[str] = []
    if training:
        failed = _train(suite, todo, configs, opts, emit, len(specs), len(finished))
        if seeded:
            failed += _train_seeds(suite, opts, data, emit)
    results = collect(output, suite)
    write_results(output, results)
    plots = make_plots(results, output)
    report = write_report(output, results, plots)
    emit(
        f"results: {output / 'results.json'} | report: {report}" + "".join(f" | {p}" for p in plots)
    )
    if failed:
        emit(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun the same command to retry")
    return 1 if failed else 0
