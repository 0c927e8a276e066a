"""Benchmark ratios and tables from hand-made results (no runs)."""

from __future__ import annotations

import pytest

from trainer.bench.report import add_ratios, combine_rounds, markdown_table, time_ratio


def _result(method: str, precision: str, step_s: float, floor_s: float | None = None) -> dict:
    comm = {kind: {"bytes": 0.0} for kind in ("all_gather", "reduce_scatter", "all_reduce")}
    comm["reduce_scatter"]["bytes"] = 400.0 if method == "full" else 180.0
    return {
        "method": method,
        "precision": precision,
        "layout": "fsdp",
        "step_s": step_s,
        "cpu_s_per_step": step_s,
        "tokens_per_s": 1000 / step_s,
        "hook_s": 0.01 * step_s,
        "hook_share": 0.01,
        "hook_cpu_share": 0.01,
        "vectors_switched_per_step": 0,
        "comm_per_step": comm,
        "params": 100,
        "trainable_params": 100 if method == "full" else 45,
        "peak_bytes": 1.0,
        "param_bytes": {"trainable": 1.0, "frozen": 1.0},
        "grad_bytes": 1.0,
        "optimizer_bytes": 1.0,
        "pool_bytes": 0.0,
        "compiled_graphs": 1,
        "graph_breaks": 0,
        "recompiles_measured": 0,
        "switch_breakdown_s": {}
        if floor_s is None
        else dict.fromkeys(("decide", "read", "gather", "write", "w_update", "reset"), 0.001),
        "w_pass_floor_s": floor_s,
    }


def test_float8_and_full_rank_ratios():
    results = [
        _result("full", "bf16", 1.0),
        _result("switchlora", "bf16", 0.9, floor_s=0.0005),
        _result("full", "float8", 0.8),
        _result("switchlora", "float8", 0.6, floor_s=0.0005),
    ]
    add_ratios(results)
    by = {(r["method"], r["precision"]): r for r in results}
    assert "vs_bf16" not in by[("full", "bf16")]
    assert by[("full", "float8")]["vs_bf16"]["step_time"] == pytest.approx(0.8)
    assert by[("switchlora", "float8")]["vs_bf16"]["step_time"] == pytest.approx(0.6 / 0.9)
    assert by[("switchlora", "float8")]["vs_full"]["step_time"] == pytest.approx(0.75)
    assert by[("switchlora", "bf16")]["vs_full"]["reduce_bytes"] == pytest.approx(0.45)
    table = markdown_table(results)
    assert "| switchlora | float8 | fsdp | 1667 | 600.0 | 0.750 | - | 0.667 |" in table
    # W update (1 ms) against the 0.5 ms floor of one streaming pass
    assert "| 0.50 | 0.06% | 2.00 |" in table


def test_interleaved_ratios_pair_the_steps():
    """A host that slows down mid-run: step-by-step pairs see the true 10%, medians do not."""
    host = [1.0, 1.0, 1.0, 2.0, 2.0]
    lora = {**_result("lora", "bf16", 1.0), "interleaved": True}
    switch = {**_result("switchlora", "bf16", 1.0), "interleaved": True}
    lora["step_s_all"] = lora["cpu_s_all"] = [h for h in host]
    switch["step_s_all"] = switch["cpu_s_all"] = [1.1 * h for h in host]
    lora["step_s"], switch["step_s"] = 1.0, 2.2  # medians of drifting runs
    assert time_ratio(switch, lora, "step") == pytest.approx(1.1)
    assert time_ratio(switch, lora, "cpu") == pytest.approx(1.1)
    del switch["interleaved"]
    assert time_ratio(switch, lora, "step") == pytest.approx(2.2)


def test_interleaved_rounds_keep_all_steps_in_order():
    rounds = []
    for step_s in (1.2, 1.0):
        r = {**_result("lora", "bf16", step_s), "interleaved": True}
        r.update(rounds_step_s=None, hook_cpu_s=0.01, step_s_all=[step_s] * 2)
        r["cpu_s_all"] = [step_s] * 2
        rounds.append(r)
    best = combine_rounds(rounds)
    assert best["step_s"] == 1.0 and best["step_s_all"] == [1.2, 1.2, 1.0, 1.0]
