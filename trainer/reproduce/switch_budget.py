"""How often each adapter vector index switches over a run, from switchlora.schedule.

At 0-based step t a factor of rank r switches r / interval(t) vectors (stochastically
rounded), taken in turn around the ring of its r indices, so every index is switched once per
r switches of its factor: over T steps each index switches sum_t 1 / interval(t) times in
expectation. With interval(t) = interval0 / 0.3^((t+1) / (ratio T)) that is close to
ratio T (1 - 0.3^(1/ratio)) / (interval0 ln(1/0.3)), about 0.083 T / interval0 for ratio 0.1:
the paper's 40-step start switches each index once per 480 steps.
"""

from __future__ import annotations

from switchlora.schedule import interval


def switches_per_index(
    steps: int, interval0: float, descent_ratio: float, fixed: bool = False
) -> float:
    """Expected switches of each vector index in a run of ``steps`` optimizer steps."""
    return sum(1.0 / interval(t, interval0, descent_ratio, steps, fixed) for t in range(steps))


def steps_for_switches(
    min_switches: float, interval0: float, descent_ratio: float, multiple: int = 50
) -> int:
    """The fewest steps (a multiple of ``multiple``) in which every index switches at least
    ``min_switches`` times under the decaying schedule."""
    steps = multiple
    while switches_per_index(steps, interval0, descent_ratio) < min_switches:
        steps += multiple
    return steps
