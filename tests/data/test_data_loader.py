"""build_data / build_val_loader: batch layout, exact resume, validation batches, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trainer.data.loader import DataBundle, build_data, build_val_loader
from trainer.errors import DataError


def batches(loader, k: int) -> list[dict[str, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(k)]


def test_batch_layout(tiny_shards: Path) -> None:
    bundle = build_data(
        str(tiny_shards), "byte", seq_len=8, local_batch_size=3, dp_rank=0, dp_world=1, seed=0
    )
    assert isinstance(bundle, DataBundle)
    assert (bundle.vocab_size, bundle.eos_id, bundle.tokenizer_name) == (257, 256, "byte")
    (b,) = batches(bundle.train, 1)
    assert set(b) == {"input", "target"}
    assert b["input"].shape == b["target"].shape == (3, 8)
    assert b["input"].dtype == b["target"].dtype == torch.int64
    assert torch.equal(b["input"][:, 1:], b["target"][:, :-1])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("dp_world", [1, 2])
def test_resume_exact(tiny_shards: Path, num_workers: int, dp_world: int) -> None:
    """k batches, save, rebuild, load: the next batches equal the uninterrupted run's.

    The tiny folder has ~46 windows, so with batch 4 the run crosses epoch boundaries.
    """
    k, m = 7, 9
    for rank in range(dp_world):

        def make(rank: int = rank):
            return build_data(
                str(tiny_shards), "byte", 8, 4, rank, dp_world, seed=11, num_workers=num_workers
            ).train

        reference = batches(make(), k + m)
        first = make()
        seen = batches(first, k)
        state = first.state_dict()
        del first
        resumed = make()
        resumed.load_state_dict(state)
        after = batches(resumed, m)
        for got, want in zip(seen + after, reference):
            assert torch.equal(got["input"], want["input"])
            assert torch.equal(got["target"], want["target"])


def test_resume_through_torch_save(tiny_shards: Path, tmp_path: Path) -> None:
    def make():
        return build_data(str(tiny_shards), "byte", 8, 2, 0, 1, seed=3).train

    loader = make()
    batches(loader, 5)
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert torch.equal(batches(resumed, 1)[0]["input"], batches(make(), 6)[5]["input"])


def test_ranks_see_different_batches(tiny_shards: Path) -> None:
    a, b = (build_data(str(tiny_shards), "byte", 8, 4, r, 2, seed=0).train for r in (0, 1))
    assert not torch.equal(batches(a, 1)[0]["input"], batches(b, 1)[0]["input"])


def test_val_loader_deterministic_and_equal_across_ranks(tiny_shards: Path) -> None:
    bundle = build_data(str(tiny_shards), "byte", 8, 2, 0, 1, seed=0)
    n = len(bundle.val_windows)
    assert n == 11  # 5 documents of 21 tokens = 105 tokens in one val shard
    loaders = [build_val_loader(bundle, 2, r, 2, max_batches=None) for r in (0, 1)]
    assert [len(v) for v in loaders] == [3, 3]  # 5 windows each, batches of 2, 2, 1
    first = [b["input"] for b in loaders[0]]
    again = [b["input"] for b in loaders[0]]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert [x.shape[0] for x in first] == [2, 2, 1]
    rows = {tuple(r.tolist()) for v in loaders for b in v for r in b["input"]}
    assert len(rows) == 10  # ranks are disjoint
    capped = build_val_loader(bundle.val_windows, 2, 0, 2, max_batches=2)
    assert len(list(capped)) == len(capped) == 2


def test_missing_source_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.*prepare_data\.py"):
        build_data(str(tmp_path / "nope"), "byte", 8, 2, 0, 1, seed=0)


def test_tokenizer_mismatch(tiny_shards: Path, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    shutil.copytree(tiny_shards, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["tokenizer"] = "hf:0123456789abcdef"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hf:0123456789abcdef.*'byte'"):
        build_data(str(folder), "byte", 8, 2, 0, 1, seed=0)


def test_too_few_windows(tiny_shards: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        build_data(str(tiny_shards), "byte", 8, 40, 0, 2, seed=0)
