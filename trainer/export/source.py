"""Reading a checkpoint for export: dense (merged) or adapter tensors, one at a time.

Only model entries are read, each with its own ``dcp.load`` call on one process, so the
memory held is one dense weight plus its adapter factors, whatever the size of the
optimizer state or the number of processes that wrote the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from trainer.checkpoint.dcp_index import MODEL_PREFIX, read_metadata, read_tensors, tensor_entries
from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.manifest import model_args_of, read_manifest
from trainer.checkpoint.verify import verify_checkpoint
from trainer.model.args import ModelArgs
from trainer.model.llama import Llama

BASE = ".base.weight"
LORA_A = ".lora_A"
LORA_B = ".lora_B"


def dense_layout(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the dense model (names as in the trainer's Llama)."""
    with torch.device("meta"):
        model = Llama(args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass
class ExportSource:
    """A complete checkpoint opened for export."""

    folder: Path
    manifest: dict[str, Any]
    args: ModelArgs
    entries: dict[str, TensorStorageMetadata]
    """Saved model tensors by parameter name (without the ``model.`` prefix)."""

    @classmethod
    def open(cls, folder: str | Path) -> ExportSource:
        """Check the folder (complete, checksums intact, readable index); index its model tensors."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        verify_checkpoint(folder, manifest, lambda older: f"export it with --checkpoint {older}")
        entries = tensor_entries(read_metadata(folder))
        if not entries:
            raise CheckpointError(f"checkpoint {folder} holds no model tensors")
        return cls(folder, manifest, model_args_of(manifest), entries)

    @property
    def method(self) -> str:
        """Training method recorded in the manifest."""
        return self.manifest["method"]["name"]

    def adapter_prefixes(self) -> list[str]:
        """Module paths that carry base + lora_A + lora_B, in saved order."""
        return [
            k[: -len(BASE)]
            for k in self.entries
            if k.endswith(BASE) and k[: -len(BASE)] + LORA_A in self.entries
        ]

    def scale(self, prefix: str) -> float:
        """Adapter scale s of one layer (recorded at save time)."""
        scales = self.manifest.get("adapter_scales", {})
        if prefix in scales:
            return float(scales[prefix])
        method = self.manifest["method"]
        return float(method["alpha"]) / float(method["rank"])

    def read(self, *names: str) -> list[torch.Tensor]:
        """Saved model tensors (read together), in their saved dtype."""
        metas = {MODEL_PREFIX + n: self.entries[n] for n in names}
        found = read_tensors(self.folder, metas)
        return [found[MODEL_PREFIX + n] for n in names]

    def plan_dense(self) -> dict[str, tuple[int, ...]]:
        """The dense names and shapes to write; raises if the checkpoint cannot provide them."""
        layout = dense_layout(self.args)
        used: set[str] = set()
        problems = []
        for name, shape in layout.items():
            prefix = name[: -len(".weight")]
            parts = [name] if name in self.entries else [prefix + s for s in (BASE, LORA_A, LORA_B)]
            if not all(p in self.entries for p in parts):
                problems.append(f"{name} missing")
                continue
            used.update(parts)
            have = tuple(self.entries[parts[0]].size)
            if have != shape:
                problems.append(f"{parts[0]}: saved {list(have)}, model {list(shape)}")
        extra = sorted(set(self.entries) - used)
        problems += [f"{k}: not part of a LLaMA model (unknown method state?)" for k in extra]
        if problems:
            raise CheckpointError(
                f"checkpoint {self.folder} does not match the model in its manifest "
                f"(method {self.method}): {'; '.join(problems[:5])}"
                + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
            )
        return layout

    def dense_tensors(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of every dense weight, adapters merged as W + s B A in fp32."""
        for name in self.plan_dense():
            yield name, self.dense_tensor(name, dtype)

    def dense_tensor(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """One dense weight (merged when the layer is an adapter layer)."""
        if name in self.entries:
            return self.read(name)[0].to(dtype).contiguous()
        prefix = name[: -len(".weight")]
        weight, a, b = (
            t.float() for t in self.read(prefix + BASE, prefix + LORA_A, prefix + LORA_B)
        )
        weight.addmm_(b, a, alpha=self.scale(prefix))
        return weight.to(dtype).contiguous()

    def adapter_tensors(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of every lora_A and lora_B."""
        for prefix in self.adapter_prefixes():
            a, b = self.read(prefix + LORA_A, prefix + LORA_B)
            yield prefix + LORA_A, a.to(dtype).contiguous()
            yield prefix + LORA_B, b.to(dtype).contiguous()
