"""One live run per dump folder: a second run is refused, a stale lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, launch_env, train_command
from trainer.errors import RunLockError
from trainer.run_lock import LOCK_FILE, acquire


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(folder: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00"}))
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_lock_records_holder_and_refuses_a_second_taker(tmp_path: Path) -> None:
    lock = acquire(tmp_path, 60, print)
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    assert "started" in info
    with pytest.raises(RunLockError) as err:
        acquire(tmp_path, 60, print)
    message = str(err.value)
    assert f"held by a live run (host {info['host']}, pid {os.getpid()}, started" in message
    assert "\n" not in message
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_dead_pid_on_this_host_is_taken_over(tmp_path: Path) -> None:
    pid = dead_pid()
    plant(tmp_path, socket.gethostname(), pid)
    lines: list[str] = []
    lock = acquire(tmp_path, 10**6, lines.append)
    assert len(lines) == 1 and f"process {pid} on this host has exited" in lines[0]
    assert lines[0].startswith(f"took over the stale lock {tmp_path / LOCK_FILE}")
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # nothing else left behind
    lock.release()


def test_other_host_is_stale_only_after_the_heartbeat_timeout(tmp_path: Path) -> None:
    plant(tmp_path, "node-elsewhere", 12345, age_s=100)
    with pytest.raises(RunLockError, match="host node-elsewhere, pid 12345"):
        acquire(tmp_path, 1000, print)
    lines: list[str] = []
    lock = acquire(tmp_path, 50, lines.append)
    assert "heartbeat is 100s old, beyond job.lock_timeout_s = 50" in lines[0]
    lock.release()


def test_heartbeat_and_release_touch_only_this_runs_lock(tmp_path: Path) -> None:
    lock = acquire(tmp_path, 60, print)
    old = time.time() - 500
    os.utime(lock.path, (old, old))
    lock.heartbeat()
    assert time.time() - lock.path.stat().st_mtime < 60
    plant(tmp_path, "node-elsewhere", 1)  # replaced by another run: not ours to delete
    lock.release()
    assert (tmp_path / LOCK_FILE).exists()


def train_args(dump: Path, steps: int) -> list[str]:
    return [
        "--config",
        str(ROOT / "configs/tiny_full.toml"),
        "--model.flavor",
        "debug",
        "--training.steps",
        str(steps),
        "--training.seq_len",
        "32",
        "--training.global_batch_size",
        "2",
        "--training.val_batches",
        "1",
        "--training.val_every",
        "0",
        "--metrics.log_every",
        "5",
        "--metrics.tensorboard",
        "false",
        "--checkpoint.interval",
        "50",
        "--checkpoint.keep_latest",
        "2",
        "--job.dump_folder",
        str(dump),
    ]


def test_second_run_on_a_live_folder_is_refused_on_every_rank(tmp_path: Path) -> None:
    dump = tmp_path / "run"
    dump.mkdir()
    pid = dead_pid()
    plant(dump, socket.gethostname(), pid)  # left by a killed run: taken over
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [*train_command(ROOT / "scripts/train.py", 1), *train_args(dump, 300)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=launch_env(),
        cwd=ROOT,
    )
    try:
        deadline = time.time() + 300
        created = None
        # Two log steps: the lock exists and its heartbeat has moved on since it was taken.
        while (tmp_path / "first.log").read_text().count("/300 |") < 2:
            if created is None and (dump / LOCK_FILE).exists():
                created = (dump / LOCK_FILE).stat().st_mtime
            assert first.poll() is None and time.time() < deadline, (
                tmp_path / "first.log"
            ).read_text()
            time.sleep(0.05)
        assert created is not None and (dump / LOCK_FILE).stat().st_mtime > created
        # Paused, so that it cannot finish before the second run has started (a tiny run is
        # faster than a torchrun launch); it stays alive and holds the lock.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = subprocess.run(
                [*train_command(ROOT / "scripts/train.py", 2), *train_args(dump, 300)],
                capture_output=True,
                text=True,
                timeout=300,
                env=launch_env(),
                cwd=ROOT,
            )
            assert first.poll() is None, "the first run ended before the second was refused"
        finally:
            os.kill(first.pid, signal.SIGCONT)
        expected = f"run error: {dump / LOCK_FILE} is held by a live run (host {socket.gethostname()}, pid {first.pid}, started"
        # Counted, not split into lines: the two ranks write to one stderr at the same time.
        assert second.stderr.count(expected) == 2, second.stderr
        assert second.returncode != 0 and "/300 |" not in second.stdout
        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    out = (tmp_path / "first.log").read_text()
    assert f"process {pid} on this host has exited" in out.splitlines()[0]
    assert "final | tiny_full | step 300" in out
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == ["step-250", "step-300"]
    assert (dump / "summary.json").exists() and not (dump / LOCK_FILE).exists()
