"""Pool choice rules and the seeded source."""

import numpy as np
import torch

from switchlora.candidates import (
    PoolFactor,
    random_choice,
    seeded_candidates,
    sequential_choice,
)
from switchlora.init import initial_pool_indices


def _factor(c: int, r: int, width: int = 3) -> PoolFactor:
    use_a, _ = initial_pool_indices(c, r)
    rows = torch.arange(c * width, dtype=torch.float32).reshape(c, width)
    return PoolFactor(rows, use_a.copy(), 0)


def test_sequential_walk_keeps_a_contiguous_window_without_duplicates():
    c, r = 10, 8
    factor = _factor(c, r)
    use, nexts = factor.use[None, :], np.zeros(1, np.int64)
    pointer = 0
    for step in range(25):
        k = 1 + step % 4  # also k > C - r: entries released this step come straight back
        positions = (pointer + np.arange(k))[None, :] % r
        pointer = (pointer + k) % r
        old, new, nexts = sequential_choice(use, nexts, positions, np.ones((1, k), bool), c)
        old, new, nxt = old[0], new[0], int(nexts[0])
        assert len(set(factor.use.tolist())) == r  # every position holds a distinct entry
        # in-use set = r consecutive entries of the ring ending just before `next`
        window = {(nxt - 1 - i) % c for i in range(r)}
        assert set(factor.use.tolist()) == window
        assert list(new) == [(nxt - k + i) % c for i in range(k)]
        assert list(old) != list(new) or k == 0


def test_random_choice_draws_only_free_entries():
    c, r = 12, 8
    factor = _factor(c, r)
    rng = np.random.default_rng(1)
    own_slot_back = 0
    for step in range(200):
        positions = (step * 3 + np.arange(3)) % r
        others = np.delete(factor.use, positions)
        old, new = random_choice(factor, positions, rng)
        assert not set(new.tolist()) & set(others.tolist())
        assert len(set(factor.use.tolist())) == r
        own_slot_back += int(np.sum(old == new))
    assert own_slot_back > 0  # released entries are candidates too


def test_sequential_choice_of_many_pools_matches_one_pool_at_a_time():
    c, r, g = 10, 8, 3
    rng = np.random.default_rng(1)
    singles = [_factor(c, r) for _ in range(g)]
    use = np.stack([f.use.copy() for f in singles])
    nexts = np.zeros(g, np.int64)
    pointers = np.zeros(g, np.int64)
    for _ in range(30):
        k = rng.integers(0, 5, size=g)  # also k > C - r, and layers that do not switch
        width = int(k.max())
        positions = (pointers[:, None] + np.arange(width)) % r
        active = np.arange(width)[None, :] < k[:, None]
        old, new, nexts = sequential_choice(use, nexts, positions, active, c)
        for row, factor in enumerate(singles):
            kr = k[row]
            one = factor.use[None, :]
            want_old, want_new, nxt = sequential_choice(
                one,
                np.array([factor.next]),
                positions[row : row + 1, :kr],
                np.ones((1, kr), bool),
                c,
            )
            factor.next = int(nxt[0])
            assert old[row, :kr].tolist() == want_old[0].tolist()
            assert new[row, :kr].tolist() == want_new[0].tolist()
            assert (old[row, kr:] == -1).all()
            assert use[row].tolist() == factor.use.tolist() and nexts[row] == factor.next
        pointers = (pointers + k) % r


def test_seeded_candidates_are_keyed_and_bounded():
    a = seeded_candidates(0, 3, 0, 17, 4, 50, 0.5)
    assert torch.equal(a, seeded_candidates(0, 3, 0, 17, 4, 50, 0.5))
    for other in [(1, 3, 0, 17), (0, 4, 0, 17), (0, 3, 1, 17), (0, 3, 0, 18)]:
        assert not torch.equal(a, seeded_candidates(*other, 4, 50, 0.5))
    assert a.abs().max() <= 0.5 and a.shape == (4, 50)
    assert torch.equal(seeded_candidates(0, 3, 0, 17, 2, 50, 0.5), a[:2])  # prefix-stable
