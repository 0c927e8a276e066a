"""Checksums of checkpoint files: computed once a file is complete, verified before any load.

The hash is xxHash's XXH3 (64 bit): several GB/s per core on any CPU (no dependence on a
CRC instruction), a maintained C library behind the ``xxhash`` package, and it reads from a
buffer without copying it. It detects damage (bit rot, a truncated copy, a file overwritten
in place); it is not a signature, since whoever can change a file can also change the
manifest that records its checksum.

Each rank hashes the data files it wrote, right after writing them (in the background
thread of an asynchronous save), and leaves the result beside each file as
``<file>.xxh3``; rank 0 moves those into the manifest and hashes the remaining files itself
(DCP's ``.metadata``, ``config.toml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xxhash
from torch.distributed.checkpoint import FileSystemWriter
from torch.futures import Future

ALGORITHM = "xxh3_64"
"""Name recorded in the manifest next to the checksums."""

SIDECAR_SUFFIX = ".xxh3"
"""Suffix of the per-file checksum a writer leaves until rank 0 collects it."""

CHUNK_BYTES = 8 * 2**20
"""Read size: large enough for full hashing speed, small enough to hold no file in memory."""


def file_checksum(path: Path) -> str:
    """Hex XXH3-64 of the file's bytes, read in chunks."""
    digest = xxhash.xxh3_64()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while True:
            count = fh.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def sidecar_of(path: Path) -> Path:
    """Where the writer of ``path`` leaves its checksum."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


class ChecksummingWriter(FileSystemWriter):
    """A FileSystemWriter that hashes each data file it wrote once the file is complete."""

    def write_data(self, plan: Any, planner: Any) -> Future:
        """Write this rank's files (DCP writes them before returning), then hash each."""
        future = super().write_data(plan, planner)
        results = future.wait()
        folder = Path(self.path)
        for name in sorted({result.storage_data.relative_path for result in results}):
            path = folder / name
            sidecar_of(path).write_text(file_checksum(path))
        return future


def collect_checksums(folder: Path, names: list[str]) -> dict[str, str]:
    """Checksum of every file in ``names``: from its writer's sidecar (then removed), else now."""
    out = {}
    for name in names:
        sidecar = sidecar_of(folder / name)
        if sidecar.is_file():
            out[name] = sidecar.read_text().strip()
            sidecar.unlink()
        else:
            out[name] = file_checksum(folder / name)
    return out


def mismatched_files(
    folder: Path, checksums: dict[str, str], rank: int = 0, world: int = 1
) -> list[str]:
    """Names among this rank's share (every ``world``-th file) whose bytes differ from the record."""
    names = sorted(checksums)[rank::world]
    return [name for name in names if file_checksum(folder / name) != checksums[name]]
