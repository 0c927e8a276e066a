"""scripts/prepare_data.py end to end on small files, then build_data on the result."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from trainer.data.loader import build_data
from trainer.data.shards import open_split, read_meta
from trainer.data.sources import expand_inputs
from trainer.data.tokenizer import build_tokenizer
from trainer.errors import DataError

WORDS = ["the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(30, 120)))) + f" (doc {i}).\n"
        for i in range(n)
    ]


def stream(folder: Path, split: str) -> list[int]:
    meta = read_meta(folder)
    return [t for a in open_split(folder, meta, split) for t in a.tolist()]


def test_txt_files(tmp_path: Path, prepare_data_cli: ModuleType, capsys) -> None:
    docs = make_docs(30)
    src = tmp_path / "txt"
    src.mkdir()
    for i, d in enumerate(docs):
        (src / f"{i:02d}.txt").write_text(d)
    out = tmp_path / "shards"
    meta = prepare_data_cli.main(
        [
            "--input",
            str(src / "*.txt"),
            "--output",
            str(out),
            "--val-fraction",
            "0.2",
            "--shard-tokens",
            "1000",
        ]
    )
    assert "documents" in capsys.readouterr().out
    train, val = meta.splits["train"], meta.splits["val"]
    assert train.n_documents + val.n_documents == 30 and val.n_documents > 0
    assert len(train.files) > 1
    total = sum(len(d.encode()) + 1 for d in docs)
    assert train.n_tokens + val.n_tokens == total
    # the documents come back whole, each followed by EOS, split by document
    text = bytes(t for t in stream(out, "train") + stream(out, "val") if t != 256).decode()
    assert sorted(text.split("\n")[:-1]) == sorted(d[:-1] for d in docs)
    assert stream(out, "train").count(256) == train.n_documents
    # deterministic
    again = prepare_data_cli.main(
        [
            "--input",
            str(src),
            "--output",
            str(tmp_path / "again"),
            "--val-fraction",
            "0.2",
            "--shard-tokens",
            "1000",
        ]
    )
    assert again.splits["val"].n_tokens == val.n_tokens
    assert stream(tmp_path / "again", "val") == stream(out, "val")

    bundle = build_data(
        str(out), "byte", seq_len=16, local_batch_size=4, dp_rank=0, dp_world=1, seed=0
    )
    batch = next(iter(bundle.train))
    assert batch["input"].shape == (4, 16)
    assert len(bundle.val_windows) > 0


def test_jsonl_and_errors(tmp_path: Path, prepare_data_cli: ModuleType) -> None:
    docs = make_docs(12, seed=1)
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for d in docs:
            f.write(json.dumps({"body": d, "id": 1}) + "\n")
    out = tmp_path / "shards"
    meta = prepare_data_cli.main(
        [
            "--input",
            str(path),
            "--output",
            str(out),
            "--text-field",
            "body",
            "--val-fraction",
            "0.01",
        ]
    )
    assert meta.splits["val"].n_documents == 1  # never empty when a fraction is asked for
    assert meta.splits["train"].n_documents == 11
    with pytest.raises(ValueError, match=r"docs.jsonl.gz:1: no key 'text'"):
        prepare_data_cli.main(["--input", str(path), "--output", str(tmp_path / "x")])
    with pytest.raises(DataError, match="already holds a shard folder; pass --overwrite"):
        prepare_data_cli.main(["--input", str(path), "--output", str(out), "--text-field", "body"])
    with pytest.raises(DataError, match="missing"):
        prepare_data_cli.main(
            ["--input", str(tmp_path / "missing*.jsonl"), "--output", str(out) + "2"]
        )


def test_parquet(tmp_path: Path, prepare_data_cli: ModuleType) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = make_docs(10, seed=2)
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet")
    out = tmp_path / "shards"
    meta = prepare_data_cli.main(
        [
            "--input",
            str(tmp_path / "a.parquet"),
            "--output",
            str(out),
            "--val-fraction",
            "0.3",
            "--seed",
            "1",
        ]
    )
    assert meta.splits["train"].n_documents + meta.splits["val"].n_documents == 10
    with pytest.raises(ValueError, match="no column 'content'"):
        prepare_data_cli.main(
            [
                "--input",
                str(tmp_path / "a.parquet"),
                "--output",
                str(tmp_path / "y"),
                "--text-field",
                "content",
            ]
        )


def test_hf_bpe_through_prepare(tmp_path: Path, prepare_data_cli: ModuleType, train_bpe) -> None:
    docs = make_docs(40, seed=3)
    tok_path = train_bpe(tmp_path / "tokenizer.json", docs, vocab_size=350)
    tok = build_tokenizer(str(tok_path))
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "shards"
    meta = prepare_data_cli.main(
        [
            "--input",
            str(path),
            "--output",
            str(out),
            "--tokenizer",
            str(tok_path),
            "--val-fraction",
            "0.1",
        ]
    )
    assert meta.tokenizer == tok.name and meta.vocab_size == tok.vocab_size
    ids = stream(out, "train") + stream(out, "val")
    assert len(ids) < sum(len(d) for d in docs)  # BPE compresses
    # split the stream at EOS and decode: every document round-trips exactly
    decoded, current = [], []
    for t in ids:
        if t == tok.eos_id:
            decoded.append(tok.decode(current))
            current = []
        else:
            current.append(t)
    assert sorted(decoded) == sorted(docs)

    bundle = build_data(str(out), str(tok_path), 8, 2, 0, 1, seed=0)
    assert bundle.tokenizer_name == tok.name and bundle.vocab_size == tok.vocab_size
    assert int(next(iter(bundle.train))["input"].max()) < tok.vocab_size
    with pytest.raises(ValueError, match="tokenizer"):
        build_data(str(out), "byte", 8, 2, 0, 1, seed=0)


def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.txt", "a.jsonl", "sub/c.txt", "notes.md"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.jsonl", "b.txt", "c.txt"]
    assert [p.name for p in expand_inputs([str(tmp_path / "**/*.txt")])] == ["b.txt", "c.txt"]
    with pytest.raises(ValueError, match="notes.md"):
        expand_inputs([str(tmp_path / "notes.md")])
