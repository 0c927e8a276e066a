"""Benchmark training methods, precisions and data-parallel layouts side by side.

    torchrun --nproc_per_node=2 scripts/bench.py --config configs/tiny_switch.toml \\
        --methods full,lora,switchlora --precisions bf16 --layouts fsdp,replicate \\
        --warmup 3 --steps 5 --out outputs/bench/tiny [--section.field VALUE ...]

Every case is built with the trainer's own build path and stepped with its train_step
(see trainer/bench/run.py). Unknown flags are trainer config overrides (shrink the model,
the batch, the steps). Writes <out>/results.json and <out>/results.md (rank 0).

Launch modes: under torchrun every case runs in the same processes, one after the other.
As a plain process, ``--nproc N`` starts torchrun itself: once for all cases, or once per
case with ``--isolate`` (clean peak-memory figures and compile caches per case); without
``--nproc`` it runs the cases in this single process.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from parallel.comm_stats import CommCounter  # noqa: E402
from parallel.distributed import init_distributed, shutdown  # noqa: E402
from trainer.bench.counts import traffic_saving  # noqa: E402
from trainer.bench.report import add_ratios, combine_rounds, markdown_table  # noqa: E402
from trainer.bench.run import (  # noqa: E402
    AC_MODES,
    LAYOUTS,
    PRECISIONS,
    Case,
    case_flags,
    run_case,
    run_cases_interleaved,
)
from trainer.cli import parse_config  # noqa: E402
from trainer.config import Method  # noqa: E402

DEFAULT_METHODS = ("full", "lora", "switchlora")


def known_methods() -> tuple[str, ...]:
    """Method names the trainer's config accepts (relora/galore once they exist)."""
    return typing.get_args(typing.get_type_hints(Method)["name"])


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--config", required=True, help="trainer TOML config")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated methods, or 'all' for every method the config accepts",
    )
    p.add_argument("--precisions", default="bf16", help=f"comma-separated: {', '.join(PRECISIONS)}")
    p.add_argument("--layouts", default="fsdp", help=f"comma-separated: {', '.join(LAYOUTS)}")
    p.add_argument(
        "--ac",
        default="none",
        help=f"comma-separated activation checkpointing: {', '.join(AC_MODES)}",
    )
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per case")
    p.add_argument("--steps", type=int, default=5, help="measured steps per case")
    p.add_argument("--out", default="outputs/bench", help="folder for results.json / results.md")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every case this many times, interleaved; report the fastest round",
    )
    p.add_argument("--nproc", type=int, default=0, help="start torchrun with N processes")
    p.add_argument("--isolate", action="store_true", help="with --nproc: one torchrun per case")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="build every case in the same processes, then step them in turn, one measured "
        "step each (drift of a shared host falls on every case alike; no per-case peak memory)",
    )
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # isolated children
    p.add_argument(
        "--counts",
        action="store_true",
        help="only count parameters on the meta device and print the gradient-traffic saving",
    )
    return p.parse_known_args(argv)


def cases_of(args: argparse.Namespace) -> list[Case]:
    methods = known_methods() if args.methods == "all" else tuple(args.methods.split(","))
    for m in methods:
        if m not in known_methods():
            raise SystemExit(f"unknown method {m!r}; the config accepts {known_methods()}")
    return [
        Case(m, p, lay, ac)
        for lay in args.layouts.split(",")
        for p in args.precisions.split(",")
        for m in methods
        for ac in args.ac.split(",")
    ]


