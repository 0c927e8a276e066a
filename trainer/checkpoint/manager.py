"""CheckpointManager: resume or seed-load at the start, save on an interval, keep the latest k.

Used by ``trainer.train`` in four places: ``load`` after the trainer is built,
``wait_for_staging`` before each step, ``maybe_save`` after each step, ``close`` at the end.
Saving writes ``step-<N>.partial`` with DCP (every rank its shards and its own data loader /
RNG entry; each rank hashes the files it wrote), then rank 0 writes ``config.toml`` and
``manifest.json`` (sizes and checksums of every file) into it and renames it to
``step-<N>``; only once the renamed folder verifies against its checksums are older
checkpoints beyond ``keep_latest`` deleted. A state holding a NaN or Inf is never saved. A
start picks the newest complete ``step-<N>`` (or ``checkpoint.load_step``) and verifies it
before reading a byte of it, so a crash at any moment costs at most the steps since the last
complete checkpoint and never a good checkpoint, and damage is reported, not resumed from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial as bind
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from trainer.checkpoint.async_save import PendingSave, start_async_save
from trainer.checkpoint.checksum import collect_checksums
from trainer.checkpoint.dataloader import restore_loader
from trainer.checkpoint.dcp_index import (
    DCP_ERRORS,
    first_line,
    load_into,
    read_metadata,
    saved_shapes,
)
from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.faults import after_checkpoint, storage_writer
from trainer.checkpoint.finite import non_finite_keys
from trainer.checkpoint.initial_load import load_model_only, resolve_source
from trainer.checkpoint.layout import (
    checkpoint_root,
    complete_checkpoints,
    folder_bytes,
    partial_folder,
    promote,
    prune,
    remove_unfinished,
    step_folder,
    step_of,
    unfinished_folders,
)
from trainer.checkpoint.manifest import (
    adapter_scales,
    build_manifest,
    check_matches_run,
    list_files,
    read_manifest,
    write_manifest,
)
from trainer.checkpoint.rng import restore_rng
from trainer.checkpoint.state import (
    TrainingParts,
    apply_loaded,
    rank_key,
    state_to_load,
    state_to_save,
    unpack,
)
from trainer.checkpoint.tokenizer_copy import check_same_tokenizer, tokenizer_record
from trainer.checkpoint.verify import verify_checkpoint
from trainer.config import JobConfig, to_toml


def load_step_hint(older: Path) -> str:
    """How a resume picks ``older``."""
    return f"resume from it with --checkpoint.load_step {step_of(older)}"


def initial_load_hint(older: Path) -> str:
    """How an initial load picks ``older``."""
    return f"start from it with --checkpoint.initial_load_path {older}"


class CheckpointManager:
    """Saves and restores the complete training state of one run (all ranks call every method)."""

    def __init__(
        self, cfg: JobConfig, info: Any, dump_folder: str | Path, log: Callable[[str], None]
    ) -> None:
        """``info`` is the run's DistInfo (rank, world_size, device, is_main); ``log`` prints on rank 0."""
        self.job = cfg
        self.cfg = cfg.checkpoint
        self.info = info
        self.root = checkpoint_root(dump_folder)
        self.log = log
        self.pending: PendingSave | None = None
        self.last_saved_step = -1
        self.group = None
        if self.cfg.enable and self.cfg.async_mode == "async" and dist.is_initialized():
            # Background writes run collectives; a group of their own keeps them apart from training's.
            self.group = dist.new_group(backend="gloo")

    # ------------------------------------------------------------------ start of a run

    def load(self, parts: TrainingParts) -> dict[str, Any] | None:
        """Resume from this run's newest complete checkpoint, or apply checkpoint.initial_load_path.

        Returns the saved progress record when the run continues from a saved step (resume,
        or a full initial load), None when it starts at step 0.
        """
        folder = self._resume_folder()
        if folder is not None:
            if self.cfg.initial_load_path:
                self.log("checkpoint: resuming this run, so initial_load_path is not used")
            return self._load_full(parts, folder, load_step_hint)
        if not self.cfg.initial_load_path:
            return None
        source = resolve_source(Path(self.cfg.initial_load_path))
        if not self.cfg.initial_load_model_only:
            return self._load_full(parts, source, initial_load_hint)
        start = time.perf_counter()
        manifest = read_manifest(source)
        verify_checkpoint(source, manifest, initial_load_hint)
        check_same_tokenizer(source, manifest, parts.data.tokenizer_name)
        count = load_model_only(parts.model, source, read_metadata(source), manifest)
        self.log(
            f"initial weights: {count} tensors from {source} (step {manifest['step']}, "
            f"method {manifest['method']['name']}) in {time.perf_counter() - start:.2f} s"
        )
        return None

    def _resume_folder(self) -> Path | None:
        """The checkpoint this run resumes from, or None for a fresh start."""
        if not self.cfg.enable:
            return None
        if self.cfg.load_step > 0:
            later = [p.name for s, p in complete_checkpoints(self.root) if s > self.cfg.load_step]
            if later:
                self.log(
                    f"checkpoint: resuming from step {self.cfg.load_step} (checkpoint.load_step); "
                    f"the later {', '.join(later)} stay until this run saves those steps"
                )
            return step_folder(self.root, self.cfg.load_step)
        leftovers = unfinished_folders(self.root)
        if leftovers:
            names = ", ".join(p.name for _, p in leftovers)
            self.log(f"checkpoint: ignoring unfinished folders {names} (removed by later saves)")
        complete = complete_checkpoints(self.root)
        return complete[-1][1] if complete else None

    def _load_full(
        self, parts: TrainingParts, folder: Path, hint: Callable[[Path], str]
    ) -> dict[str, Any]:
        """Load every part of the state from ``folder`` and continue at its step.

        ``hint`` says how to pick an older checkpoint when this one fails verification.
        """
        start = time.perf_counter()
        manifest = read_manifest(folder)
        verify_checkpoint(folder, manifest, hint)
        metadata = read_metadata(folder)
        check_same_tokenizer(folder, manifest, parts.data.tokenizer_name)
        check_matches_run(folder, manifest, self.job, parts.model_args, adapter_scales(parts.model))
        _check_model_shapes(folder, metadata, parts)
        saved_world = int(manifest["world_size"])
        rank, world = self.info.rank, self.info.world_size
        source_rank = rank if rank < saved_world else 0
        template = state_to_load(parts, source_rank)
        missing = [
            name
            for name in parts.method.stateful
            if not any(k.startswith(f"method.{name}.") for k in metadata.state_dict_metadata)
        ]
        if missing:
            raise CheckpointError(
                f"checkpoint {folder} holds no state for {', '.join(missing)} of method "
                f"{self.job.method.name}"
            )
        load_into(folder, template, no_dist=False)
        apply_loaded(parts, template)
        own_key = rank_key(source_rank)
        own = unpack(template["per_rank"][own_key], folder, f"per_rank.{own_key}")
        restore_loader(parts.data.train, own["dataloader"], saved_world, world, str(folder))
        restore_rng(own["rng"], self.info.device)
        progress = unpack(template["train"]["progress"], folder, "train.progress")
        self.last_saved_step = parts.step
        self.log(
            f"resumed from {folder} (step {parts.step}, written by {saved_world} "
            f"process{'es' if saved_world > 1 else ''}) in {time.perf_counter() - start:.2f} s"
        )
        return progress

    # ------------------------------------------------------------------ during a run

    def wait_for_staging(self) -> None:
        """Block until an asynchronous save has copied the state; finish it if it is written.

        Call before the next step changes parameters, optimizer or method state.
        """
        pending = self.pending
        if pending is None:
            return
        if pending.staging is not None:
            waited = time.perf_counter()
            pending.staging.result()
            pending.staging = None
            pending.blocking_s += time.perf_counter() - waited
        if pending.upload.done():
            self._finish_pending()

    def maybe_save(self, parts: TrainingParts, progress: dict[str, Any], last: bool) -> None:
        """Save when checkpointing is on and the step is on the interval or the last one."""
        if not self.cfg.enable or parts.step == self.last_saved_step:
            return
        if last or parts.step % self.cfg.interval == 0:
            self.save(parts, progress)

    def save(self, parts: TrainingParts, progress: dict[str, Any]) -> None:
        """Write a checkpoint of the current step (synchronously or in the background)."""
        if self.pending is not None:
            self._finish_pending()
        step = parts.step
        state = state_to_save(
            parts, self.info.rank, self.info.world_size, self.info.device, progress
        )
        bad = non_finite_keys(state, self.info.device)
        if bad:
            raise CheckpointError(
                f"refusing to save the checkpoint of step {step}: {bad[0]}"
                f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} holds NaN or Inf "
                f"values; nothing was written and the earlier checkpoints in {self.root} are kept"
            )
        folder = partial_folder(self.root, step)
        if self.info.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            remove_unfinished(self.root, step)
            folder.mkdir()
        data = parts.data
        tokenizer = tokenizer_record(
            self.job.data.tokenizer, data.tokenizer_name, data.eos_id, folder, self.info.is_main
        )
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        describe = bind(
            build_manifest,
            step=step,
            world_size=self.info.world_size,
            cfg=self.job,
            model_args=parts.model_args,
            scales=adapter_scales(parts.model),
            tokenizer=tokenizer,
        )
        writer = storage_writer(folder, step)
        if self.group is not None:
            staging, upload, stager = start_async_save(state, writer, self.group, self.info.device)
            self.pending = PendingSave(step, folder, staging, upload, stager, start, describe)
            self.pending.blocking_s = time.perf_counter() - start
        else:
            try:
                dcp.save(state, storage_writer=writer)
            except DCP_ERRORS as exc:
                raise CheckpointError(
                    f"saving the checkpoint of step {step} into {folder} failed "
                    f"({first_line(exc)}); earlier checkpoints are untouched"
                ) from None
            self.pending = PendingSave(step, folder, None, None, None, start, describe)
            self.pending.blocking_s = time.perf_counter() - start
            self._finish_pending()
            if dist.is_initialized():
                dist.barrier()
            after_checkpoint(step)
        self.last_saved_step = step

    def _finish_pending(self) -> None:
        """Wait for the pending save's files, then (rank 0) describe, rename and prune."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if pending.upload is not None:
            waited = time.perf_counter()
            try:
                pending.upload.result()
            except DCP_ERRORS as exc:
                raise CheckpointError(
                    f"writing the checkpoint of step {pending.step} into {pending.folder} "
                    f"failed ({first_line(exc)}); earlier checkpoints are untouched"
                ) from None
            finally:
                if pending.stager is not None:
                    pending.stager.close()
            pending.blocking_s += time.perf_counter() - waited
        if self.info.is_main:
            self._publish(pending)
        if pending.upload is not None:
            after_checkpoint(pending.step)

    def _publish(self, pending: PendingSave) -> None:
        """Rank 0: manifest and config into the written folder, rename it complete, prune."""
        folder = pending.folder
        (folder / "config.toml").write_text(to_toml(self.job))
        files = list_files(folder)
        checksums = collect_checksums(folder, list(files))
        manifest = pending.describe(files=files, checksums=checksums)
        manifest["save_seconds"] = time.perf_counter() - pending.started
        write_manifest(folder, manifest)
        final = step_folder(self.root, pending.step)
        promote(folder, final)
        # Older checkpoints go only once the new one reads back intact.
        verify_start = time.perf_counter()
        verify_checkpoint(
            final,
            read_manifest(final),
            lambda older: f"{older} is kept; the damaged new one was not used to delete it",
            shared=False,
        )
        verify_s = time.perf_counter() - verify_start
        removed = prune(self.root, self.cfg.keep_latest, pending.step)
        size = folder_bytes(final)
        note = f"; removed {', '.join(p.name for p in removed)}" if removed else ""
        self.log(
            f"checkpoint step {pending.step} saved to {final} in "
            f"{manifest['save_seconds']:.2f} s (training blocked {pending.blocking_s:.2f} s, "
            f"{size / 2**20:.2f} MiB, read back and verified in {verify_s:.2f} s){note}"
        )

    def close(self) -> None:
        """Finish an asynchronous save still in flight; all ranks leave together."""
        if self.pending is not None:
            self._finish_pending()
        if dist.is_initialized():
            dist.barrier()


def _check_model_shapes(folder: Path, metadata: Any, parts: TrainingParts) -> None:
    """Every model tensor is saved with the same global shape (a readable error otherwise)."""
    saved = saved_shapes(metadata)
    problems = []
    for key, tensor in get_model_state_dict(parts.model).items():
        if key not in saved:
            problems.append(f"{key} missing")
        elif saved[key] != tuple(tensor.shape):
            problems.append(f"{key}: checkpoint {list(saved[key])}, model {list(tensor.shape)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model: {'; '.join(problems[:5])}"
            + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        )
