"""Shard folders are checked when opened: each damage is one DataError naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.data.loader import build_data
from trainer.data.shards import ShardWriter, open_split, read_meta
from trainer.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def write_shards(folder: Path, n_train_docs: int = 40) -> Path:
    """A byte-tokenizer folder (vocab 257) with several train shard files of 200 tokens."""
    rng = np.random.default_rng(1)
    with ShardWriter(folder, "byte", 257, 256, shard_tokens=200) as w:
        for _ in range(n_train_docs):
            w.add_document("train", rng.integers(0, 256, size=30))
        for _ in range(4):
            w.add_document("val", rng.integers(0, 256, size=30))
    return folder


def put_id(path: Path, offset: int, value: int) -> None:
    """Overwrite the uint16 token at ``offset`` of a shard file (its size unchanged)."""
    data = np.fromfile(path, dtype="<u2")
    data[offset] = value
    data.tofile(path)


@pytest.mark.parametrize("bad_id", [257, 300, 65535])
def test_id_outside_vocab_names_file_and_offset(tmp_path: Path, bad_id: int) -> None:
    """257 and 300 fit the model's padded embedding (320) but not the tokenizer's 257 ids."""
    folder = write_shards(tmp_path / "s")
    put_id(folder / "train_002.bin", 123, bad_id)
    with pytest.raises(DataError) as err:
        open_split(folder, read_meta(folder), "train")
    message = str(err.value)
    assert f"train_002.bin: token id {bad_id} at token offset 123" in message
    assert "[0, 257)" in message and "\n" not in message


def test_last_id_of_vocab_is_accepted(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "s")
    put_id(folder / "train_001.bin", 0, 256)
    arrays = open_split(folder, read_meta(folder), "train")
    assert int(arrays[1][0]) == 256


def test_scan_reports_first_bad_offset_across_chunks(tmp_path: Path, monkeypatch) -> None:
    """The chunked scan reports the first bad id, also when it lies in a later chunk."""
    import trainer.data.shards as shards

    monkeypatch.setattr(shards, "SCAN_CHUNK_TOKENS", 7)
    folder = write_shards(tmp_path / "s")
    put_id(folder / "train_000.bin", 150, 400)
    put_id(folder / "train_000.bin", 190, 500)
    with pytest.raises(DataError, match="token id 400 at token offset 150 "):
        open_split(folder, read_meta(folder), "train")


def test_random_bytes_of_the_same_size_are_refused(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "s")
    shard = folder / "train_001.bin"
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))
    with pytest.raises(DataError, match=r"train_001\.bin: token id \d+ at token offset"):
        open_split(folder, read_meta(folder), "train")


def test_meta_entries_are_checked(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "s")
    raw = json.loads((folder / "meta.json").read_text())
    cases = [
        ({"eos_id": 300}, "key 'eos_id' is 300, outside [0, vocab_size 257)"),
        ({"splits": {**raw["splits"], "val": [1]}}, "[splits.val]: expected a JSON object"),
    ]
    bad_files = json.loads(json.dumps(raw["splits"]))
    bad_files["train"]["files"][0] = "../elsewhere.bin"
    cases.append(({"splits": bad_files}, "'files' holds '../elsewhere.bin'"))
    for change, fragment in cases:
        (folder / "meta.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(DataError) as err:
            read_meta(folder)
        assert fragment in str(err.value)
    (folder / "meta.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="meta.json: not UTF-8"):
        read_meta(folder)


def test_embedded_corpus_still_loads() -> None:
    bundle = build_data("embedded:shakespeare", "byte", 32, 2, 0, 1, seed=0)
    batch = next(iter(bundle.train))
    assert batch["input"].shape == (2, 32) and int(batch["input"].max()) < bundle.vocab_size


def damage_missing_meta(folder: Path) -> None:
    (folder / "meta.json").unlink()


def damage_random_bytes(folder: Path) -> None:
    shard = folder / "train_001.bin"
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))


def damage_truncated(folder: Path) -> None:
    shard = folder / "train_003.bin"
    shard.write_bytes(shard.read_bytes()[:-2])


def damage_dtype(folder: Path) -> None:
    raw = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**raw, "dtype": "int8"}))


def damage_padded_id(folder: Path) -> None:
    put_id(folder / "train_002.bin", 17, 300)  # inside the padded embedding of 320 rows


@pytest.mark.parametrize(
    "damage, last_line",
    [
        (damage_missing_meta, "meta.json not found: {f} is not a shard folder"),
        (damage_random_bytes, "{f}/train_001.bin: token id "),
        (damage_truncated, "{f}/train_003.bin: 398 bytes, expected 400"),
        (damage_dtype, "{f}/meta.json: key 'dtype' is 'int8', expected 'uint16' or 'uint32'"),
        (damage_padded_id, "{f}/train_002.bin: token id 300 at token offset 17 is outside"),
    ],
)
def test_train_script_reports_damaged_shards_in_one_line(tmp_path: Path, damage, last_line) -> None:
    folder = write_shards(tmp_path / "shards")
    damage(folder)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/train.py"),
            "--config",
            str(ROOT / "configs/tiny_full.toml"),
            "--model.flavor",
            "debug",
            "--data.source",
            str(folder),
            "--training.seq_len",
            "16",
            "--training.global_batch_size",
            "2",
            "--training.steps",
            "1",
            "--job.dump_folder",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("data error: "), proc.stderr
    assert last_line.format(f=folder) in lines[-1], proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
    assert sorted(p.name for p in folder.iterdir())  # the damaged folder is left as it was
