"""Read raw documents from text, JSON-lines and Parquet files, or Hugging Face datasets."""

from __future__ import annotations

import glob
import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from trainer.errors import DataError

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
DATA_EXTRA_HINT = "install the optional extra: pip install -e '.[data]'"


def _is_supported(path: Path) -> bool:
    return path.name.endswith(SUPPORTED)


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files named by paths, globs (``**`` allowed) or folders (searched recursively).

    Globs and folders keep only supported file types, in sorted order; duplicates are dropped.
    """
    files: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
        else:
            matches = [Path(pattern)]
            if not matches[0].exists():
                raise DataError(f"input not found: {pattern}")
            if matches[0].is_file() and not _is_supported(matches[0]):
                raise DataError(
                    f"unsupported input file type: {pattern} (expected {', '.join(SUPPORTED)})"
                )
        found: list[Path] = []
        for m in matches:
            if m.is_dir():
                found.extend(sorted(q for q in m.rglob("*") if q.is_file() and _is_supported(q)))
            elif _is_supported(m):
                found.append(m)
        if not found:
            raise DataError(f"no {', '.join(SUPPORTED)} files match {pattern}")
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_text_file(path: Path, one_per_line: bool = False) -> Iterator[str]:
    """The whole file as one document, or each non-empty line as a document."""
    with _open_text(path) as f:
        if one_per_line:
            for line in f:
                line = line.rstrip("\n")
                if line.strip():
                    yield line
        else:
            text = f.read()
            if text.strip():
                yield text


def read_jsonl_file(path: Path, field: str) -> Iterator[str]:
    """The string ``field`` of each JSON object, one object per line."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e}") from e
            if not isinstance(obj, dict) or field not in obj:
                raise DataError(f"{path}:{lineno}: no key {field!r} in the JSON object")
            text = obj[field]
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: key {field!r} is {type(text).__name__}, not str")
            yield text


def read_parquet_file(path: Path, field: str) -> Iterator[str]:
    """The string column ``field`` of a Parquet file, row by row."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow; {DATA_EXTRA_HINT}") from e
    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise DataError(
            f"{path}: no column {field!r} (columns: {', '.join(pf.schema_arrow.names)})"
        )
    for batch in pf.iter_batches(columns=[field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


def read_files(
    files: Sequence[Path], field: str = "text", one_per_line: bool = False
) -> Iterator[str]:
    """Documents of every file, in order, dispatched on the file extension."""
    for path in files:
        name = path.name
        if name.endswith(TEXT_SUFFIXES):
            docs = read_text_file(path, one_per_line)
        elif name.endswith(JSONL_SUFFIXES):
            docs = read_jsonl_file(path, field)
        elif name.endswith(PARQUET_SUFFIXES):
            docs = read_parquet_file(path, field)
        else:
            raise DataError(f"unsupported input file type: {path}")
        try:
            yield from docs
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}: not UTF-8 text ({e.reason}); "
                "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or leave it out"
            ) from e
        except (gzip.BadGzipFile, EOFError) as e:
            raise DataError(f"{path}: damaged gzip file: {e}") from e


def read_hf_dataset(
    name: str,
    config: str | None = None,
    split: str = "train",
    field: str = "text",
    data_files: Sequence[str] | None = None,
) -> Iterator[str]:
    """Stream the ``field`` column of a Hugging Face dataset.

    ``name`` is a hub dataset or a local builder ("json", "parquet", "text") with
    ``data_files``; offline, set HF_DATASETS_OFFLINE=1 and HF_HUB_OFFLINE=1.
    """
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"--hf-dataset needs the `datasets` package; {DATA_EXTRA_HINT}") from e
    files = list(data_files) if data_files else None
    ds = datasets.load_dataset(name, config, data_files=files, split=split, streaming=True)
    for i, row in enumerate(ds):
        if field not in row:
            raise DataError(
                f"dataset {name!r} row {i}: no field {field!r} (fields: {', '.join(row)})"
            )
        yield row[field]
