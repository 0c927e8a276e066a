"""Export a checkpoint: merged dense weights (Hugging Face folder or one torch file) or adapters.

    python scripts/export.py --checkpoint outputs/run/checkpoints/step-N --output hf/
        [--format hf|torch] [--adapters-only] [--dtype bf16|fp32] [--overwrite]
        [--max-shard-size 5GB]

Runs on one process without a GPU. ``hf`` writes ``config.json`` and ``model.safetensors``
(sharded with an index above --max-shard-size, one shard in memory at a time), loadable with
``transformers.AutoModelForCausalLM.from_pretrained(output)``. ``torch`` writes ``model.pt``
(a dict of the same Hugging Face names, held in memory as a whole) and ``config.json``.
Both also write the run's tokenizer (from the checkpoint's copy) as ``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json`` and ``generation_config.json``, so that
``AutoTokenizer.from_pretrained(output)`` gives the run's ids (trainer/export/tokenizer_files.py).
``--adapters-only`` writes lora_A / lora_B under the trainer's parameter names
(``adapters.safetensors`` or ``adapters.pt``) plus ``adapter_config.json``. The output is
written into a sibling folder and moved into place when complete, with a marker file that
lets a later ``--overwrite`` replace it (no other non-empty folder is ever replaced). The
checkpoint's files are verified against their checksums before any is read.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trainer.checkpoint.errors import CheckpointError
from trainer.errors import InputError
from trainer.export.hf_format import hf_config, hf_name, readable_by_all, write_safetensors
from trainer.export.output import check_output, staging_folder, swap_in
from trainer.export.source import ExportSource
from trainer.export.tokenizer_files import write_tokenizer_files

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

ADAPTER_CONFIG = "adapter_config.json"


def parse_size(text: str) -> int:
    """'5GB', '500MB', '64KB' or a plain number of bytes (decimal units, like Hugging Face)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise ValueError(f"cannot read size {text!r}; use e.g. 5GB, 500MB or a byte count")
    unit = {
        "": 1,
        "B": 1,
        "K": 10**3,
        "KB": 10**3,
        "M": 10**6,
        "MB": 10**6,
        "G": 10**9,
        "GB": 10**9,
    }
    return int(float(match.group(1)) * unit[match.group(2)])


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    fmt: str = "hf",
    adapters_only: bool = False,
    dtype: str = "fp32",
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 10**9,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write the export and return the files written (paths inside ``output``)."""
    if fmt not in ("hf", "torch"):
        raise ValueError(f"unknown format {fmt!r}; use hf or torch")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use bf16 or fp32")
    start = time.perf_counter()
    checkpoint, output = Path(checkpoint), Path(output)
    source = ExportSource.open(checkpoint)
    check_output(output, checkpoint, overwrite)
    torch_dtype = DTYPES[dtype]
    plan = _adapter_shapes(source) if adapters_only else source.plan_dense()
    tmp = staging_folder(output)
    try:
        if adapters_only:
            names = _write_adapters(source, tmp, fmt, torch_dtype)
        else:
            names = _write_dense(source, tmp, fmt, torch_dtype, plan, max_shard_bytes)
            names += write_tokenizer_files(
                checkpoint, source.manifest, source.args.max_seq_len, tmp, log
            )
        swap_in(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = [output / n for n in names]
    total = sum(p.stat().st_size for p in written)
    log(
        f"exported {checkpoint} (step {source.manifest['step']}, {source.method}) to {output}: "
        f"{len(plan)} tensors, {dtype}, {total / 2**20:.2f} MiB in {time.perf_counter() - start:.1f} s"
    )
    return written


def _adapter_shapes(source: ExportSource) -> dict[str, tuple[int, ...]]:
    prefixes = source.adapter_prefixes()
    if not prefixes:
        raise CheckpointError(
            f"checkpoint {source.folder} (method {source.method}) has no adapter layers; "
            "export it without --adapters-only"
        )
    return {
        p + s: tuple(source.entries[p + s].size) for p in prefixes for s in (".lora_A", ".lora_B")
    }


def _write_dense(
    source: ExportSource,
    folder: Path,
    fmt: str,
    dtype: torch.dtype,
    plan: dict[str, tuple[int, ...]],
    max_shard_bytes: int,
) -> list[str]:
    config = hf_config(source.args, dtype, source.manifest.get("tokenizer", {}).get("eos_id"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if fmt == "torch":
        state = {hf_name(name): tensor for name, tensor in source.dense_tensors(dtype)}
        torch.save(state, folder / "model.pt")
        return ["config.json", "model.pt"]
    element = torch.empty((), dtype=dtype).element_size()
    by_hf = {hf_name(name): name for name in plan}
    sizes = {hf: _numel(plan[name]) * element for hf, name in by_hf.items()}
    files = write_safetensors(
        folder, sizes, lambda hf: source.dense_tensor(by_hf[hf], dtype), max_shard_bytes
    )
    return ["config.json", *(f.name for f in files)]


def _write_adapters(source: ExportSource, folder: Path, fmt: str, dtype: torch.dtype) -> list[str]:
    method = source.manifest["method"]
    prefixes = source.adapter_prefixes()
    description = {
        "method": method["name"],
        "rank": method["rank"],
        "alpha": method.get("alpha"),
        "scale": {p: source.scale(p) for p in prefixes},
        "target_modules": method.get("target_modules"),
        "layers": prefixes,
        "step": source.manifest["step"],
        "dtype": str(dtype).removeprefix("torch."),
        "note": "layer output = W x + scale * lora_B (lora_A x); W (the frozen base) is not included",
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(description, indent=2))
    tensors = dict(source.adapter_tensors(dtype))
    if fmt == "torch":
        torch.save(tensors, folder / "adapters.pt")
        return [ADAPTER_CONFIG, "adapters.pt"]
    from safetensors.torch import save_file

    save_file(tensors, str(folder / "adapters.safetensors"), metadata={"format": "pt"})
    readable_by_all(folder / "adapters.safetensors")
    return [ADAPTER_CONFIG, "adapters.safetensors"]


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/export.py",
        description="Export a training checkpoint as merged dense weights or as adapters.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a complete checkpoints/step-<N> folder"
    )
    parser.add_argument("--output", required=True, help="folder to create")
    parser.add_argument("--format", choices=("hf", "torch"), default="hf")
    parser.add_argument("--adapters-only", action="store_true", help="only lora_A / lora_B")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard limit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the process exit status (2 for unusable input)."""
    args = build_parser().parse_args(argv)
    try:
        export_checkpoint(
            args.checkpoint,
            args.output,
            fmt=args.format,
            adapters_only=args.adapters_only,
            dtype=args.dtype,
            overwrite=args.overwrite,
            max_shard_bytes=parse_size(args.max_shard_size),
        )
    except InputError as exc:
        print(f"{exc.kind} error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"export error: {exc}", file=sys.stderr)
        return 2
    return 0
