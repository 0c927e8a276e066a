"""The run's tokenizer travels with its checkpoints: a copy of the file and its content hash.

A run names its tokenizer by content (``byte``, ``hf:<hash>`` or ``sp:<hash>``, see
``trainer.data.tokenizer``); shard folders record the same name. Every checkpoint keeps a copy
of the tokenizer file (``tokenizer.json`` or ``tokenizer.model``) whose hash is checked against
that name when it is written and when it is read, so an export or an evaluation never depends
on the original path still existing or still holding the same file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainer.data.tokenizer import file_digest
from trainer.errors import CheckpointError, DataError

COPY_NAMES = {"hf": "tokenizer.json", "sp": "tokenizer.model"}
"""Backend prefix of the tokenizer name -> file name of the copy inside a checkpoint."""


def tokenizer_record(spec: str, name: str, eos_id: int, folder: Path, copy: bool) -> dict[str, Any]:
    """The manifest's ``tokenizer`` entry; with ``copy``, also copy the file into ``folder``.

    ``spec`` is the configured ``data.tokenizer`` (``byte`` or a path), ``name`` the identity
    the run's data was built with. Raises :class:`DataError` when the file at ``spec`` no
    longer has the content the run started with.
    """
    record: dict[str, Any] = {"name": name, "eos_id": eos_id}
    backend, _, digest = name.partition(":")
    if backend not in COPY_NAMES:
        return record
    record["file"] = COPY_NAMES[backend]
    if copy:
        source = Path(spec)
        have = file_digest(source) if source.is_file() else "missing"
        if have != digest:
            raise DataError(
                f"tokenizer file {source} has changed since the run started (hash {have}, the "
                f"run uses {digest}); restore it before the next checkpoint is written"
            )
        shutil.copyfile(source, folder / record["file"])
    return record


def saved_tokenizer_file(folder: Path, manifest: dict[str, Any]) -> Path | None:
    """The checkpoint's copy of its tokenizer file (hash checked), None for ``byte``.

    Raises :class:`CheckpointError` when the manifest names a tokenizer file whose copy is
    missing or differs from the recorded hash.
    """
    record = manifest.get("tokenizer") or {}
    backend, _, digest = str(record.get("name", "byte")).partition(":")
    if backend not in COPY_NAMES:
        return None
    path = folder / record.get("file", COPY_NAMES[backend])
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {folder} has no copy of its tokenizer ({path.name} missing; it was "
            f"written before checkpoints kept one); tokenizer {record['name']}"
        )
    if file_digest(path) != digest:
        raise CheckpointError(
            f"checkpoint {folder}: {path.name} has hash {file_digest(path)}, the run's "
            f"tokenizer is {record['name']}; the copy is corrupt"
        )
    return path


def check_same_tokenizer(folder: Path, manifest: dict[str, Any], data_tokenizer: str) -> None:
    """Refuse to continue from a checkpoint trained with another tokenizer than the data's."""
    saved = (manifest.get("tokenizer") or {}).get("name")
    if saved is not None and saved != data_tokenizer:
        raise DataError(
            f"checkpoint {folder} was trained with tokenizer {saved}, the configured data uses "
            f"{data_tokenizer}; use the tokenizer (and data) the checkpoint was trained with"
        )
