"""Tokenize a stream of documents into a shard folder with a held-out validation split."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trainer.data.shards import DEFAULT_SHARD_TOKENS, ShardMeta, ShardWriter
from trainer.data.tokenizer import Tokenizer

ENCODE_BATCH_CHARS = 4_000_000  # characters handed to the tokenizer per batch


def _batches(docs: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    """Group documents into lists of about ``max_chars`` characters."""
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def prepare_shards(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    output: str | Path,
    val_fraction: float = 0.01,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    seed: int = 0,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    val_documents: Iterable[str] | None = None,
) -> ShardMeta:
    """Tokenize ``documents`` and write them to the shard folder ``output``.

    ``val_documents`` (e.g. C4's own validation split) are all written to the validation
    split, after the training documents and in their order; with them ``val_fraction`` is
    usually 0, so that every one of ``documents`` trains.

    Each document goes to validation with probability ``val_fraction``, decided by a
    ``random.Random(seed)`` draw per document in input order, so the split is deterministic.
    When ``val_fraction > 0`` and no document was drawn for validation, the last document is,
    so the validation split is never empty (given at least two documents).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(seed)
    meta_extra = {"val_fraction": val_fraction, "split_seed": seed, **(extra or {})}
    with ShardWriter(
        output,
        tokenizer=tokenizer.name,
        vocab_size=tokenizer.vocab_size,
        eos_id=tokenizer.eos_id,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        extra=meta_extra,
    ) as writer:
        held: tuple[str, list[int]] | None = None  # the last document waits for the fallback
        n_val = 0
        for batch in _batches(documents, ENCODE_BATCH_CHARS):
            for ids in tokenizer.encode_batch(batch):
                split = "val" if rng.random() < val_fraction else "train"
                if held is not None:
                    writer.add_document(*held)
                n_val += split == "val"
                held = (split, ids)
        if held is None:
            raise ValueError("no documents to prepare: the inputs are empty")
        no_val = val_documents is None and val_fraction > 0 and n_val == 0
        if no_val and writer.meta.splits["train"].n_documents > 0:
            held = ("val", held[1])
        writer.add_document(*held)
        if val_documents is not None:
            n_explicit = 0
            for batch in _batches(val_documents, ENCODE_BATCH_CHARS):
                for ids in tokenizer.encode_batch(batch):
                    writer.add_document("val", ids)
                    n_explicit += 1
            if n_explicit == 0:
                raise ValueError("no validation documents: the validation inputs are empty")
    return writer.meta
