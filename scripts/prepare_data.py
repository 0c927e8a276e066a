"""Tokenize raw text into a shard folder for the trainer.

Inputs are .txt / .jsonl / .json / .parquet files (optionally .gz for text and JSON lines),
globs or folders, or a Hugging Face dataset (needs the optional `datasets` package)::

    python scripts/prepare_data.py --input 'corpus/**/*.jsonl' --output data/c4-byte
    python scripts/prepare_data.py --input books/ --tokenizer tok/tokenizer.json --output data/books
    python scripts/prepare_data.py --hf-dataset json --hf-data-files c4.json.gz --output data/c4

Then train with ``source=<output folder>`` and the same tokenizer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.data.prepare import prepare_shards  # noqa: E402
from trainer.data.shards import DEFAULT_SHARD_TOKENS, META_FILE, ShardMeta  # noqa: E402
from trainer.data.sources import expand_inputs, read_files, read_hf_dataset  # noqa: E402
from trainer.data.tokenizer import build_tokenizer  # noqa: E402
from trainer.errors import DataError, InputError  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("input (one of --input / --hf-dataset)")
    src.add_argument("--input", nargs="+", default=[], help="files, globs or folders")
    src.add_argument(
        "--hf-dataset", help="Hugging Face dataset name or builder (json, parquet, text)"
    )
    src.add_argument("--hf-config", default=None, help="dataset configuration name")
    src.add_argument(
        "--hf-data-files", nargs="+", default=None, help="data_files for local builders"
    )
    src.add_argument("--hf-split", default="train", help="dataset split to read (default: train)")
    src.add_argument("--text-field", default="text", help="JSON key / column holding the text")
    src.add_argument(
        "--txt-lines", action="store_true", help="one document per non-empty line of .txt files"
    )
    src.add_argument("--max-documents", type=int, default=None, help="stop after this many")
    p.add_argument("--output", required=True, help="shard folder to create")
    p.add_argument("--tokenizer", default="byte", help="'byte', tokenizer.json or .model path")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of the input documents held out (default 0.01; 0 with --val-input)",
    )
    p.add_argument(
        "--val-input",
        nargs="+",
        default=[],
        metavar="FILES",
        help="files, globs or folders whose documents form the validation split (read like --input)",
    )
    p.add_argument(
        "--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val document split")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    args = p.parse_args(argv)
    if bool(args.input) == bool(args.hf_dataset):
        p.error("give exactly one of --input and --hf-dataset")
    if args.val_input and args.val_fraction:
        p.error(
            f"--val-fraction {args.val_fraction} with --val-input: the validation split comes "
            "from --val-input; pass --val-fraction 0 or leave it out"
        )
    if args.val_fraction is None:
        args.val_fraction = 0.0 if args.val_input else 0.01
    return args


def documents(args: argparse.Namespace) -> tuple[Iterator[str], dict]:
    """The document stream selected by the arguments, and a description for meta.json."""
    if args.hf_dataset:
        docs = read_hf_dataset(
            args.hf_dataset, args.hf_config, args.hf_split, args.text_field, args.hf_data_files
        )
        return docs, {"hf_dataset": args.hf_dataset, "hf_split": args.hf_split}
    files = expand_inputs(args.input)
    docs = read_files(files, field=args.text_field, one_per_line=args.txt_lines)
    return docs, {"inputs": [str(f) for f in files]}


def _limit(docs: Iterator[str], n: int | None) -> Iterator[str]:
    for i, doc in enumerate(docs):
        if n is not None and i >= n:
            return
        yield doc


def summary(meta: ShardMeta, output: str, seconds: float) -> str:
    lines = [
        f"wrote {output} in {seconds:.1f}s (tokenizer {meta.tokenizer}, "
        f"vocab {meta.vocab_size}, {meta.dtype})"
    ]
    for name, s in meta.splits.items():
        lines.append(
            f"  {name:5s} {s.n_documents:>10,} documents {s.n_tokens:>14,} tokens "
            f"{len(s.files):>4} shards"
        )
    return "\n".join(lines)


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty output folder unless ``--overwrite`` was given."""
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output} is a file, not a folder")
    if not overwrite and output.is_dir() and any(output.iterdir()):
        what = "a shard folder" if (output / META_FILE).exists() else "files"
        raise DataError(f"--output {output} already holds {what}; pass --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> ShardMeta:
    args = parse_args(argv)
    check_output(Path(args.output), args.overwrite)
    start = time.perf_counter()
    tok = build_tokenizer(args.tokenizer)
    docs, provenance = documents(args)
    extra = {"tokenizer_spec": args.tokenizer, **provenance}
    val_docs = None
    if args.val_input:
        val_files = expand_inputs(args.val_input)
        val_docs = read_files(val_files, field=args.text_field, one_per_line=args.txt_lines)
        extra["val_inputs"] = [str(f) for f in val_files]
    meta = prepare_shards(
        _limit(docs, args.max_documents),
        tok,
        args.output,
        val_fraction=args.val_fraction,
        shard_tokens=args.shard_tokens,
        seed=args.seed,
        overwrite=args.overwrite,
        extra=extra,
        val_documents=val_docs,
    )
    print(summary(meta, args.output, time.perf_counter() - start))
    return meta


def cli() -> int:
    """Run ``main``; a bad input is one line ``data error: ...`` and exit status 2."""
    try:
        main()
    except (InputError, OSError) as exc:
        print(f"{getattr(exc, 'kind', 'data')} error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
