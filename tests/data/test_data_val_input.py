"""prepare_data.py --val-input: exactly those documents form the validation split."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.data.test_data_prepare import make_docs, stream

EOS = 256  # the byte tokenizer's


def _expected(docs: list[str]) -> list[int]:
    """The byte tokenizer's stream of ``docs``, written here: UTF-8 bytes, EOS after each."""
    return [t for d in docs for t in (*d.encode("utf-8"), EOS)]


def _write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def test_val_input_documents_are_the_validation_split(tmp_path, prepare_data_cli: ModuleType):
    train_docs, val_docs = make_docs(20, seed=1), make_docs(4, seed=2)
    train_file = _write_jsonl(tmp_path / "train.jsonl", train_docs)
    val_file = _write_jsonl(tmp_path / "val.jsonl", val_docs)
    out = tmp_path / "shards"
    meta = prepare_data_cli.main(
        ["--input", str(train_file), "--val-input", str(val_file), "--output", str(out),
         "--val-fraction", "0", "--shard-tokens", "500"]
    )  # fmt: skip
    assert meta.splits["val"].n_documents == len(val_docs)
    assert meta.splits["train"].n_documents == len(train_docs)
    assert stream(out, "val") == _expected(val_docs)
    assert stream(out, "train") == _expected(train_docs)
    assert json.loads((out / "meta.json").read_text())["extra"]["val_inputs"] == [str(val_file)]


def test_val_fraction_defaults_to_zero_with_val_input(tmp_path, prepare_data_cli: ModuleType):
    train_file = _write_jsonl(tmp_path / "train.jsonl", make_docs(30, seed=3))
    val_docs = make_docs(2, seed=4)
    val_file = _write_jsonl(tmp_path / "val.jsonl", val_docs)
    out = tmp_path / "shards"
    prepare_data_cli.main(
        ["--input", str(train_file), "--val-input", str(val_file), "--output", str(out)]
    )
    assert stream(out, "val") == _expected(val_docs)


def test_val_fraction_and_val_input_together_is_an_error(tmp_path, prepare_data_cli, capsys):
    train_file = _write_jsonl(tmp_path / "train.jsonl", make_docs(3))
    with pytest.raises(SystemExit) as exc:
        prepare_data_cli.main(
            ["--input", str(train_file), "--val-input", str(train_file), "--output",
             str(tmp_path / "o"), "--val-fraction", "0.1"]
        )  # fmt: skip
    assert exc.value.code == 2
    assert "--val-fraction 0.1 with --val-input" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
