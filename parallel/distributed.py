"""Process group, device and device mesh.

Works launched by torchrun (any number of processes) and as a plain ``python`` process.
NCCL and CUDA are chosen automatically when a GPU is present; gloo on CPU otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh | None
    """Data-parallel mesh: 1-D ("dp_shard",) or 2-D ("dp_replicate", "dp_shard")."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(
    backend: str = "auto",
    dp_replicate: int = 1,
    dp_shard: int = -1,
    timeout_s: int = 1800,
) -> DistInfo:
    """Initialise the process group (once) and the data-parallel device mesh.

    ``dp_shard = -1`` takes every rank not used by ``dp_replicate``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if dp_shard == -1:
        if world_size % dp_replicate:
            raise ValueError(
                f"parallel.dp_replicate={dp_replicate} does not divide the world size {world_size}"
            )
        dp_shard = world_size // dp_replicate
    if dp_shard * dp_replicate != world_size:
        raise ValueError(
            f"parallel.dp_replicate * parallel.dp_shard = {dp_replicate} * {dp_shard} "
            f"does not equal the world size {world_size}"
        )
    if not dist.is_initialized():
        kwargs = {}
        if "MASTER_ADDR" not in os.environ and world_size == 1:
            # A plain single-process launch: an in-memory store, no port to collide on.
            kwargs["store"] = dist.HashStore()
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
            **kwargs,
        )
    if dp_replicate > 1:
        mesh = init_device_mesh(
            device.type, (dp_replicate, dp_shard), mesh_dim_names=("dp_replicate", "dp_shard")
        )
    else:
        mesh = init_device_mesh(device.type, (dp_shard,), mesh_dim_names=("dp_shard",))
    return DistInfo(rank, world_size, local_rank, device, mesh)


def shutdown(wait_for_all: bool = True) -> None:
    """Tear the process group down.

    ``wait_for_all`` first waits for every rank (a clean exit: no rank leaves while another is
    still in a collective). After an error it must be False: the failing rank should exit at
    once so that torchrun stops the others instead of waiting on a barrier forever.
    """
    if dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()
