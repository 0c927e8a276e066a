"""Multi-process checks, launched by test_switchlora_distributed.py with torchrun (gloo).

Each case builds the tiny model on the meta device, shards every block with FSDP2 and
switchlora's placement_fn (down_proj has n = 33: its A takes the row-sharded fallback),
initialises it world-size-independently and checks:
- a K_max switch in every layer leaves the output unchanged;
- 20 training steps with switching equal a single-process run on the full batch, and every
  rank makes identical decisions; W never gets a gradient;
- a torch.distributed.checkpoint round trip of controller + model + optimizer continues
  identically.

Argument 2 (optional) "hsdp-2x2": on 4 processes, only the HSDP case with 2 replicas of 2
shards each, so gradients are also all-reduced across replicas.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from switchlora_testkit import batch, build, init_model_, loss_of, make_optimizer, options
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from switchlora import SwitchController
from switchlora.sharding import make_placement_fn

STEPS = 20
EPS = 1e-4  # see test_switchlora_reference.py: keeps Adam from amplifying rounding


def sharded_setup(opts, mesh):
    model, layers = build(opts, device="meta")
    placement_fn = make_placement_fn(mesh.size(mesh.ndim - 1))  # the shard dim, not the world
    for block in model.layers:
        fully_shard(block, mesh=mesh, shard_placement_fn=placement_fn)
    fully_shard(model, mesh=mesh, shard_placement_fn=placement_fn)
    model.to_empty(device="cpu")
    pools = init_model_(model, layers, opts)
    opt = make_optimizer(model, layers, eps=EPS)
    ctrl = SwitchController(layers, opts, total_steps=STEPS, optimizer=opt)
    ctrl.init_state(pools)
    return model, layers, opt, ctrl


def plain_setup(opts):
    model, layers = build(opts)
    pools = init_model_(model, layers, opts)
    opt = make_optimizer(model, layers, eps=EPS)
    ctrl = SwitchController(layers, opts, total_steps=STEPS, optimizer=opt)
    ctrl.init_state(pools)
    return model, layers, opt, ctrl


def local_batch(t: int) -> torch.Tensor:
    full = batch(t)
    rank, world = dist.get_rank(), dist.get_world_size()
    per = full.shape[0] // world
    return full[rank * per : (rank + 1) * per]


def same_on_all_ranks(value) -> None:
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    assert all(g == gathered[0] for g in gathered), f"ranks disagree: {gathered}"


def check_layouts(ctrl) -> None:
    modes = {st.name.rsplit(".", 1)[1]: st.layout.a_mode for st in ctrl.layers}
    assert modes["down_proj"] == "rows", modes
    assert modes["q_proj"] == "cols" and modes["gate_proj"] == "cols", modes


def check_invariance(opts, mesh) -> float:
    model, layers, opt, ctrl = sharded_setup(opts, mesh)
    check_layouts(ctrl)
    tokens = local_batch(0)
    with torch.no_grad():
        before = model(tokens)
    a_before = {n: m.lora_A.full_tensor().clone() for n, m in layers.items()}
    stats = ctrl.step(0, force_k=ctrl.max_slots)
    assert stats["vectors_switched"] == 2 * ctrl.max_slots * len(layers), stats
    with torch.no_grad():
        after = model(tokens)
    rel = ((after - before).norm() / before.norm()).item()
    assert rel < 1e-5, rel
    for name, layer in layers.items():
        changed = (layer.lora_A.full_tensor() != a_before[name]).any(dim=1).sum().item()
        # a random pool draw may hand a position its own (untrained) entry back
        exact = opts.candidate_source == "seeded" or opts.pool_choice == "sequential"
        assert changed == ctrl.max_slots if exact else 0 < changed <= ctrl.max_slots, (
            name,
            changed,
        )
    return rel


def train(model, layers, opt, ctrl, steps, sharded: bool):
    stats = []
    for t in steps:
        tokens = local_batch(t) if sharded else batch(t)
        loss_of(model, tokens).backward()
        for layer in layers.values():
            assert layer.base.weight.grad is None
            assert layer.lora_A.grad is not None
        stats.append(ctrl.step(t))
        opt.step()
        opt.zero_grad()
    return stats


def full_params(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, param in model.named_parameters():
        value = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name] = value.detach().clone()
    return out


def check_matches_single(opts, mesh, ckpt_dir: str) -> float:
    model, layers, opt, ctrl = sharded_setup(opts, mesh)
    ref_model, ref_layers, ref_opt, ref_ctrl = plain_setup(opts)
    stats = train(model, layers, opt, ctrl, range(STEPS // 2), sharded=True)
    ref_stats = train(ref_model, ref_layers, ref_opt, ref_ctrl, range(STEPS // 2), sharded=False)
    assert stats == ref_stats, (stats, ref_stats)

    # checkpoint in the middle, keep training, then restore into fresh objects
    model_sd, opt_sd = get_state_dict(model, opt)
    dcp.save(
        {"model": model_sd, "optim": opt_sd, "switch": ctrl.state_dict()}, checkpoint_id=ckpt_dir
    )
    stats += train(model, layers, opt, ctrl, range(STEPS // 2, STEPS), sharded=True)
    ref_stats += train(ref_model, ref_layers, ref_opt, ref_ctrl, range(STEPS // 2, STEPS), False)
    assert stats == ref_stats, (stats, ref_stats)
    assert sum(s["vectors_switched"] for s in stats) > 40
    same_on_all_ranks(stats)
    same_on_all_ranks([(st.p_a, st.p_b, st.frz_host_a.tolist()) for st in ctrl.layers])

    got, want = full_params(model), full_params(ref_model)
    worst = 0.0
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=name)
        worst = max(worst, (got[name] - value).abs().max().item())

    model2, layers2, opt2, ctrl2 = sharded_setup(opts, mesh)
    model_sd2, opt_sd2 = get_state_dict(model2, opt2)
    state = {"model": model_sd2, "optim": opt_sd2, "switch": ctrl2.state_dict()}
    dcp.load(state, checkpoint_id=ckpt_dir)
    set_state_dict(model2, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
    ctrl2.load_state_dict(state["switch"])
    resumed = train(model2, layers2, opt2, ctrl2, range(STEPS // 2, STEPS), sharded=True)
    assert resumed == stats[STEPS // 2 :], (resumed, stats[STEPS // 2 :])
    got2 = full_params(model2)
    for name, value in got.items():
        torch.testing.assert_close(got2[name], value, rtol=1e-6, atol=1e-6, msg=f"resumed {name}")
    return worst


def cases_to_run(world: int, selection: str) -> dict:
    """name: (options, mesh) of the cases `selection` names ("all" or "hsdp-2x2")."""
    names = ("replicate", "shard")
    if selection == "hsdp-2x2":
        if world != 4:
            raise SystemExit(f"hsdp-2x2 needs 4 processes, got {world}")
        return {
            "pool-hsdp-2x2": (
                options(freeze_steps=2),
                init_device_mesh("cpu", (2, 2), mesh_dim_names=names),
            )
        }
    mesh = init_device_mesh("cpu", (world,))
    hsdp_mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=names)
    return {
        "pool-sequential": (options(freeze_steps=2), mesh),
        "pool-random-nowriteback": (
            options(freeze_steps=1, pool_choice="random", pool_write_back=False),
            mesh,
        ),
        "seeded": (options(freeze_steps=2, candidate_source="seeded"), mesh),
        "pool-hsdp": (options(freeze_steps=2), hsdp_mesh),
    }


def main() -> None:
    dist.init_process_group("gloo")
    ckpt_root = sys.argv[1]
    world = dist.get_world_size()
    cases = cases_to_run(world, sys.argv[2] if len(sys.argv) > 2 else "all")
    report = {}
    for name, (opts, case_mesh) in cases.items():
        start = time.perf_counter()
        rel = check_invariance(opts, case_mesh)
        worst = check_matches_single(opts, case_mesh, f"{ckpt_root}/{name}")
        report[name] = {
            "invariance_rel": rel,
            "max_abs_diff": worst,
            "s": time.perf_counter() - start,
        }
    if dist.get_rank() == 0:
        print("SWITCHLORA_DIST_OK " + json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
