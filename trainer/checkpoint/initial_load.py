"""Model-only load from another run's checkpoint (warm start / continued training).

Parameters are matched by name. Two kinds of checkpoints fit a model of another method:

- dense weight ``X.weight`` into an adapter layer ``X.base.weight`` + ``X.lora_A/B``: the
  adapters keep their fresh initialisation and the base becomes ``W - s B A``, so the
  layer computes exactly the saved dense weight (the SwitchLoRA rule W0 = W - s B0 A0);
- adapter layer ``X.base.weight`` + ``X.lora_A/B`` into a dense ``X.weight``: merged to
  ``W + s B A`` with the checkpoint's scale.

Every other parameter must exist in the checkpoint with the same shape; all disagreements
are listed in one error and nothing is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from trainer.checkpoint.dcp_index import MODEL_PREFIX, load_into, saved_shapes
from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import complete_checkpoints

BASE = ".base.weight"
LORA_A = ".lora_A"
LORA_B = ".lora_B"


def resolve_source(path: Path) -> Path:
    """A step folder as given, or the newest complete one inside a dump/checkpoints folder."""
    for root in (path, path / "checkpoints"):
        found = complete_checkpoints(root) if root.is_dir() else []
        if found:
            return found[-1][1]
    return path


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a gather for DTensors)."""
    return t.full_tensor() if isinstance(t, DTensor) else t.detach()


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``full`` when laid out like ``like`` (all of it for plain tensors)."""
    if not isinstance(like, DTensor):
        return full
    shape, offset = compute_local_shape_and_global_offset(
        full.shape, like.device_mesh, like.placements
    )
    out = full
    for dim, (start, length) in enumerate(zip(offset, shape)):
        out = out.narrow(dim, start, length)
    return out


def local_view(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (or the tensor), sharing storage."""
    return t.to_local() if isinstance(t, DTensor) else t


def plan_model_load(
    target: dict[str, torch.Tensor], saved: dict[str, tuple[int, ...]], folder: Path
) -> tuple[list[str], list[str], list[str]]:
    """Split target keys into (direct, dense_into_adapter, adapter_into_dense) or raise."""
    direct, into_adapter, into_dense, problems = [], [], [], []
    for key, tensor in target.items():
        want = tuple(tensor.shape)
        if key in saved:
            if saved[key] != want:
                problems.append(f"{key}: checkpoint {list(saved[key])}, model {list(want)}")
            else:
                direct.append(key)
        elif key.endswith(BASE) and key[: -len(BASE)] + ".weight" in saved:
            dense = key[: -len(BASE)] + ".weight"
            if saved[dense] != want:
                problems.append(
                    f"{key}: checkpoint {dense} {list(saved[dense])}, model {list(want)}"
                )
            else:
                into_adapter.append(key)
        elif key.endswith((LORA_A, LORA_B)) and key.rsplit(".", 1)[0] + ".weight" in saved:
            continue  # adapters of a dense warm start keep their initialisation
        elif key.endswith(".weight") and key[: -len(".weight")] + BASE in saved:
            prefix = key[: -len(".weight")]
            if saved[prefix + BASE] != want or prefix + LORA_A not in saved:
                problems.append(f"{key}: checkpoint {prefix}{BASE} does not fit {list(want)}")
            else:
                into_dense.append(key)
        else:
            problems.append(f"{key}: missing from the checkpoint")
    used = set(direct)
    used |= {k[: -len(BASE)] + ".weight" for k in into_adapter}
    for k in into_dense:
        prefix = k[: -len(".weight")]
        used |= {prefix + BASE, prefix + LORA_A, prefix + LORA_B}
    extra = sorted(k for k in saved if k not in used and not k.endswith((LORA_A, LORA_B)))
    problems += [f"{k}: in the checkpoint but not in the model" for k in extra]
    if problems:
        shown = "; ".join(problems[:6]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 6 else ""
        )
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model (shapes or layers disagree): {shown}. "
            "Use a checkpoint of the same model sizes (model.dim, n_layers, n_heads, "
            "n_kv_heads, ffn_dim, vocab_size)"
        )
    return direct, into_adapter, into_dense


@torch.no_grad()
def load_model_only(model: nn.Module, folder: Path, metadata: Any, manifest: dict[str, Any]) -> int:
    """Load the model weights of ``folder`` into ``model`` (all ranks); returns tensors read."""
    target = get_model_state_dict(model)
    saved = saved_shapes(metadata)
    direct, into_adapter, into_dense = plan_model_load(target, saved, folder)
    request = {MODEL_PREFIX + k: target[k] for k in direct}
    staging: dict[str, torch.Tensor] = {}
    for key in into_adapter:
        dense = key[: -len(BASE)] + ".weight"
        staging[dense] = torch.empty_like(target[key])
    for key in into_dense:
        prefix = key[: -len(".weight")]
        staging[prefix + BASE] = torch.empty_like(target[key])
        for suffix in (LORA_A, LORA_B):
            staging[prefix + suffix] = torch.empty(saved[prefix + suffix], dtype=torch.float32)
    request.update({MODEL_PREFIX + k: v for k, v in staging.items()})
    load_into(folder, request, no_dist=False)
    for key in into_adapter:
        prefix = key[: -len(BASE)]
        module = model.get_submodule(prefix)
        a, b = full_tensor(target[prefix + LORA_A]), full_tensor(target[prefix + LORA_B])
        delta = local_part(float(module.scale) * (b.float() @ a.float()), target[key])
        dense = local_view(staging[prefix + ".weight"])
        local_view(target[key]).copy_(dense - delta.to(dense))
    scales = manifest.get("adapter_scales", {})
    for key in into_dense:
        prefix = key[: -len(".weight")]
        scale = scales.get(prefix)
        if scale is None:
            raise CheckpointError(f"checkpoint {folder}: no adapter scale recorded for {prefix}")
        a, b = staging[prefix + LORA_A], staging[prefix + LORA_B]
        delta = local_part(scale * (b @ a), target[key])
        base = local_view(staging[prefix + BASE])
        local_view(target[key]).copy_(base + delta.to(base))
    return len(request)
