"""The rank diagnostic gathers sharded layers: 2 FSDP2 processes report what 1 process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rank_records(output: Path, nproc: int) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--suite", "micro"]
    cmd += ["--output", str(output), "--methods", "switchlora", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = output / "runs" / "switchlora" / "rank_diagnostic.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_give_the_single_process_spectrum(tmp_path):
    one = rank_records(tmp_path / "one", 1)
    two = rank_records(tmp_path / "two", 2)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [3, 6]
    for a, b in zip(one, two):
        assert a["layers"].keys() == b["layers"].keys() and len(a["layers"]) == 14
        for name, la in a["layers"].items():
            lb = b["layers"][name]
            assert la["shape"] == lb["shape"] and la["numerical_rank"] == lb["numerical_rank"]
            assert lb["frobenius"] == pytest.approx(la["frobenius"], rel=1e-3), name
            assert lb["entropy_rank"] == pytest.approx(la["entropy_rank"], rel=1e-3), name
