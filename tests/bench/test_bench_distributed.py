"""The benchmark on 2 gloo processes: counted gradient traffic equals the trainable share.

SwitchLoRA reduces only the gradients of trainable tensors (adapters, embeddings, norms,
lm_head), so its counted reduce bytes per step divided by full-rank's equal its trainable
parameter count over the full model's, under FSDP (reduce-scatter) and under replicate
(all-reduce). Replicate all-gathers nothing; float8 all-gather moves fewer bytes than bf16.
"""

from __future__ import annotations

import json

import pytest

from switchlora.profiling import RANGES
from tests.conftest import ROOT, run_torchrun
from trainer.bench.report import reduce_bytes


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    common = [
        "--config",
        str(ROOT / "configs/tiny_switch.toml"),
        "--warmup",
        "1",
        "--steps",
        "2",
        "--training.seq_len",
        "32",
        "--training.global_batch_size",
        "4",
    ]

    def bench_run(folder: str, methods: str, precisions: str, layouts: str, *extra: str):
        flags = ["--methods", methods, "--precisions", precisions, "--layouts", layouts]
        run_torchrun(
            ROOT / "scripts/bench.py", [*common, *flags, *extra, "--out", str(out / folder)]
        )

    bench_run("layouts", "full,switchlora", "fp32", "fsdp,replicate")
    bench_run("float8", "switchlora", "bf16,float8_ag", "fsdp")
    bench_run("interleaved", "full,switchlora", "fp32", "fsdp,replicate", "--interleave")
    return out


def _results(folder):
    data = json.loads((folder / "results.json").read_text())
    assert all("error" not in r for r in data["results"]), data["results"]
    return {(r["method"], r["precision"], r["layout"]): r for r in data["results"]}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fsdp", "replicate"])
def test_reduce_bytes_ratio_is_trainable_fraction(bench, layout):
    runs = _results(bench / "layouts")
    full, switch = runs[("full", "fp32", layout)], runs[("switchlora", "fp32", layout)]
    fraction = switch["trainable_params"] / full["params"]
    assert 0.3 < fraction < 0.6
    ratio = reduce_bytes(switch) / reduce_bytes(full)
    assert ratio == pytest.approx(fraction, rel=0.01)
    assert switch["vs_full"]["reduce_bytes"] == pytest.approx(ratio)
    assert switch["vectors_switched_per_step"] > 0
    split = switch["switch_breakdown_s"]  # the parts of the switch, timed after the measurement
    assert list(split) == list(RANGES) and full["switch_breakdown_s"] == {}
    assert 0 < split["w_update"] <= split["write"] and split["decide"] > 0
    assert (split["gather"] > 0) == (layout == "fsdp")  # full A rows: only when A is sharded
    assert switch["w_pass_floor_s"] > 0 and full["w_pass_floor_s"] is None
    for run in (full, switch):  # the guard's cost: pairs of steps with and without it
        assert 0.5 < run["guard_ratio"] < 2 and abs(run["guard_s"]) < run["step_s"]
    assert "guarded / unguarded step" in (bench / "layouts" / "results.md").read_text()
    kind = "reduce_scatter" if layout == "fsdp" else "all_reduce"
    other = "all_reduce" if layout == "fsdp" else "reduce_scatter"
    for run in (full, switch):
        # fp32 reduction: 4 bytes per trainable parameter, all of it in one collective kind.
        assert run["comm_per_step"][kind]["bytes"] == pytest.approx(
            4 * run["trainable_params"], rel=0.01
        )
        assert run["comm_per_step"][other]["bytes"] < 1e-3 * reduce_bytes(run)
    gathered = switch["comm_per_step"]["all_gather"]["bytes"]
    if layout == "replicate":
        assert gathered == 0  # no frozen-weight (or any) all-gather
    else:
        assert gathered >= 4 * switch["params"]  # forward (+ backward) all-gather of everything


@pytest.mark.slow
def test_float8_all_gather_moves_fewer_bytes(bench):
    runs = _results(bench / "float8")
    bf16, fp8 = runs[("switchlora", "bf16", "fsdp")], runs[("switchlora", "float8_ag", "fsdp")]
    assert (
        fp8["comm_per_step"]["all_gather"]["bytes"]
        < 0.8 * bf16["comm_per_step"]["all_gather"]["bytes"]
    )
    assert reduce_bytes(fp8) == pytest.approx(reduce_bytes(bf16), rel=0.01)
    assert fp8["final_loss"] == pytest.approx(bf16["final_loss"], rel=0.05)


def test_llama1b_switch_replicate_saving_matches_the_paper():
    """Counted on the meta device: r = 512 trains 45.5% of the 1.34B full-rank parameters,
    so replicate mode all-reduces 54.5% fewer gradient bytes (the paper reports 54%)."""
    from trainer.bench.counts import traffic_saving
    from trainer.config import load_toml

    counts = traffic_saving(load_toml(ROOT / "configs/llama1b_switch.toml"))
    assert counts["full_params"] == pytest.approx(1.34e9, rel=0.01)
    assert counts["trainable_fraction"] == pytest.approx(0.455, abs=0.002)
    assert counts["replicate_saving"] == pytest.approx(0.545, abs=0.002)


@pytest.mark.slow
def test_bench_counts_match_meta_counts(bench):
    """The benchmark's live counts equal the meta-device counts used for the 1.3B figure."""
    from trainer.bench.counts import traffic_saving
    from trainer.config import load_toml
    from trainer.data.tokenizer import build_tokenizer
    from trainer.train import model_vocab_size

    cfg = load_toml(ROOT / "configs/tiny_switch.toml")
    cfg.model.vocab_size = model_vocab_size(cfg, build_tokenizer("byte").vocab_size)
    counts = traffic_saving(cfg)
    runs = _results(bench / "layouts")
    assert counts["trainable_params"] == runs[("switchlora", "fp32", "fsdp")]["trainable_params"]
    assert counts["params"] == runs[("switchlora", "fp32", "fsdp")]["params"]
    assert counts["full_params"] == runs[("full", "fp32", "fsdp")]["params"]


@pytest.mark.slow
def test_interleaved_cases_count_their_own_traffic(bench):
    """Four cases resident together and stepped in turn: each one's collectives, switch and
    steps are its own (the same figures as when measured one after the other)."""
    alone, together = _results(bench / "layouts"), _results(bench / "interleaved")
    assert together.keys() == alone.keys()
    for key, run in together.items():
        assert run["interleaved"] and run["peak_bytes"] is None
        assert len(run["step_s_all"]) == 2
        for kind in ("all_gather", "reduce_scatter", "all_reduce"):
            assert run["comm_per_step"][kind]["bytes"] == alone[key]["comm_per_step"][kind]["bytes"]
        assert run["vectors_switched_per_step"] == alone[key]["vectors_switched_per_step"]
        assert run["final_loss"] == pytest.approx(alone[key]["final_loss"], rel=1e-5)
