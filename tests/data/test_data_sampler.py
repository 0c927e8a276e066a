"""Distributed sampler: disjoint equal shards, determinism, epochs, state round trip."""

from __future__ import annotations

import itertools

import pytest

from trainer.data.sampler import DistributedWindowSampler


def take(sampler: DistributedWindowSampler, k: int) -> list[int]:
    return list(itertools.islice(iter(sampler), k))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_disjoint_equal(world: int) -> None:
    n = 103
    shards = [take(DistributedWindowSampler(n, r, world, seed=5), n // world) for r in range(world)]
    assert all(len(s) == n // world for s in shards)
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat) == (n // world) * world
    assert all(0 <= i < n for i in flat)


def test_deterministic_and_epochs_differ() -> None:
    a = take(DistributedWindowSampler(50, seed=3), 100)
    b = take(DistributedWindowSampler(50, seed=3), 100)
    assert a == b
    assert sorted(a[:50]) == sorted(a[50:]) == list(range(50))
    assert a[:50] != a[50:]
    assert a[:50] != take(DistributedWindowSampler(50, seed=4), 50)


def test_state_round_trip_across_epoch() -> None:
    s = DistributedWindowSampler(20, 1, 2, seed=7)
    it = iter(s)
    first = [next(it) for _ in range(13)]  # one epoch is 10 per rank
    state = s.state_dict()
    assert (state["epoch"], state["index"]) == (1, 3)
    rest = [next(it) for _ in range(15)]
    fresh = DistributedWindowSampler(20, 1, 2, seed=7)
    fresh.load_state_dict(state)
    assert take(fresh, 15) == rest
    assert first[:10] == take(DistributedWindowSampler(20, 1, 2, seed=7), 10)
    other_rank = DistributedWindowSampler(20, 0, 2, seed=7)
    other_rank.load_state_dict(state)  # ranks advance in lockstep: the state is rank-free
    assert take(other_rank, 15) == take(DistributedWindowSampler(20, 0, 2, seed=7), 28)[13:]


def test_single_pass_repeats() -> None:
    s = DistributedWindowSampler(10, 1, 3, shuffle=False, infinite=False)
    assert list(s) == [1, 4, 7]
    assert list(s) == [1, 4, 7]
    assert len(s) == 3


def test_errors() -> None:
    with pytest.raises(ValueError, match="dp_rank"):
        DistributedWindowSampler(10, 2, 2)
    with pytest.raises(ValueError, match="3 windows"):
        DistributedWindowSampler(3, 0, 4)
    s = DistributedWindowSampler(10, seed=1)
    with pytest.raises(ValueError, match="'seed'"):
        s.load_state_dict(DistributedWindowSampler(10, seed=2).state_dict())
    with pytest.raises(ValueError, match="'n'"):
        s.load_state_dict(DistributedWindowSampler(11, seed=1).state_dict())
    with pytest.raises(ValueError, match="missing key 'epoch'"):
        s.load_state_dict({})
