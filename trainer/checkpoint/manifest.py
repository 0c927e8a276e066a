"""``manifest.json``: what a checkpoint holds, checked before anything is loaded.

Written by rank 0 into the partial folder after every rank's DCP files and DCP's
``.metadata`` exist, and before the folder is renamed to its complete name. It records the
model sizes and the method (so export and resume need no other file), the world size the
data loader state belongs to, the settings that fix the data order (a resume must share
them), and the size and XXH3 checksum of every file (a truncated, missing or changed file is
reported as corruption before DCP reads a byte).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint.checksum import ALGORITHM, SIDECAR_SUFFIX
from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import DCP_METADATA, MANIFEST, PARTIAL_SUFFIX
from trainer.config import JobConfig
from trainer.methods import get_method
from trainer.model.args import ModelArgs

FORMAT_VERSION = 2
"""Bumped when the layout of the saved state changes incompatibly (2: JSON entries, checksums)."""

MODEL_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size")
"""Model sizes that must match on resume (norm_eps and rope_theta are reported, not enforced)."""


RUN_KEYS = ("training.seq_len", "training.global_batch_size", "job.seed", "data.source")
"""Settings that fix the data order and the sampler position; they must match on resume."""


def data_source_of(cfg: JobConfig) -> str:
    """The data source as recorded: embedded names as given, folders as absolute paths."""
    source = cfg.data.source
    return source if source.startswith("embedded:") else os.path.abspath(source)


def run_record(cfg: JobConfig) -> dict[str, Any]:
    """The values of :data:`RUN_KEYS` of this run."""
    return {
        "training.seq_len": cfg.training.seq_len,
        "training.global_batch_size": cfg.training.global_batch_size,
        "job.seed": cfg.job.seed,
        "data.source": data_source_of(cfg),
    }


def method_record(cfg: JobConfig) -> dict[str, Any]:
    """The method settings kept in the manifest (with the switchlora/relora/galore sections)."""
    record = dataclasses.asdict(cfg.method)
    record["target_modules"] = list(cfg.method.target_modules)
    for section in ("switchlora", "relora", "galore"):
        if hasattr(cfg, section):
            record[section] = dataclasses.asdict(getattr(cfg, section))
    return record


def recorded(record: dict[str, Any], key: str) -> Any:
    """The value of ``key`` ("section.field") in a :func:`method_record`.

    Manifests written before the [switchlora] section kept its fields in the method record.
    """
    section, _, name = key.partition(".")
    if section == "method":
        return record.get(name)
    return record.get(section, {}).get(name, record.get(name))


def adapter_scales(model: torch.nn.Module) -> dict[str, float]:
    """Module path -> scale s of every adapter layer (modules with lora_A, lora_B, scale)."""
    return {
        name: float(module.scale)
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and hasattr(module, "lora_B") and hasattr(module, "scale")
    }


def build_manifest(
    step: int,
    world_size: int,
    cfg: JobConfig,
    model_args: ModelArgs,
    scales: dict[str, float],
    tokenizer: dict[str, Any],
    files: dict[str, int],
    checksums: dict[str, str],
) -> dict[str, Any]:
    """The manifest of a checkpoint of ``step`` whose folder holds ``files`` (name -> bytes)
    with ``checksums`` (name -> hex XXH3-64).

    ``scales`` maps adapter module paths to their scale s (see :func:`adapter_scales`).
    """
    return {
        "format_version": FORMAT_VERSION,
        "step": step,
        "world_size": world_size,
        "created_unix": time.time(),
        "torch_version": torch.__version__,
        "job_name": cfg.job.name,
        "model": dataclasses.asdict(model_args),
        "method": method_record(cfg),
        "adapter_scales": scales,
        "tokenizer": tokenizer,
        "run": run_record(cfg),
        "files": files,
        "checksum_algorithm": ALGORITHM,
        "checksums": checksums,
    }


def list_files(folder: Path) -> dict[str, int]:
    """Name -> size of the regular files directly in ``folder`` (the DCP files), leaving out
    the writers' checksum sidecars and the manifest itself."""
    return {
        p.name: p.stat().st_size
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX) and p.name != MANIFEST
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` durably (temporary name, fsync, rename)."""
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Check that ``folder`` is a complete, intact checkpoint and return its manifest.

    Raises :class:`CheckpointError` naming the folder for: a missing folder, a partial
    save, a missing or unreadable manifest or DCP index, and missing or truncated files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} is not a folder")
    hint = "; pick a complete step-<N> folder (a save interrupted by a crash leaves a partial one)"
    if folder.name.endswith(PARTIAL_SUFFIX):
        raise CheckpointError(f"checkpoint {folder} is a partial save{hint}")
    if not (folder / MANIFEST).is_file() or not (folder / DCP_METADATA).is_file():
        missing = [n for n in (MANIFEST, DCP_METADATA) if not (folder / n).is_file()]
        raise CheckpointError(
            f"checkpoint {folder} is partial or not a checkpoint: {', '.join(missing)} missing{hint}"
        )
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {folder} is corrupt: unreadable {MANIFEST} ({exc})"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder}: {MANIFEST} has format_version "
            f"{manifest.get('format_version') if isinstance(manifest, dict) else None!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    for key in ("step", "world_size", "model", "method", "adapter_scales", "files", "checksums"):
        if key not in manifest:
            raise CheckpointError(f"checkpoint {folder} is corrupt: {MANIFEST} lacks {key!r}")
    unchecked = sorted(set(manifest["files"]) - set(manifest["checksums"]))
    if unchecked or manifest.get("checksum_algorithm") != ALGORITHM:
        raise CheckpointError(
            f"checkpoint {folder} is corrupt: {MANIFEST} records no {ALGORITHM} checksum for "
            f"{', '.join(unchecked) or 'its files'}"
        )
    check_files(folder, manifest["files"])
    return manifest


def check_files(folder: Path, files: dict[str, int]) -> None:
    """Every file the manifest lists exists with the recorded size."""
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} is corrupt: file {name} is missing")
        have = path.stat().st_size
        if have != size:
            raise CheckpointError(
                f"checkpoint {folder} is corrupt: file {name} has {have} bytes, {size} were written"
            )


def model_args_of(manifest: dict[str, Any]) -> ModelArgs:
    """The :class:`ModelArgs` the checkpoint was trained with."""
    names = {f.name for f in dataclasses.fields(ModelArgs)}
    return ModelArgs(**{k: v for k, v in manifest["model"].items() if k in names})


def check_matches_run(
    folder: Path,
    manifest: dict[str, Any],
    cfg: JobConfig,
    model_args: ModelArgs,
    scales: dict[str, float],
) -> None:
    """Raise when the checkpoint's model sizes, method or adapter scales differ from the run."""
    saved_model = manifest["model"]
    want_model = dataclasses.asdict(model_args)
    diffs = [
        f"model.{k}: checkpoint {saved_model.get(k)!r}, config {want_model[k]!r}"
        for k in MODEL_KEYS
        if saved_model.get(k) != want_model[k]
    ]
    saved_method = manifest["method"]
    want_method = method_record(cfg)
    keys = get_method(cfg.method.name).checkpoint_keys
    if saved_method.get("name") != want_method["name"]:
        keys = ("method.name",)
    diffs += [
        f"{k}: checkpoint {recorded(saved_method, k)!r}, config {recorded(want_method, k)!r}"
        for k in keys
        if recorded(saved_method, k) != recorded(want_method, k)
    ]
    saved_run = manifest.get("run", {})
    want_run = run_record(cfg)
    diffs += [
        f"{k}: checkpoint {saved_run[k]!r}, config {want_run[k]!r}"
        for k in RUN_KEYS
        if k in saved_run and saved_run[k] != want_run[k]
    ]
    saved_scales = manifest["adapter_scales"]
    if not diffs and saved_scales != scales:
        changed = sorted(
            k for k in set(saved_scales) | set(scales) if saved_scales.get(k) != scales.get(k)
        )
        diffs.append(
            f"adapter scale of {changed[0]}: checkpoint {saved_scales.get(changed[0])!r}, "
            f"config {scales.get(changed[0])!r} (alpha / rank)"
        )
    if diffs:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the configured run: "
            + "; ".join(diffs)
            + ". Resume with the settings it was written with, or use another "
            "job.dump_folder (checkpoint.initial_load_path loads its model weights into a "
            "new run)"
        )
