"""Benchmark results: ratios against full-rank and the markdown tables."""

from __future__ import annotations

import statistics
from typing import Any

from switchlora.profiling import RANGES

MIB = 2**20


def reduce_bytes(result: dict[str, Any]) -> float:
    """Gradient-reduction payload per step: reduce-scatter plus all-reduce bytes."""
    comm = result["comm_per_step"]
    return comm["reduce_scatter"]["bytes"] + comm["all_reduce"]["bytes"]


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated measurements of a case: the round with the shortest step
    (contention from other processes only ever adds time), with every round's times kept."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    best = dict(min(ok, key=lambda r: r["step_s"]))
    best["rounds_step_s"] = [r["step_s"] for r in ok]
    best["rounds_cpu_s"] = [r["cpu_s_per_step"] for r in ok]
    best["rounds_hook_s"] = [r["hook_s"] for r in ok]
    best["cpu_s_per_step"] = min(best["rounds_cpu_s"])
    best["hook_cpu_s"] = min(r["hook_cpu_s"] for r in ok)
    best["hook_cpu_share"] = best["hook_cpu_s"] / best["cpu_s_per_step"]
    if all(r.get("interleaved") for r in ok):  # keep every round's steps, in round order,
        for series in ("step_s_all", "cpu_s_all"):  # so that pairs across cases stay aligned
            best[series] = [x for r in ok for x in r[series]]
    return best