def meta(args: argparse.Namespace, overrides: list[str], world: int) -> dict:
    try:
        torchao_version = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        torchao_version = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": args.config,
        "overrides": overrides,
        "warmup": args.warmup,
        "steps": args.steps,
        "world_size": world,
        "device": device or "cpu",
        "torch": torch.__version__,
        "torchao": torchao_version,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_outputs(out: Path, info: dict, results: list[dict], quiet: bool = False) -> None:
    add_ratios(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": info, "results": results}, indent=2))
    ok = [r for r in results if "error" not in r]
    failed = "".join(f"- {r['case']}: {r['error']}\n" for r in results if "error" in r)
    header = (
        f"`{info['command']}` ({info['world_size']} x {info['device']}, torch {info['torch']})\n\n"
    )
    (out / "results.md").write_text(
        header + markdown_table(ok) + (f"\nFailed cases:\n{failed}" if failed else "")
    )
    if not quiet:
        print((out / "results.md").read_text(), flush=True)


def run_in_process(args: argparse.Namespace, overrides: list[str]) -> None:
    """Run every case in this process group (under torchrun, or a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rounds: dict[Case, list[dict]] = {}
    rank = 0

    def setup(case: Case) -> tuple:
        cfg = parse_config(["--config", args.config, *overrides, *case_flags(case, world)])
        info = init_distributed(
            cfg.parallel.backend, cfg.parallel.dp_replicate, cfg.parallel.dp_shard
        )
        return cfg, info, case

    def record(case: Case, result: dict) -> None:
        rounds.setdefault(case, []).append(result)
        if rank == 0:
            summary = result.get("error") or (
                f"{result['step_s'] * 1e3:.1f} ms/step, hook {result['hook_s'] * 1e3:.2f} ms"
            )
            print(f"{case.name}: {summary}", flush=True)
            # the cases so far, in case a time limit stops the run before the end
            partial = [combine_rounds(r) for r in rounds.values()]
            write_outputs(Path(args.out), meta(args, overrides, world), partial, quiet=True)

    with CommCounter() as comm:
        batches = (
            [cases_of(args)] * args.rounds
            if args.interleave
            else [[case] for case in cases_of(args) * args.rounds]
        )
        for batch in batches:
            setups = [setup(case) for case in batch]
            rank = setups[0][1].rank
            try:
                if args.interleave:
                    results = run_cases_interleaved(setups, args.warmup, args.steps, comm)
                else:
                    results = [run_case(*setups[0], args.warmup, args.steps, comm)]
            except Exception as exc:  # record and go on with the next case
                if rank == 0:
                    traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                results = [{"case": case.name, "error": error} for case in batch]
            for case, result in zip(batch, results):
                record(case, result)
    results = [combine_rounds(r) for r in rounds.values()]
    if rank == 0:
        write_outputs(Path(args.out), meta(args, overrides, world), results, args.quiet)
    shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int, argv: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={free_port()}", __file__, *argv]
    subprocess.run(cmd, check=True)


def strip(argv: list[str], flag: str, has_value: bool) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = has_value
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def print_counts(args: argparse.Namespace, overrides: list[str]) -> None:
    cfg = parse_config(["--config", args.config, *overrides])
    c = traffic_saving(cfg)
    print(
        f"{args.config} ({cfg.method.name}, rank {cfg.method.rank}): "
        f"{c['params'] / 1e6:.1f}M parameters, {c['trainable_params'] / 1e6:.1f}M trainable; "
        f"full-rank model {c['full_params'] / 1e6:.1f}M\n"
        f"trainable / full-rank parameters: {c['trainable_fraction']:.4f}\n"
        f"gradient all-reduce saving, replicate: {c['replicate_saving']:.1%}\n"
        f"traffic saving, FSDP (bf16 all-gathers + fp32 reduce-scatter): {c['fsdp_saving']:.1%}"
    )


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1, --warmup >= 0")
    if args.counts:
        print_counts(args, overrides)
        return 0
    if args.interleave and args.isolate:
        raise SystemExit("--interleave runs every case in the same processes: drop --isolate")
    if "WORLD_SIZE" in os.environ or args.nproc <= 0:
        run_in_process(args, overrides)
        return 0
    child = strip(strip(argv, "--nproc", True), "--isolate", False)
    if not args.isolate:
        torchrun(args.nproc, child)
        return 0
    rounds: dict[Case, list[dict]] = {}
    for i, case in enumerate(cases_of(args) * args.rounds):
        sub = Path(args.out) / "cases" / f"{i:02d}"
        per_case = child
        for flag in ("--methods", "--precisions", "--layouts", "--ac", "--out", "--rounds"):
            per_case = strip(per_case, flag, True)
        selection = ["--methods", case.method, "--precisions", case.precision, "--ac", case.ac]
        selection += ["--layouts", case.layout, "--out", str(sub), "--quiet"]
        torchrun(args.nproc, [*per_case, *selection])
        rounds.setdefault(case, []).extend(
            json.loads((sub / "results.json").read_text())["results"]
        )
    results = [combine_rounds(r) for r in rounds.values()]
    write_outputs(Path(args.out), meta(args, overrides, args.nproc), results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
