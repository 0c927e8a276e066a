"""Saving the per-rank training data loader state, and resuming it at another world size.

Each rank's ``StatefulDataLoader.state_dict()`` is saved under its own key. At the same world
size each rank loads its own state. At another world size the position is carried over
through the sampler (``trainer.data.sampler.DistributedWindowSampler``): rank ``r`` of ``W``
takes positions ``r, r + W, ...`` of one permutation per epoch, so after ``i`` draws per rank
the ranks together consumed the first ``g = i * W`` positions, and a world of ``W'`` ranks
continues exactly when ``W'`` divides ``g`` (always true within the first epoch, since the
global batch is a multiple of the world size). Otherwise the error says which process
counts can resume.
"""

from __future__ import annotations

from typing import Any

from trainer.checkpoint.errors import CheckpointError


def sampler_state_of(loader_state: dict[str, Any]) -> dict[str, Any] | None:
    """The sampler position inside a StatefulDataLoader state (with or without workers)."""
    for holder in (loader_state, loader_state.get("_snapshot", {}).get("_main_snapshot", {})):
        it_state = holder.get("_sampler_iter_state") if isinstance(holder, dict) else None
        if isinstance(it_state, dict) and isinstance(it_state.get("sampler_state"), dict):
            return it_state["sampler_state"]
    return None


def divisors(value: int) -> list[int]:
    """Positive divisors of ``value`` in increasing order."""
    return [d for d in range(1, value + 1) if value % d == 0]


def remap_sampler_state(
    saved: dict[str, Any], saved_world: int, world: int, folder: str
) -> dict[str, Any]:
    """The sampler state of any rank of ``world`` that continues where ``saved_world`` stopped."""
    if saved.get("dp_world") != saved_world:
        raise CheckpointError(
            f"checkpoint {folder}: data loader state of world size {saved.get('dp_world')} in a "
            f"checkpoint of {saved_world} processes"
        )
    per_rank = saved["n"] // saved_world
    epoch, index = int(saved["epoch"]), int(saved["index"])
    if index >= per_rank:
        epoch, index = epoch + 1, 0
    consumed = index * saved_world
    if consumed % world:
        ok = [d for d in divisors(consumed) if d <= 64] if consumed else [1]
        raise CheckpointError(
            f"checkpoint {folder} was written by {saved_world} processes; its data position "
            f"({consumed} windows into epoch {epoch}) cannot be split over {world} processes. "
            f"Resume with --nproc_per_node={saved_world} (or another count among "
            f"{', '.join(map(str, ok))}), or start a new run from its weights with "
            f"--checkpoint.initial_load_path {folder}"
        )
    return {**saved, "epoch": epoch, "index": consumed // world, "dp_world": world}


def restore_loader(
    loader: Any, state: dict[str, Any], saved_world: int, world: int, folder: str
) -> None:
    """Load a rank's saved loader state; at another world size, move the sampler instead.

    Call before ``iter(loader)``.
    """
    if saved_world == world:
        loader.load_state_dict(state)
        return
    saved = sampler_state_of(state)
    sampler = getattr(loader, "sampler", None)
    if saved is None or not hasattr(sampler, "load_state_dict"):
        raise CheckpointError(
            f"checkpoint {folder} was written by {saved_world} processes and its data loader "
            f"state cannot be moved to {world}; resume with --nproc_per_node={saved_world}"
        )
    try:
        sampler.load_state_dict(remap_sampler_state(saved, saved_world, world, folder))
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {folder}: the data loader cannot resume on {world} processes ({exc}); "
            f"resume with --nproc_per_node={saved_world} and the same data settings"
        ) from None
