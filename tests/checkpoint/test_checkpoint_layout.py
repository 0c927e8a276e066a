"""Folder rules (complete / partial / retention) and the data position at another world size."""

from __future__ import annotations

import pytest

from trainer.checkpoint import CheckpointError
from trainer.checkpoint.dataloader import remap_sampler_state, sampler_state_of
from trainer.checkpoint.layout import (
    complete_checkpoints,
    partial_folder,
    promote,
    prune,
    remove_unfinished,
    step_folder,
    unfinished_folders,
)
from trainer.data.sampler import DistributedWindowSampler


def fake_checkpoint(root, step, complete=True):
    folder = step_folder(root, step) if complete else partial_folder(root, step)
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_bytes(b"x")
    if complete:
        (folder / ".metadata").write_bytes(b"m")
        (folder / "manifest.json").write_text("{}")
    return folder


def test_only_complete_folders_count(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 30, complete=False)
    no_manifest = fake_checkpoint(tmp_path, 20)
    (no_manifest / "manifest.json").unlink()
    (tmp_path / "step-40.deleting").mkdir()
    (tmp_path / "notes").mkdir()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [10]
    assert [p.name for _, p in unfinished_folders(tmp_path)] == [
        "step-20",
        "step-30.partial",
        "step-40.deleting",
    ]
    assert complete_checkpoints(tmp_path / "missing") == []


def test_promote_prune_and_cleanup_never_touch_newer_or_complete(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step)
    partial = fake_checkpoint(tmp_path, 40, complete=False)
    fake_checkpoint(tmp_path, 50, complete=False)
    (partial / ".metadata").write_bytes(b"m")
    (partial / "manifest.json").write_text("{}")
    promote(partial, step_folder(tmp_path, 40))
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [10, 20, 30, 40]
    assert prune(tmp_path, keep=1, newest=10) == []  # later steps never count against 10
    removed = prune(tmp_path, keep=2, newest=40)
    assert [p.name for p in removed] == ["step-10", "step-20"]
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [30, 40]
    assert remove_unfinished(tmp_path, 45) == []
    assert [p.name for p in remove_unfinished(tmp_path, 50)] == ["step-50.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-30", "step-40"]


def test_promote_replaces_a_complete_folder_of_the_same_step(tmp_path):
    old = fake_checkpoint(tmp_path, 10)
    (old / "old").write_text("1")
    new = fake_checkpoint(tmp_path, 10, complete=False)
    (new / ".metadata").write_bytes(b"m")
    (new / "manifest.json").write_text("{}")
    promote(new, old)
    assert not (old / "old").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["step-10"]


def sampler_after(n, world, draws, rank=0):
    sampler = DistributedWindowSampler(n, dp_rank=rank, dp_world=world, seed=3)
    it = iter(sampler)
    for _ in range(draws):
        next(it)
    return sampler


def test_data_position_moves_exactly_to_another_world_size():
    n = 101
    two = [sampler_after(n, 2, 6, rank) for rank in range(2)]
    moved = remap_sampler_state(two[0].state_dict(), 2, 1, "ckpt")
    one = DistributedWindowSampler(n, dp_rank=0, dp_world=1, seed=3)
    one.load_state_dict(moved)
    # Continuing on 1 process draws what the 2 processes would have drawn next, together.
    nxt = [next(iter(s)) for s in two] + [next(iter(s)) for s in two]
    got = [next(iter(one)) for _ in range(4)]
    assert sorted(got) == sorted(nxt)
    wrapped = {
        "_snapshot": {"_main_snapshot": {"_sampler_iter_state": {"sampler_state": {"a": 1}}}}
    }
    assert sampler_state_of(wrapped) == {"a": 1}


def test_data_position_that_cannot_be_split_names_what_to_do():
    state = sampler_after(101, 1, 7).state_dict()
    with pytest.raises(CheckpointError, match=r"--nproc_per_node=1 .*initial_load_path"):
        remap_sampler_state(state, 1, 2, "ckpt")
