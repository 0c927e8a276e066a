"""Shared test helpers: repository root on sys.path, torchrun launcher."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(script: str | Path, nproc: int) -> list[str]:
    """``python script`` for one process, ``python -m torch.distributed.run ... script`` for more."""
    if nproc <= 1:
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        "--master_addr=127.0.0.1",
        str(script),
    ]


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a launched run: the repository importable, one thread per process."""
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        **(extra or {}),
    }


def run_torchrun(
    script: str | Path, args: list[str], nproc: int = 2, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``script`` under torchrun on gloo; raises with the output on failure."""
    cmd = [*train_command(script, nproc), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=launch_env(), cwd=ROOT
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-6000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
        )
    return proc
