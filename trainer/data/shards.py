"""On-disk token shards: flat numpy arrays plus a meta.json, written once and memory-mapped.

Layout of a shard folder::

    meta.json        format version, tokenizer identity, vocab_size, eos_id, dtype, and per
                     split the document/token counts and the list of shard files
    train_000.bin    raw little-endian uint16 (vocab_size < 65536) or uint32 token ids
    train_001.bin    ...
    val_000.bin

Documents are stored back to back, each followed by ``eos_id``. ``meta.json`` is written last,
so a folder without it is an interrupted write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 100_000_000
SCAN_CHUNK_TOKENS = 1 << 24  # ids compared per step of the open-time vocabulary scan


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest on-disk dtype for ids below ``vocab_size``: uint16 below 65536, else uint32."""
    return np.dtype("<u2") if vocab_size < 2**16 else np.dtype("<u4")


@dataclass
class SplitMeta:
    """Counts and files of one split."""

    n_documents: int = 0
    n_tokens: int = 0
    files: list[str] = field(default_factory=list)
    file_tokens: list[int] = field(default_factory=list)


@dataclass
class ShardMeta:
    """Contents of ``meta.json``."""

    tokenizer: str
    vocab_size: int
    eos_id: int
    dtype: str
    splits: dict[str, SplitMeta]
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "tokenizer": self.tokenizer,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "dtype": self.dtype,
            "splits": {
                name: {
                    "n_documents": s.n_documents,
                    "n_tokens": s.n_tokens,
                    "files": s.files,
                    "file_tokens": s.file_tokens,
                }
                for name, s in self.splits.items()
            },
            "extra": self.extra,
        }