def time_ratio(r: dict[str, Any], base: dict[str, Any], kind: str) -> float:
    """Step time (``kind`` "step") or CPU time ("cpu") of ``r`` over that of ``base``.

    Cases measured interleaved ran their i-th steps back to back, so the ratio is the median
    of the step-by-step ratios (a slow moment of the host falls on both steps of a pair);
    otherwise it is the ratio of the reported medians.
    """
    key, series = ("step_s", "step_s_all") if kind == "step" else ("cpu_s_per_step", "cpu_s_all")
    a, b = r.get(series), base.get(series)
    if r.get("interleaved") and base.get("interleaved") and a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return r[key] / base[key]


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``vs_full`` (and ``vs_lora``) ratios against the full-rank (LoRA) result of the
    same precision and layout, and ``vs_bf16`` (step time against the same method and layout
    in bf16: below 1 is a float8 speed-up)."""

    def ac(r: dict[str, Any]) -> str:
        return r.get("ac", "none")

    bf16 = {(r["method"], r["layout"], ac(r)): r for r in results if r["precision"] == "bf16"}
    for r in results:
        other = bf16.get((r["method"], r["layout"], ac(r)))
        if other is not None and other is not r:
            r["vs_bf16"] = {"step_time": time_ratio(r, other, "step")}
    full = {(r["precision"], r["layout"], ac(r)): r for r in results if r["method"] == "full"}
    lora = {(r["precision"], r["layout"], ac(r)): r for r in results if r["method"] == "lora"}
    none = {(r["method"], r["precision"], r["layout"]): r for r in results if ac(r) == "none"}
    for r in results:
        plain = none.get((r["method"], r["precision"], r["layout"]))
        if plain is not None and plain is not r:
            r["vs_no_ac"] = {
                "step_time": time_ratio(r, plain, "step"),
                "peak_memory": _ratio(r["peak_bytes"], plain["peak_bytes"]),
            }
        other = lora.get((r["precision"], r["layout"], ac(r)))
        if other is not None:
            r["vs_lora"] = {
                "step_time": time_ratio(r, other, "step"),
                "cpu_time": time_ratio(r, other, "cpu"),
            }
        base = full.get((r["precision"], r["layout"], ac(r)))
        if base is None:
            continue
        base_reduce = reduce_bytes(base)
        r["vs_full"] = {
            "step_time": time_ratio(r, base, "step"),
            "cpu_time": time_ratio(r, base, "cpu"),
            "reduce_bytes": reduce_bytes(r) / base_reduce if base_reduce else None,
            "all_gather_bytes": _ratio(
                r["comm_per_step"]["all_gather"]["bytes"],
                base["comm_per_step"]["all_gather"]["bytes"],
            ),
            "trainable_fraction": r["trainable_params"] / base["params"],
            "peak_memory": _ratio(r["peak_bytes"], base["peak_bytes"]),
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.2f}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Markdown tables: time, communication, memory and compile counters, then (when
    measured) the parts of the switch and the cost of the per-step non-finite guard."""
    time_rows = [
        "| method | precision | layout | tokens/s | step ms | vs full | vs LoRA | vs bf16 | "
        "CPU s/step | CPU vs LoRA | switch ms | switch share | switch CPU share | vectors/step |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    comm_rows = [
        "| method | precision | layout | all-gather MiB/step | reduce-scatter MiB/step | "
        "all-reduce MiB/step | reduce vs full | trainable / full-rank params |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    mem_rows = [
        "| method | precision | layout | peak MiB | trainable params MiB | frozen params MiB | "
        "grads MiB | optimizer MiB | pools MiB | MFU | warm-up s | graphs | graph breaks | "
        "recompiles (measured) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    split_rows = [
        "| method | precision | layout | switch ms | decide | read | gather | write | "
        "of which W update | reset | W update share of step | W pass floor | "
        "floor share of step | W update / floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ac_rows = [
        "| method | precision | layout | checkpointing | step ms | vs none | peak MiB | "
        "peak vs none |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    guard_rows = [
        "| method | precision | layout | step ms | guard ms/step | guarded / unguarded step |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        comm = r["comm_per_step"]
        vs, vl = r.get("vs_full", {}), r.get("vs_lora", {})
        key = f"| {r['method']} | {r['precision']} | {r['layout']} |"
        if r.get("ac", "none") != "none":
            key = f"| {r['method']} | {r['precision']} | {r['layout']} ac-{r['ac']} |"
        if "vs_no_ac" in r or (r.get("ac", "none") == "none" and len(results) > 1):
            va = r.get("vs_no_ac", {})
            ac_rows.append(
                f"| {r['method']} | {r['precision']} | {r['layout']} | {r.get('ac', 'none')} | "
                f"{r['step_s'] * 1e3:.1f} | {_fmt(va.get('step_time'), '.3f')} | "
                f"{_mib(r['peak_bytes'])} | {_fmt(va.get('peak_memory'), '.3f')} |"
            )
        time_rows.append(
            f"{key} {r['tokens_per_s']:.0f} | {r['step_s'] * 1e3:.1f} | "
            f"{_fmt(vs.get('step_time'), '.3f')} | {_fmt(vl.get('step_time'), '.3f')} | "
            f"{_fmt(r.get('vs_bf16', {}).get('step_time'), '.3f')} | "
            f"{r['cpu_s_per_step']:.3f} | {_fmt(vl.get('cpu_time'), '.3f')} | "
            f"{r['hook_s'] * 1e3:.2f} | {r['hook_share']:.2%} | {r['hook_cpu_share']:.2%} | "
            f"{r['vectors_switched_per_step']:.0f} |"
        )
        comm_rows.append(
            f"{key} {_mib(comm['all_gather']['bytes'])} | {_mib(comm['reduce_scatter']['bytes'])} | "
            f"{_mib(comm['all_reduce']['bytes'])} | {_fmt(vs.get('reduce_bytes'), '.4f')} | "
            f"{_fmt(vs.get('trainable_fraction'), '.4f')} |"
        )
        mfu = r.get("mfu")
        mem_rows.append(
            f"{key} {_mib(r['peak_bytes'])} | {_mib(r['param_bytes']['trainable'])} | "
            f"{_mib(r['param_bytes']['frozen'])} | {_mib(r['grad_bytes'])} | "
            f"{_mib(r['optimizer_bytes'])} | {_mib(r['pool_bytes'])} | "
            f"{_fmt(mfu, '.1%')} | {_fmt(r.get('warmup_s'), '.1f')} | "
            f"{r['compiled_graphs']} | {r['graph_breaks']} | "
            f"{r['recompiles_measured']} |"
        )
        split = r.get("switch_breakdown_s")
        if split:
            ms = " | ".join(f"{split[name] * 1e3:.2f}" for name in RANGES)
            floor = r.get("w_pass_floor_s")
            split_rows.append(
                f"{key} {r['hook_s'] * 1e3:.2f} | {ms} | {split['w_update'] / r['step_s']:.2%} | "
                f"{_fmt(None if floor is None else floor * 1e3, '.2f')} | "
                f"{_fmt(None if floor is None else floor / r['step_s'], '.2%')} | "
                f"{_fmt(split['w_update'] / floor if floor else None, '.2f')} |"
            )
        if "guard_s" in r:
            guard_rows.append(
                f"{key} {r['step_s'] * 1e3:.1f} | {r['guard_s'] * 1e3:.2f} | "
                f"{r['guard_ratio']:.3f} |"
            )
    tables = [time_rows, comm_rows, mem_rows] + ([split_rows] if len(split_rows) > 2 else [])
    tables += [guard_rows] if len(guard_rows) > 2 else []
    if any("vs_no_ac" in r for r in results):
        tables.append(ac_rows)
    return "\n\n".join("\n".join(rows) for rows in tables) + "\n"
