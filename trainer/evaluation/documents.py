"""The texts an evaluation scores: a text file, a jsonl file or a shard folder's validation split.

- a text file (any name not ending in ``.jsonl``) is one document, read as UTF-8 in text mode
  (line endings become ``\\n``, as in lm-eval's ``text`` loader);
- a ``.jsonl`` file holds one document per line, in its ``"text"`` field;
- a shard folder (written by scripts/prepare_data.py) gives the documents of its ``val`` split,
  cut at EOS and decoded with the model's tokenizer, which must be the one the shards were
  written with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.shards import META_FILE, open_split, read_meta
from trainer.errors import DataError


@dataclass
class Document:
    """One scored text: its token ids and the text they stand for."""

    ids: list[int]
    text: str


def read_texts(path: Path) -> list[str]:
    """The documents of a text or jsonl file."""
    if not path.is_file():
        raise DataError(f"evaluation file {path} does not exist")
    try:
        if path.suffix != ".jsonl":
            return [path.read_text(encoding="utf-8")]
        texts = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f"{path}:{number}: a jsonl line needs a string field 'text'")
                texts.append(record["text"])
        return texts
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def shard_documents(folder: Path, tokenizer_name: str, decode) -> list[Document]:
    """The validation documents of a shard folder, as stored (ids) and decoded (text)."""
    try:
        meta = read_meta(folder)
        arrays = open_split(folder, meta, "val")
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    if meta.tokenizer != tokenizer_name:
        raise DataError(
            f"{folder / META_FILE}: shards were written with tokenizer {meta.tokenizer}, the "
            f"model was trained with {tokenizer_name}"
        )
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(tokens == meta.eos_id)
    documents, start = [], 0
    for end in [*ends.tolist(), len(tokens)]:
        ids = tokens[start:end].astype(np.int64).tolist()
        start = end + 1
        if ids:
            documents.append(Document(ids, decode(ids)))
    return documents
