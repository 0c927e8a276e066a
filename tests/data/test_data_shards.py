"""Shard folders: write/read round trip and clear errors on damaged folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.data.shards import ShardWriter, dtype_for_vocab, open_split, read_meta
from trainer.errors import DataError


def write_folder(folder: Path, vocab_size: int = 257, shard_tokens: int = 10) -> list[list[int]]:
    docs = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12], [13, 14]]
    with ShardWriter(folder, "byte", vocab_size, 256, shard_tokens=shard_tokens) as w:
        for d in docs[:3]:
            w.add_document("train", d)
        w.add_document("val", docs[3])
    return docs


def test_round_trip(tmp_path: Path) -> None:
    docs = write_folder(tmp_path)
    meta = read_meta(tmp_path)
    assert meta.tokenizer == "byte" and meta.dtype == "uint16" and meta.eos_id == 256
    train = meta.splits["train"]
    assert (train.n_documents, train.n_tokens) == (3, 15)
    assert train.files == ["train_000.bin", "train_001.bin"] and train.file_tokens == [10, 5]
    arrays = open_split(tmp_path, meta, "train")
    assert all(isinstance(a, np.memmap) and a.dtype == np.uint16 for a in arrays)
    expected = [t for d in docs[:3] for t in (*d, 256)]
    assert np.concatenate(arrays).tolist() == expected
    assert np.concatenate(open_split(tmp_path, meta, "val")).tolist() == [13, 14, 256]


def test_dtype_for_vocab() -> None:
    assert dtype_for_vocab(65535) == np.uint16
    assert dtype_for_vocab(65536) == np.uint32
    assert dtype_for_vocab(128256) == np.uint32


def test_uint32_shards(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "big", 100_000, 99_999) as w:
        w.add_document("train", [70_000, 5])
    meta = read_meta(tmp_path)
    assert meta.dtype == "uint32"
    assert open_split(tmp_path, meta, "train")[0].tolist() == [70_000, 5, 99_999]
    assert open_split(tmp_path, meta, "val") == []


def test_writer_rejects_bad_ids_and_existing_folder(tmp_path: Path) -> None:
    write_folder(tmp_path)
    with pytest.raises(FileExistsError, match="meta.json"):
        ShardWriter(tmp_path, "byte", 257, 256)
    w = ShardWriter(tmp_path, "byte", 257, 256, overwrite=True)
    with pytest.raises(ValueError, match="outside"):
        w.add_document("train", [300])
    with pytest.raises(ValueError, match="unknown split"):
        w.add_document("test", [1])


def test_missing_folder_and_meta(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        read_meta(tmp_path / "nowhere")
    with pytest.raises(DataError, match="meta.json"):
        read_meta(tmp_path)


def test_truncated_and_missing_shard(tmp_path: Path) -> None:
    write_folder(tmp_path)
    meta = read_meta(tmp_path)
    shard = tmp_path / "train_001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ValueError, match="train_001.bin.*truncated"):
        open_split(tmp_path, meta, "train")
    shard.unlink()
    with pytest.raises(DataError, match="train_001.bin"):
        open_split(tmp_path, meta, "train")


def edit_meta(folder: Path, **changes: object) -> None:
    path = folder / "meta.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_dtype_mismatch(tmp_path: Path) -> None:
    write_folder(tmp_path)
    edit_meta(tmp_path, dtype="uint32")
    with pytest.raises(ValueError, match="dtype mismatch"):
        read_meta(tmp_path)
    edit_meta(tmp_path, dtype="float32")
    with pytest.raises(ValueError, match="'dtype'"):
        read_meta(tmp_path)


def test_bad_meta_keys(tmp_path: Path) -> None:
    write_folder(tmp_path)
    raw = json.loads((tmp_path / "meta.json").read_text())
    del raw["vocab_size"]
    (tmp_path / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="meta.json: missing key 'vocab_size'"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        read_meta(tmp_path)
    write_folder(tmp_path / "v2")
    edit_meta(tmp_path / "v2", format_version=2)
    with pytest.raises(ValueError, match="format_version"):
        read_meta(tmp_path / "v2")
