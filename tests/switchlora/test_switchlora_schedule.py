"""Switch schedule and option validation."""

import numpy as np
import pytest

from switchlora import SwitchLoRAOptions, schedule

STEPS = [0, 1000, 2000, 4000, 8000, 12000, 20000]
INTERVALS = [40, 54, 73, 133, 445, 1482, 16466]
VECTORS = [6.40, 4.74, 3.50, 1.92, 0.58, 0.17, 0.016]


def test_spec_table():
    for t, want_interval, want_vectors in zip(STEPS, INTERVALS, VECTORS):
        got = schedule.interval(t, 40, 0.1, 40_000)
        assert round(got) == want_interval
        vectors = schedule.expected_switches(256, got)
        assert vectors == pytest.approx(want_vectors, abs=0.006 if want_vectors > 0.1 else 5e-4)


def test_fixed_interval_and_floor():
    assert schedule.interval(12345, 40, 0.1, 40_000, fixed=True) == 40
    assert schedule.interval(10**9, 40, 0.1, 1000) == pytest.approx(40 / schedule.MIN_RATE)


def test_stochastic_round_mean_and_draw_count():
    rng = np.random.default_rng(0)
    draws = schedule.stochastic_round(2.3, 20_000, rng).tolist()
    assert set(draws) == {2, 3}
    assert np.mean(draws) == pytest.approx(2.3, abs=0.02)
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    schedule.stochastic_round(4.0, 1, a)  # integer input still consumes one draw
    b.random()
    assert a.random() == b.random()


def test_max_slots_cap():
    assert schedule.max_slots(256, 40) == 7
    assert schedule.max_slots(8, 2) == 4
    assert schedule.max_slots(8, 1) == 4  # never more than r // 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("alpha", 0.0),
        ("target_modules", ()),
        ("interval0", 8.0),  # < 2 * freeze_steps (5)
        ("descent_ratio", 0.0),
        ("freeze_steps", -1),
        ("candidate_source", "disk"),
        ("pool_choice", "greedy"),
        ("init", "xavier"),
        ("seed", -2),
    ],
)
def test_options_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        SwitchLoRAOptions(**{field: value}).validate()


def test_options_defaults():
    opts = SwitchLoRAOptions()
    opts.validate()
    assert (opts.rank, opts.interval0, opts.descent_ratio, opts.freeze_steps) == (128, 40, 0.1, 5)
    assert opts.scale == pytest.approx(1 / 128)
    assert opts.candidate_source == "pool" and opts.pool_choice == "sequential"
    SwitchLoRAOptions(interval0=8.0, switching=False).validate()  # guard only when switching