def _require(obj: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    if key not in obj:
        raise DataError(f"{where}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{where}: key {key!r} should be {kind.__name__}, got {value!r}")
    return value


def _read_split(s: Any, where: Path) -> SplitMeta:
    """One ``splits.<name>`` entry, with plain file names and non-negative token counts."""
    if not isinstance(s, dict):
        raise DataError(f"{where}: expected a JSON object, got {s!r}")
    split = SplitMeta(
        n_documents=_require(s, "n_documents", int, where),
        n_tokens=_require(s, "n_tokens", int, where),
        files=_require(s, "files", list, where),
        file_tokens=_require(s, "file_tokens", list, where),
    )
    for name in split.files:  # a listed file must lie inside the folder
        if not isinstance(name, str) or not name or Path(name).name != name or name in ("..", "."):
            raise DataError(f"{where}: 'files' holds {name!r}, not a file name in the folder")
    for n in split.file_tokens:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise DataError(f"{where}: 'file_tokens' holds {n!r}, not a token count")
    if len(split.files) != len(split.file_tokens) or sum(split.file_tokens) != split.n_tokens:
        raise DataError(f"{where}: 'files', 'file_tokens' and 'n_tokens' disagree")
    return split


def read_meta(folder: str | Path) -> ShardMeta:
    """Parse and validate ``folder/meta.json``; any problem is one DataError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"shard folder not found: {folder}")
    path = folder / META_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found: {folder} is not a shard folder or its write was interrupted"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot be read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.start}): damaged or not a meta.json"
        ) from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = _require(raw, "format_version", int, path)
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {version}, this reader supports {FORMAT_VERSION}")
    vocab_size = _require(raw, "vocab_size", int, path)
    if vocab_size < 1:
        raise DataError(f"{path}: key 'vocab_size' is {vocab_size}, must be positive")
    eos_id = _require(raw, "eos_id", int, path)
    if not 0 <= eos_id < vocab_size:
        raise DataError(f"{path}: key 'eos_id' is {eos_id}, outside [0, vocab_size {vocab_size})")
    dtype = _require(raw, "dtype", str, path)
    expected = dtype_for_vocab(vocab_size)
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"{path}: key 'dtype' is {dtype!r}, expected 'uint16' or 'uint32'")
    if np.dtype(dtype) != expected:
        raise DataError(
            f"{path}: dtype mismatch: key 'dtype' is {dtype!r} but vocab_size {vocab_size} "
            f"needs {expected.name}"
        )
    splits_raw = _require(raw, "splits", dict, path)
    splits = {}
    for name in SPLITS:
        if name not in splits_raw:
            raise DataError(f"{path}: missing key 'splits.{name}'")
        splits[name] = _read_split(splits_raw[name], Path(f"{path}[splits.{name}]"))
    return ShardMeta(
        tokenizer=_require(raw, "tokenizer", str, path),
        vocab_size=vocab_size,
        eos_id=eos_id,
        dtype=dtype,
        splits=splits,
        extra=raw.get("extra", {}),
        format_version=version,
    )


def check_token_ids(array: np.ndarray, vocab_size: int, path: Path) -> None:
    """Raise a DataError naming ``path`` and the first offset whose id is ``>= vocab_size``.

    Scans in chunks so that a memory-mapped shard is read once, sequentially, without
    holding more than one chunk of comparisons in memory.
    """
    for start in range(0, len(array), SCAN_CHUNK_TOKENS):
        chunk = array[start : start + SCAN_CHUNK_TOKENS]
        if chunk.max() >= vocab_size:
            offset = start + int(np.argmax(chunk >= vocab_size))
            raise DataError(
                f"{path}: token id {int(array[offset])} at token offset {offset} is outside "
                f"the vocabulary [0, {vocab_size}) of {META_FILE}; the shard is corrupt or "
                "was written with another tokenizer"
            )


def open_split(
    folder: str | Path, meta: ShardMeta, split: str, check_ids: bool = True
) -> list[np.ndarray]:
    """Read-only memory maps of the shard files of ``split``, checked against ``meta``.

    With ``check_ids`` every token id is scanned once against ``meta.vocab_size`` (the
    tokenizer's vocabulary, not the model's padded embedding size).
    """
    folder = Path(folder)
    if split not in meta.splits:
        raise DataError(f"{folder / META_FILE}: no split {split!r}")
    dtype = np.dtype(meta.dtype).newbyteorder("<")
    arrays = []
    for name, n_tokens in zip(meta.splits[split].files, meta.splits[split].file_tokens):
        path = folder / name
        if not path.is_file():
            raise DataError(f"shard file missing: {path} (listed in {META_FILE})")
        size = path.stat().st_size
        if size != n_tokens * dtype.itemsize:
            raise DataError(
                f"{path}: {size} bytes, expected {n_tokens * dtype.itemsize} "
                f"({n_tokens} tokens of {meta.dtype}); the file is truncated or corrupt"
            )
        if n_tokens > 0:
            try:
                array = np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))
            except OSError as e:
                raise DataError(f"{path}: cannot be read: {e.strerror or e}") from e
            if check_ids:
                check_token_ids(array, meta.vocab_size, path)
            arrays.append(array)
    return arrays


class ShardWriter:
    """Append documents to the train/val splits of a new shard folder.

    Use as a context manager; ``meta.json`` is written on successful exit (or ``close()``).
    """

    def __init__(
        self,
        folder: str | Path,
        tokenizer: str,
        vocab_size: int,
        eos_id: int,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
        if not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id {eos_id} outside [0, {vocab_size})")
        self.folder = Path(folder)
        if (self.folder / META_FILE).exists() and not overwrite:
            raise FileExistsError(f"{self.folder / META_FILE} exists; pass overwrite to replace it")
        self.folder.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:  # remove stale shards of an earlier run
            for old in self.folder.glob(f"{split}_*.bin"):
                old.unlink()
        (self.folder / META_FILE).unlink(missing_ok=True)
        self.dtype = dtype_for_vocab(vocab_size)
        self.shard_tokens = shard_tokens
        self.meta = ShardMeta(
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            eos_id=eos_id,
            dtype=self.dtype.name,
            splits={s: SplitMeta() for s in SPLITS},
            extra=dict(extra or {}),
        )
        self._buffers: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self._buffered: dict[str, int] = {s: 0 for s in SPLITS}
        self._closed = False

    def add_document(self, split: str, ids: list[int] | np.ndarray) -> None:
        """Append one document (its ids followed by EOS) to ``split``."""
        if split not in self._buffers:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim != 1:
            raise ValueError(f"a document must be a 1-D id sequence, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.meta.vocab_size):
            raise ValueError(f"token id outside [0, {self.meta.vocab_size}) in a {split} document")
        doc = np.empty(arr.size + 1, dtype=self.dtype)
        doc[:-1] = arr
        doc[-1] = self.meta.eos_id
        self._buffers[split].append(doc)
        self._buffered[split] += doc.size
        self.meta.splits[split].n_documents += 1
        while self._buffered[split] >= self.shard_tokens:
            self._flush(split, self.shard_tokens)

    def _flush(self, split: str, n: int) -> None:
        """Write the first ``n`` buffered tokens of ``split`` as the next shard file."""
        data = np.concatenate(self._buffers[split])
        head, rest = data[:n], data[n:]
        info = self.meta.splits[split]
        name = f"{split}_{len(info.files):03d}.bin"
        head.tofile(self.folder / name)
        info.files.append(name)
        info.file_tokens.append(int(head.size))
        info.n_tokens += int(head.size)
        self._buffers[split] = [rest] if rest.size else []
        self._buffered[split] = int(rest.size)

    def close(self) -> ShardMeta:
        """Flush partial shards and write ``meta.json``; returns the final metadata."""
        if self._closed:
            return self.meta
        for split in SPLITS:
            if self._buffered[split]:
                self._flush(split, self._buffered[split])
        tmp = self.folder / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.meta.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / META_FILE)
        self._closed = True
        return self.meta

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
