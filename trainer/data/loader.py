"""Public data API: build the resumable training loader and deterministic validation batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from trainer.data.embedded import EMBEDDED_SOURCES, load_embedded_documents
from trainer.data.padded import Packing, build_split
from trainer.data.sampler import DistributedWindowSampler
from trainer.data.shards import open_split, read_meta
from trainer.data.tokenizer import ByteTokenizer, Tokenizer, build_tokenizer
from trainer.data.val_budget import TokenBudgetBatches
from trainer.data.windows import TokenWindows, collate_windows
from trainer.errors import DataError

Batch = dict[str, torch.Tensor]


@dataclass
class DataBundle:
    """Everything the trainer needs from the data pipeline.

    ``train`` is infinite and yields ``dict(input=LongTensor[B, L], target=LongTensor[B, L])``;
    ``val_windows`` holds windows of ``seq_len + 1`` tokens, for ``build_val_loader``.
    """

    train: StatefulDataLoader
    val_windows: Dataset
    vocab_size: int
    eos_id: int
    tokenizer_name: str


def tokenize_documents(docs: list[str], tok: Tokenizer) -> np.ndarray:
    """One flat int64 stream: every document's ids followed by ``tok.eos_id``."""
    if isinstance(tok, ByteTokenizer):
        parts = [np.frombuffer(d.encode("utf-8"), dtype=np.uint8) for d in docs]
    else:
        parts = [np.asarray(ids, dtype=np.int64) for ids in tok.encode_batch(docs)]
    eos = np.array([tok.eos_id], dtype=np.int64)
    return np.concatenate([x for p in parts for x in (p.astype(np.int64), eos)])


