"""2 FSDP2 processes (gloo): invariance, equality with 1 process over 20 steps, identical
decisions on every rank, DCP round trip, HSDP mesh. One torchrun launch runs every check
(see _dist_worker.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_fsdp2_processes_match_one(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "--master_addr=127.0.0.1",
        str(HERE / "_dist_worker.py"),
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SWITCHLORA_DIST_OK "))
    report = json.loads(line.split(" ", 1)[1])
    assert set(report) == {
        "pool-sequential",
        "pool-random-nowriteback",
        "seeded",
        "pool-hsdp",
    }
    for case in report.values():
        assert case["invariance_rel"] < 1e-5
        assert case["max_abs_diff"] < 1e-5
