"""One run of a suite: its folder, its config file, and the trainer launched as a subprocess.

A run lives in ``<output>/runs/<name>/`` and is the trainer's dump folder: ``run.toml`` (the
resolved config it trains), ``spec.json`` (its place in the suite), ``train.log`` (all
attempts' output), ``attempts.json`` (wall time and exit status of each launch), and what the
trainer writes: ``summary.json`` when finished, checkpoints, TensorBoard events.

A run is finished when ``summary.json`` exists; launching an unfinished run again continues
from its newest complete checkpoint (the trainer resumes by itself when checkpointing is on).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainer.config import JobConfig, to_toml
from trainer.diagnostics.rank import JSONL_FILE
from trainer.reproduce.spec import RunSpec
from trainer.reproduce.suites import REPO

CONFIG_FILE = "run.toml"
SPEC_FILE = "spec.json"
LOG_FILE = "train.log"
ATTEMPTS_FILE = "attempts.json"
SUMMARY_FILE = "summary.json"
TRAIN_SCRIPT = REPO / "scripts" / "train.py"


class RunConflict(RuntimeError):
    """A run folder already holds a run of a different config."""


def runs_root(output: Path) -> Path:
    return Path(output) / "runs"


def run_folder(output: Path, name: str) -> Path:
    return runs_root(output) / name


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The trainer's summary.json, or None when the run has not finished."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_finished(folder: Path) -> bool:
    return read_summary(folder) is not None


def has_checkpoint(folder: Path) -> bool:
    """Whether the run has a complete checkpoint to resume from."""
    root = Path(folder) / "checkpoints"
    return root.is_dir() and any(
        p.is_dir() and not p.name.endswith(".partial") for p in root.glob("step-*")
    )


def check_config(folder: Path, cfg: JobConfig) -> None:
    """RunConflict when ``folder`` holds progress (a summary or a checkpoint) of another config."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file() or path.read_text() == to_toml(cfg):
        return
    if is_finished(folder) or has_checkpoint(folder):
        raise RunConflict(
            f"{path} was written for a different config than this suite now plans, and the run "
            "has progress under it; use another --output folder or delete that run folder"
        )


def clear_stale(folder: Path, cfg: JobConfig) -> None:
    """Drop the metrics of an earlier attempt at another config that left nothing to resume."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file() or path.read_text() == to_toml(cfg):
        return
    shutil.rmtree(Path(folder) / "tb", ignore_errors=True)
    for name in (JSONL_FILE, ATTEMPTS_FILE):
        (Path(folder) / name).unlink(missing_ok=True)


def write_run_files(folder: Path, cfg: JobConfig, spec: RunSpec) -> Path:
    """Create the run folder with run.toml and spec.json; returns the config path."""
    folder = Path(folder)
    check_config(folder, cfg)
    clear_stale(folder, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    path.write_text(to_toml(cfg))
    record = {**asdict(spec), "variant": dict(spec.variant), "ablations": list(spec.ablations)}
    (folder / SPEC_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_spec(folder: Path) -> RunSpec | None:
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return RunSpec(**{**raw, "ablations": tuple(raw.get("ablations", ()))})


def train_command(config: Path, nproc: int, torchrun_args: Sequence[str] = ()) -> list[str]:
    """``python scripts/train.py --config ...``, or under torchrun when nproc > 1."""
    if nproc <= 1 and not torchrun_args:
        return [sys.executable, "-u", str(TRAIN_SCRIPT), "--config", str(config)]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    launcher += list(torchrun_args) if torchrun_args else ["--standalone"]
    return [*launcher, str(TRAIN_SCRIPT), "--config", str(config)]


def child_env(nproc: int) -> dict[str, str]:
    """The environment of a launch: unbuffered output and one share of the CPU threads each."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, nproc))))
    return env


def _die_with_parent() -> None:
    """Linux: SIGTERM the launched trainer when the suite process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a launch and wait for it (SIGKILL after 30 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch(
    cmd: Sequence[str], folder: Path, env: dict[str, str], on_line: Callable[[str], None]
) -> int:
    """Run ``cmd``, append its output to train.log, pass each line to ``on_line``.

    Returns the exit status; the launch is recorded in attempts.json. Interrupting the suite
    (Ctrl-C, SIGTERM) stops the trainer too; it resumes from its checkpoint next time.
    """
    folder = Path(folder)
    start = time.time()
    code: int | None = None
    with open(folder / LOG_FILE, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=REPO,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                on_line(line.rstrip("\n"))
            code = proc.wait()
        finally:
            _stop(proc)
            _record_attempt(folder, time.time() - start, code)
    return code


def _record_attempt(folder: Path, seconds: float, code: int | None) -> None:
    path = folder / ATTEMPTS_FILE
    attempts = json.loads(path.read_text()) if path.is_file() else []
    attempts.append({"started": time.time() - seconds, "wall_s": seconds, "exit_code": code})
    path.write_text(json.dumps(attempts, indent=2) + "\n")


def wall_seconds(folder: Path) -> float:
    """Total wall time of every launch of the run so far."""
    path = Path(folder) / ATTEMPTS_FILE
    if not path.is_file():
        return 0.0
    return float(sum(a["wall_s"] for a in json.loads(path.read_text())))


def tail(folder: Path, lines: int = 15) -> str:
    """The last lines of train.log (shown when a run fails)."""
    path = Path(folder) / LOG_FILE
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
