"""Perplexity and bits per byte of a checkpoint or an exported folder on text files.

    python scripts/evaluate.py --model outputs/run/checkpoints/step-N --data val.txt more.jsonl
        shards/ [--seq-len 256] [--batch-size 8] [--device cpu|cuda] [--dtype fp32|bf16]
        [--output result.json]

One process, CPU or GPU. ``--model`` is a checkpoint folder or a folder written by
scripts/export.py; each ``--data`` entry is a text file (one document), a ``.jsonl`` file
(one document per line, field ``text``) or a shard folder (its validation split). Prints one
line per file; ``--output`` also writes every figure as JSON. Figures and windows are
defined in trainer/evaluation/scoring.py and trainer/evaluation/windows.py; they match
lm-evaluation-harness' ``loglikelihood_rolling`` metrics at ``max_length`` = ``--seq-len``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainer.errors import DataError, InputError
from trainer.evaluation.documents import Document, read_texts, shard_documents
from trainer.evaluation.models import DTYPES, ScoredModel, load_model
from trainer.evaluation.scoring import Score, score_documents


def documents_of(path: Path, model: ScoredModel) -> list[Document]:
    """The documents of one ``--data`` entry, tokenized as the model was trained."""
    if path.is_dir():
        if model.tokenizer_name is None:
            raise DataError(
                f"model has no record of its training tokenizer, so shard folder {path} cannot "
                "be checked against it; evaluate a checkpoint or a text file instead"
            )
        return shard_documents(path, model.tokenizer_name, model.decode)
    return [Document(model.encode(text), text) for text in read_texts(path)]


def evaluate_files(
    model_path: str | Path,
    files: Sequence[str | Path],
    seq_len: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "fp32",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every file with one model; returns the JSON result (one entry per file)."""
    if seq_len is not None and seq_len < 1:
        raise InputError(f"--seq-len must be >= 1, got {seq_len}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(Path(model_path), target, dtype, seq_len or 0)
    context = seq_len or model.max_seq_len
    results = []
    for file in files:
        start = time.perf_counter()
        score: Score = score_documents(
            model, documents_of(Path(file), model), context, batch_size, target
        )
        log(
            f"{file}: {score.documents} documents, {score.tokens} tokens, {score.bytes} bytes | "
            f"loss {score.loss:.4f} nats/token | ppl {score.perplexity:.3f} | "
            f"bits/byte {score.bits_per_byte:.4f} | {time.perf_counter() - start:.1f} s"
        )
        results.append({"path": str(file), **score.to_json()})
    return {
        "model": str(model_path),
        "tokenizer": model.tokenizer_name,
        "seq_len": context,
        "device": str(target),
        "dtype": dtype,
        "files": results,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/evaluate.py",
        description="Perplexity and bits per byte of a checkpoint or an export on text files.",
    )
    parser.add_argument("--model", required=True, help="a checkpoint or an exported folder")
    parser.add_argument(
        "--data", required=True, nargs="+", help="text files, .jsonl files or shard folders"
    )
    parser.add_argument(
        "--seq-len", type=int, default=None, help="context length (default: the trained one)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the process exit status (2 for unusable input)."""
    args = build_parser().parse_args(argv)
    try:
        result = evaluate_files(
            args.model, args.data, args.seq_len, args.batch_size, args.device, args.dtype
        )
    except InputError as exc:
        print(f"{exc.kind} error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return 0
