"""Options of the SwitchLoRA method (plain dataclass, no config-file knowledge)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

CANDIDATE_SOURCES = ("pool", "seeded")
POOL_CHOICES = ("sequential", "random")
INIT_KINDS = ("switchlora", "lora")


@dataclass
class SwitchLoRAOptions:
    """Everything that defines a SwitchLoRA (or plain LoRA) adapter run."""

    rank: int = 128
    """LoRA rank r: A is [r, n], B is [m, r]."""

    alpha: float = 1.0
    """Scaling numerator: the adapter output is multiplied by s = alpha / r."""

    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Attribute names of the nn.Linear modules that get an adapter (exact match)."""

    switching: bool = True
    """False gives plain LoRA: same layer and init, no switching, no candidate pools."""

    interval0: float = 40.0
    """Initial switch interval (steps between two switches of one vector index)."""

    descent_ratio: float = 0.1
    """The switch frequency falls to 0.3x its start value at step descent_ratio * total_steps."""

    fixed_interval: bool = False
    """Keep the interval at interval0 for the whole run (no exponential decay)."""

    freeze_steps: int = 5
    """N: steps a counterpart stays frozen after a switch; 0 resets its state without freezing."""

    candidate_source: str = "pool"
    """"pool": stored bank of min(m, n) vectors per factor per layer; "seeded": drawn on the fly."""

    pool_write_back: bool = True
    """Pool only: copy the trained outgoing vector back into its pool slot."""

    pool_choice: str = "sequential"
    """Pool only: "sequential" ring walk or "random" draw among the entries not in use."""

    pool_offload_cpu: bool = False
    """Pool only: keep the pools in (pinned) CPU memory; only the rows a step needs move."""

    init: str = "switchlora"
    """"switchlora": the paper's uniform init of A, B and candidates; "lora": A kaiming, B = 0."""

    dropout: float = 0.0
    """Dropout on the adapter branch's input in training mode (ReLoRA uses 0.1); 0 = none."""

    seed: int = 0
    """Seed of every random decision (init, candidates, switch counts); rank independent."""

    @property
    def scale(self) -> float:
        """The adapter scaling s = alpha / r."""
        return self.alpha / self.rank

    def validate(self) -> None:
        """Raise ValueError naming the offending field when an option is invalid."""
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        if isinstance(self.target_modules, str) or not all(
            isinstance(name, str) and name for name in self.target_modules
        ):
            raise ValueError(
                f"target_modules must be a sequence of non-empty names, got {self.target_modules!r}"
            )
        if len(self.target_modules) == 0:
            raise ValueError("target_modules must not be empty")
        if not self.interval0 > 0:
            raise ValueError(f"interval0 must be > 0, got {self.interval0!r}")
        if not self.descent_ratio > 0:
            raise ValueError(f"descent_ratio must be > 0, got {self.descent_ratio!r}")
        if not isinstance(self.freeze_steps, int) or self.freeze_steps < 0:
            raise ValueError(f"freeze_steps must be an integer >= 0, got {self.freeze_steps!r}")
        if self.switching and self.interval0 < 2 * self.freeze_steps:
            raise ValueError(
                f"interval0 ({self.interval0}) must be >= 2 * freeze_steps "
                f"({2 * self.freeze_steps}): a vector would be switched while still frozen"
            )
        if self.candidate_source not in CANDIDATE_SOURCES:
            raise ValueError(
                f"candidate_source must be one of {CANDIDATE_SOURCES}, got {self.candidate_source!r}"
            )
        if self.pool_choice not in POOL_CHOICES:
            raise ValueError(f"pool_choice must be one of {POOL_CHOICES}, got {self.pool_choice!r}")
        if self.init not in INIT_KINDS:
            raise ValueError(f"init must be one of {INIT_KINDS}, got {self.init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
