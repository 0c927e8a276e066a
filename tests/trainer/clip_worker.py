"""Run under torchrun (2 gloo processes): the project's clip on FSDP2 DTensor gradients
against ``torch.nn.utils.clip_grad_norm_`` on the same gradients gathered in full.

Writes one JSON line per case to the file named by argv[1] (rank 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.optim import clip_grads_, grad_norm  # noqa: E402


def model() -> nn.Module:
    # Odd sizes give uneven shards (padding); "cols" is sharded on dim 1 like an adapter's A.
    torch.manual_seed(0)
    m = nn.Module()
    m.rows = nn.Parameter(torch.randn(7, 6))
    m.cols = nn.Parameter(torch.randn(4, 10))
    m.vec = nn.Parameter(torch.randn(5))
    m.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)
    return m


def placement(p: nn.Parameter) -> Shard:
    return Shard(1) if p.shape == (4, 10) else Shard(0)


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = []
    layouts = (
        ("shard", (2,), ("dp_shard",)),
        ("replicate", (2, 1), ("dp_replicate", "dp_shard")),
    )
    for layout, shape, names in layouts:
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
        for max_norm in (0.5, 1e3, 0.0):
            sharded = model()
            fully_shard(sharded, mesh=mesh, shard_placement_fn=placement)
            gen = torch.Generator().manual_seed(1)
            full_grads = {}
            for name, p in sharded.named_parameters():
                if p.requires_grad:
                    full_grads[name] = torch.randn(p.shape, generator=gen) * 3
                    p.grad = torch.distributed.tensor.distribute_tensor(
                        full_grads[name], p.device_mesh, p.placements
                    )
            params = [p for p in sharded.parameters() if p.requires_grad]
            norm = grad_norm(params)
            clip_grads_(params, max_norm, norm)
            clipped = {
                n: p.grad.full_tensor() for n, p in sharded.named_parameters() if p.requires_grad
            }

            plain = model()
            for name, p in plain.named_parameters():
                if p.requires_grad:
                    p.grad = full_grads[name].clone()
            ref_params = [p for p in plain.parameters() if p.requires_grad]
            if max_norm > 0:
                ref_norm = torch.nn.utils.clip_grad_norm_(ref_params, max_norm)
            else:
                ref_norm = torch.nn.utils.get_total_norm([p.grad for p in ref_params])
            errors = {
                n: (clipped[n] - p.grad).abs().max().item()
                for n, p in plain.named_parameters()
                if p.requires_grad
            }
            results.append(
                {
                    "layout": layout,
                    "max_norm": max_norm,
                    "norm": norm.item(),
                    "ref_norm": ref_norm.item(),
                    "max_grad_error": max(errors.values()),
                    "grad_scale": (clipped["rows"].norm() / full_grads["rows"].norm()).item(),
                    "local_shapes": [list(p.grad.to_local().shape) for p in params],
                }
            )
    if rank == 0:
        Path(sys.argv[1]).write_text("\n".join(json.dumps(r) for r in results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
