"""Gradient reductions on 2 gloo processes: one reduction per step, plain SUM everywhere.

With 4 micro-batches per step the gradients are reduced only in the last backward, so the
counted reduce bytes per step equal those of 1 micro-batch (reducing after every micro-batch
moves about 4x as much), and the losses equal both the 1-micro-batch run and the run that
reduces after every micro-batch. Every gradient collective uses ReduceOp.SUM with a divide
factor of 1, also when the backend is reported as NCCL while the trainer is built.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_torchrun


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    out = tmp_path_factory.mktemp("reductions") / "cases.jsonl"
    run_torchrun(ROOT / "tests/parallel/reduction_worker.py", [str(out)], nproc=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {(r["layout"], r["grad_accum"], r["sync_every_micro_batch"]): r for r in rows}


@pytest.mark.parametrize("layout", ["fsdp", "replicate"])
def test_four_micro_batches_reduce_the_bytes_of_one(cases, layout):
    one, four = cases[(layout, 1, False)], cases[(layout, 4, False)]
    every = cases[(layout, 4, True)]
    assert four["reduce_bytes"] == one["reduce_bytes"]
    # Reducing after every micro-batch moves the gradients 4 times (the loss and norm
    # all-reduces of the step are the same few bytes in both).
    assert every["reduce_bytes"][0] > 3.5 * one["reduce_bytes"][0]


@pytest.mark.parametrize("layout", ["fsdp", "replicate"])
def test_accumulated_losses_match_one_micro_batch_and_per_micro_batch_sync(cases, layout):
    one, four = cases[(layout, 1, False)], cases[(layout, 4, False)]
    every = cases[(layout, 4, True)]
    assert four["losses"] == pytest.approx(one["losses"], rel=1e-6, abs=0)
    assert four["losses"] == pytest.approx(every["losses"], rel=1e-6, abs=0)


def test_every_reduction_is_a_plain_sum(cases):
    for case in cases.values():
        assert case["ops"], case
        assert all(op.endswith("SUM") and "PREMUL" not in op for op in case["ops"]), case
        assert case["groups"], case
        assert all(g == {"divide_factor": 1.0, "force_sum": True} for g in case["groups"]), case
        if case["layout"] == "fsdp":
            assert any(op.startswith("reduce_scatter") for op in case["ops"]), case
