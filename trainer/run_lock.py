"""One live run per dump folder: rank 0 holds ``<dump_folder>/run.lock`` while the run lives.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems)
and records the holder's host, pid and start time as JSON; its modification time is the
heartbeat, refreshed at every log step. A later run finds the lock and

- refuses to start while the holder lives: same host and its pid exists, or another host and
  the heartbeat is younger than ``job.lock_timeout_s``;
- takes it over, saying so, when the holder is gone: same host and its pid has exited, or
  another host and the heartbeat is older than ``job.lock_timeout_s``.

Rank 0 decides and broadcasts the decision, so every rank stops together when it refuses.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.errors import RunLockError

LOCK_FILE = "run.lock"


def _holder_text(info: dict) -> str:
    return (
        f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
        f"started {info.get('started', '?')}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> tuple[dict, str]:
    """The lock's fields and raw text ({} when unreadable or half written)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}, ""
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}, text
    return (info if isinstance(info, dict) else {}), text


class RunLock:
    """The lock this process holds on one dump folder."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def heartbeat(self) -> None:
        """Refresh the lock's modification time (the heartbeat other hosts judge it by)."""
        # A lost heartbeat only lets another host take over later; never fatal here.
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def release(self) -> None:
        """Remove the lock, if it is still the one this process wrote."""
        if _read(self.path)[1] == self.text:
            self.path.unlink(missing_ok=True)


def _create(path: Path) -> RunLock | None:
    """Create the lock file atomically; None when one exists already."""
    text = json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return RunLock(path, text)


def stale_reason(info: dict, age_s: float, timeout_s: float) -> str | None:
    """Why the lock's holder is gone, or None while it may be alive."""
    host, pid = info.get("host"), info.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        return None if _pid_alive(pid) else f"its process {pid} on this host has exited"
    if age_s > timeout_s:
        return f"its heartbeat is {age_s:.0f}s old, beyond job.lock_timeout_s = {timeout_s:g}"
    return None


def acquire(dump: Path, timeout_s: float, log: Callable[[str], None]) -> RunLock:
    """Take ``dump/run.lock``, taking over a stale one; RunLockError while another run lives."""
    path = dump / LOCK_FILE
    for _ in range(3):  # a lock may vanish or reappear between the steps below
        lock = _create(path)
        if lock is not None:
            return lock
        info, text = _read(path)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        reason = stale_reason(info, age, timeout_s)
        if reason is None:
            raise RunLockError(
                f"{path} is held by a live run ({_holder_text(info)}); wait for it to "
                f"finish or use another job.dump_folder (if that run is gone, delete {path})"
            )
        # Move the stale lock aside atomically; if what was moved is no longer the file
        # judged stale (another run replaced it meanwhile), put it back and look again.
        aside = path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        if _read(aside)[1] != text:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink(missing_ok=True)
            continue
        aside.unlink(missing_ok=True)
        log(f"took over the stale lock {path} ({_holder_text(info)}): {reason}")
    raise RunLockError(f"{path}: could not take the lock; another run is starting on this folder")


def hold_dump_folder(
    dump: Path, timeout_s: float, rank: int, device: torch.device, log: Callable[[str], None]
) -> RunLock | None:
    """Rank 0 takes the lock and broadcasts the outcome; every rank raises if it was refused.

    Returns the lock on rank 0, None elsewhere.
    """
    lock, message = None, ""
    if rank == 0:
        try:
            lock = acquire(dump, timeout_s, log)
        except RunLockError as exc:
            message = str(exc)
    if dist.is_initialized() and dist.get_world_size() > 1:
        message = _broadcast_text(message, device)
    if message:
        raise RunLockError(message)
    return lock


def _broadcast_text(text: str, device: torch.device) -> str:
    """Rank 0's ``text`` on every rank (as bytes in tensors: nothing is unpickled)."""
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    if dist.get_rank() != 0:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if int(size.item()):
        dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode("utf-8")
