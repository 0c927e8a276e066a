"""The state a checkpoint holds, as one nested dict for torch.distributed.checkpoint.

    model          get_model_state_dict: parameter FQN -> DTensor shard (resharded on load)
    optimizer      get_optimizer_state_dict: moments as DTensors, step counts as plain
                   tensors (scalars, or per-vector [r, 1] / [1, r], identical on every rank)
    lr_scheduler   the LR scheduler's state_dict
    method.<name>  state_dict() of each object in MethodRuntime.stateful (the switch
                   controller: pointers, freeze counters, generator states, DTensor pools)
    train          step and the run's progress record (losses so far), as JSON text
    per_rank.rank_<r>  that rank's data loader state and RNG states, as JSON text

Plain tensors and Python values are treated by DCP as replicated: rank 0's copy is written.
Everything per rank is therefore under a key of its own. The project's own entries are JSON
text (trainer.checkpoint.plain_data), so reading them back builds data, never objects.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.plain_data import from_text, to_text
from trainer.checkpoint.rng import capture_rng


class TrainingParts(Protocol):
    """What the checkpoint reads from and writes into (``trainer.train.Trainer`` fits)."""

    model: nn.Module
    model_args: Any
    """The resolved ModelArgs (recorded in the manifest)."""
    method: Any
    """Has ``optimizer`` and ``stateful`` (name -> object with state_dict/load_state_dict)."""
    scheduler: Any
    data: Any
    """Has ``train`` (a StatefulDataLoader), ``eos_id`` and ``tokenizer_name``."""
    step: int


def rank_key(rank: int) -> str:
    """Key of one rank's entry under ``per_rank``."""
    return f"rank_{rank}"


def state_to_save(
    parts: TrainingParts, rank: int, world: int, device: torch.device, progress: dict[str, Any]
) -> dict[str, Any]:
    """The full state of this rank, tensors aliasing the live ones (DCP copies or stages them)."""
    per_rank = {
        "world_size": world,
        "rank": rank,
        "dataloader": parts.data.train.state_dict(),
        "rng": capture_rng(device),
    }
    return {
        "model": get_model_state_dict(parts.model),
        "optimizer": get_optimizer_state_dict(parts.model, parts.method.optimizer),
        "lr_scheduler": parts.scheduler.state_dict(),
        "method": {name: obj.state_dict() for name, obj in parts.method.stateful.items()},
        "train": {"step": parts.step, "progress": to_text(progress)},
        "per_rank": {rank_key(rank): to_text(per_rank)},
    }


def state_to_load(parts: TrainingParts, source_rank: int) -> dict[str, Any]:
    """A template of the same structure for ``dcp.load`` to fill in place.

    ``source_rank`` selects whose per-rank entry to read (this rank's, or rank 0's when the
    checkpoint was written by fewer processes).
    """
    return {
        "model": get_model_state_dict(parts.model),
        "optimizer": get_optimizer_state_dict(parts.model, parts.method.optimizer),
        "lr_scheduler": parts.scheduler.state_dict(),
        "method": {name: obj.state_dict() for name, obj in parts.method.stateful.items()},
        "train": {"step": 0, "progress": ""},
        "per_rank": {rank_key(source_rank): ""},
    }


def apply_loaded(parts: TrainingParts, state: dict[str, Any]) -> None:
    """Push a filled template into the model, optimizer, scheduler and method objects."""
    set_model_state_dict(parts.model, state["model"])
    set_optimizer_state_dict(parts.model, parts.method.optimizer, state["optimizer"])
    parts.scheduler.load_state_dict(state["lr_scheduler"])
    for name, obj in parts.method.stateful.items():
        obj.load_state_dict(state["method"][name])
    parts.step = int(state["train"]["step"])


def unpack(text: Any, folder: Any, key: str) -> Any:
    """One of the project's JSON entries; a :class:`CheckpointError` naming it if unreadable."""
    try:
        return from_text(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {folder}: entry {key} is not the JSON record this code writes ({exc})"
        ) from None