def split_embedded(
    tokens: np.ndarray, seq_len: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Train/val token streams: the last ``val_fraction`` of windows is validation."""
    window = seq_len + 1
    n_windows = len(tokens) // window
    n_val = round(n_windows * val_fraction) if val_fraction > 0 else 0
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n_windows - n_val < 1:
        raise ValueError(
            f"corpus of {len(tokens)} tokens gives {n_windows} windows of {window} tokens: "
            f"too few for a train/val split with val_fraction={val_fraction}"
        )
    cut = (n_windows - n_val) * window
    return tokens[:cut], tokens[cut:]


def _load_source(
    source: str, tok: Tokenizer, seq_len: int, val_fraction: float, packing: Packing = "packed"
) -> tuple[Dataset, Dataset]:
    """Train and val window datasets of an embedded corpus or a shard folder."""
    if source in EMBEDDED_SOURCES or source.startswith("embedded:"):
        tokens = tokenize_documents(load_embedded_documents(source), tok)
        train, val = split_embedded(tokens, seq_len, val_fraction)
        if tok.vocab_size < 2**16:  # halve the memory that workers share or copy
            train, val = train.astype(np.uint16), val.astype(np.uint16)
        if packing == "pad":
            return (
                build_split([train], seq_len, packing, tok.eos_id),
                build_split([val], seq_len, packing, tok.eos_id),
            )
        return TokenWindows(train, seq_len), TokenWindows(val, seq_len)
    folder = Path(source)
    if not folder.exists():
        raise DataError(
            f"data source not found: {folder}; create a shard folder with "
            f"`python scripts/prepare_data.py --input <files> --output {folder} "
            f"--tokenizer {tok.name if tok.name == 'byte' else '<tokenizer>'}` "
            f"or use source 'embedded:shakespeare'"
        )
    meta = read_meta(folder)
    for key, have, want in (
        ("tokenizer", meta.tokenizer, tok.name),
        ("vocab_size", meta.vocab_size, tok.vocab_size),
        ("eos_id", meta.eos_id, tok.eos_id),
    ):
        if have != want:
            raise DataError(
                f"{folder / 'meta.json'}: shards were written with {key} {have!r} but the "
                f"requested tokenizer has {key} {want!r}; re-run scripts/prepare_data.py "
                "with this tokenizer or pass the tokenizer the shards were made with"
            )
    train = build_split(open_split(folder, meta, "train"), seq_len, packing, tok.eos_id)
    val = build_split(open_split(folder, meta, "val"), seq_len, packing, tok.eos_id)
    return train, val


def build_data(
    source: str,
    tokenizer: str,
    seq_len: int,
    local_batch_size: int,
    dp_rank: int,
    dp_world: int,
    seed: int,
    num_workers: int = 0,
    val_fraction: float = 0.05,
    packing: Packing = "packed",
) -> DataBundle:
    """Build the training loader and validation windows for one data-parallel rank.

    ``source`` is "embedded:shakespeare" (tokenized in memory; the last ``val_fraction`` of
    tokens, cut at a window boundary, is validation) or a shard folder written by
    scripts/prepare_data.py (whose own train/val split is used; ``val_fraction`` is ignored).
    ``packing`` "packed" cuts the token stream into windows; "pad" makes one padded window
    per document (trainer.data.padded).
    The train loader is infinite and resumes exactly through ``state_dict()`` /
    ``load_state_dict()``.
    """
    if local_batch_size < 1:
        raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tok = build_tokenizer(tokenizer)
    train_windows, val_windows = _load_source(source, tok, seq_len, val_fraction, packing)
    if len(train_windows) < dp_world * local_batch_size:
        raise DataError(
            f"{source}: {len(train_windows)} training windows of {seq_len + 1} tokens are fewer "
            f"than one global batch ({dp_world} ranks x {local_batch_size})"
        )
    sampler = DistributedWindowSampler(
        len(train_windows), dp_rank=dp_rank, dp_world=dp_world, seed=seed
    )
    with warnings.catch_warnings():  # torchdata 0.11 calls the deprecated torch.set_vital
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        train = StatefulDataLoader(
            train_windows,
            batch_size=local_batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_windows,
            drop_last=True,
            # Pinned batches make the trainer's non_blocking host-to-device copies asynchronous.
            pin_memory=torch.cuda.is_available(),
        )
    return DataBundle(
        train=train,
        val_windows=val_windows,
        vocab_size=tok.vocab_size,
        eos_id=tok.eos_id,
        tokenizer_name=tok.name,
    )


class ValBatches:
    """Re-iterable validation batches for one rank: the same batches, in order, every time.

    Windows are dealt to ranks round-robin with equal counts (the tail is dropped), so every
    rank yields the same number of batches; the last batch may be smaller than the others.
    """

    def __init__(
        self,
        windows: Dataset,
        local_batch_size: int,
        dp_rank: int,
        dp_world: int,
        max_batches: int | None = None,
    ) -> None:
        if local_batch_size < 1:
            raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
        n = len(windows)  # type: ignore[arg-type]
        if n < dp_world:
            raise ValueError(
                f"{n} validation windows cannot give each of {dp_world} ranks at least one; "
                "use a larger validation split or a shorter seq_len"
            )
        sampler = DistributedWindowSampler(
            n, dp_rank=dp_rank, dp_world=dp_world, shuffle=False, infinite=False
        )
        self.indices = sampler.epoch_indices(0).tolist()
        self.windows = windows
        self.local_batch_size = local_batch_size
        n_batches = -(-len(self.indices) // local_batch_size)
        self.n_batches = n_batches if max_batches is None else min(n_batches, max_batches)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Batch]:
        b = self.local_batch_size
        for k in range(self.n_batches):
            chunk = self.indices[k * b : (k + 1) * b]
            yield collate_windows([self.windows[i] for i in chunk])


def build_val_loader(
    bundle_or_windows: DataBundle | Dataset,
    local_batch_size: int,
    dp_rank: int,
    dp_world: int,
    max_batches: int | None = None,
    max_tokens: int | None = None,
) -> ValBatches | TokenBudgetBatches:
    """Deterministic validation batches (dicts like the train loader's) for one rank.

    ``max_tokens``: exactly that many target tokens, whatever the world size
    (:mod:`trainer.data.val_budget`); otherwise at most ``max_batches`` batches per rank.
    """
    windows = (
        bundle_or_windows.val_windows
        if isinstance(bundle_or_windows, DataBundle)
        else bundle_or_windows
    )
    if max_tokens:
        return TokenBudgetBatches(windows, local_batch_size, dp_rank, dp_world, max_tokens)
    return ValBatches(windows, local_batch_size, dp_rank, dp_world, max_batches)
