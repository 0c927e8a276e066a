"""Unusable checkpoints and mismatched runs fail with clear errors and change no checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from tests.checkpoint.conftest import ROOT, STEPS, digest
from trainer.checkpoint import CheckpointError
from trainer.checkpoint.manifest import check_matches_run, method_record
from trainer.config import JobConfig
from trainer.export import export_checkpoint
from trainer.model.args import resolve_model_args


def error_of(probe, name: str) -> str:
    case = probe["results"][name]
    assert case["error"], f"{name} loaded without error"
    return case["error"]


def test_resume_with_other_model_or_method_is_refused(probe, reference):
    assert "model.dim: checkpoint 64, config 128" in error_of(probe, "resume_other_dim")
    assert "method.rank: checkpoint 8, config 4" in error_of(probe, "resume_other_rank")
    text = error_of(probe, "resume_other_method")
    assert "method.name: checkpoint 'switchlora', config 'full'" in text
    assert "initial_load_path" in text  # says what to do
    assert digest(reference["dump"] / "checkpoints") == reference["digest"]


def test_resume_from_corrupt_or_missing_checkpoint_is_refused(probe, reference):
    text = error_of(probe, "resume_corrupt")
    assert "is corrupt" in text and ".distcp has" in text
    assert digest(probe["corrupt"] / "checkpoints") == probe["corrupt_digest"]
    assert "step-5 does not exist" in error_of(probe, "resume_missing_step")
    assert digest(reference["dump"] / "checkpoints") == reference["digest"]


def test_initial_load_with_other_shapes_or_partial_folder_is_refused(probe, reference):
    text = error_of(probe, "init_other_layers")
    assert "does not fit the model" in text and "layers.2." in text
    text = error_of(probe, "init_partial")
    assert "is a partial save" in text
    assert digest(probe["partial"]) == probe["partial_digest"]
    assert digest(reference["dump"] / "checkpoints") == reference["digest"]


@pytest.fixture
def step8(reference, tmp_path):
    """A private copy of the reference's final checkpoint (tests may damage it)."""
    folder = tmp_path / "checkpoints" / f"step-{STEPS}"
    shutil.copytree(reference["dump"] / "checkpoints" / f"step-{STEPS}", folder)
    return folder


def refused(checkpoint, output, fragment: str, **kwargs) -> None:
    """Export must fail with ``fragment`` in the message and leave ``checkpoint`` as it was."""
    before = digest(checkpoint) if checkpoint.exists() else None
    with pytest.raises(CheckpointError, match=fragment):
        export_checkpoint(checkpoint, output, log=lambda _: None, **kwargs)
    if before is not None:
        assert digest(checkpoint) == before


def test_export_refuses_missing_partial_and_corrupt_checkpoints(step8, tmp_path):
    out = tmp_path / "out"
    refused(tmp_path / "nowhere", out, "does not exist")
    partial = step8.with_name(f"step-{STEPS}.partial")
    shutil.copytree(step8, partial)
    refused(partial, out, "partial save")
    (partial / ".metadata").unlink()
    partial = partial.rename(step8.with_name("step-99"))
    refused(partial, out, r"\.metadata missing")

    damaged = step8.with_name("step-98")
    shutil.copytree(step8, damaged)
    metadata = damaged / ".metadata"
    metadata.write_bytes(b"\0" * metadata.stat().st_size)  # same size, unreadable
    refused(damaged, out, r"file \.metadata does not match the checksum")

    for name, cut in (("step-97", 1), ("step-96", 0)):
        damaged = step8.with_name(name)
        shutil.copytree(step8, damaged)
        data = sorted(damaged.glob("*.distcp"))[0]
        raw = data.read_bytes()
        data.write_bytes(raw[:-cut] if cut else b"\x07" * len(raw))
        refused(damaged, out, "is corrupt: file" if cut else "does not match the checksum")
    assert not out.exists()


def test_export_refuses_manifest_that_disagrees_with_tensors(step8, tmp_path):
    manifest = json.loads((step8 / "manifest.json").read_text())
    manifest["model"]["dim"] = 128
    (step8 / "manifest.json").write_text(json.dumps(manifest))
    refused(step8, tmp_path / "out", "does not match the model in its manifest")


def test_export_output_exists_needs_overwrite_and_never_replaces_run_data(step8, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused(step8, out, "already exists; pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    refused(step8, out, "holds files this exporter did not write", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    exported = tmp_path / "exported"
    export_checkpoint(step8, exported, log=lambda _: None)
    (exported / "stale.txt").write_text("left by an earlier export")
    export_checkpoint(step8, exported, overwrite=True, log=lambda _: None)
    assert not (exported / "stale.txt").exists() and (exported / "model.safetensors").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    export_checkpoint(step8, empty, overwrite=True, log=lambda _: None)
    refused(step8, step8, "overlaps the checkpoint", overwrite=True)
    refused(step8, step8.parent.parent, "overlaps the checkpoint", overwrite=True)
    other_run = tmp_path / "other_run"
    shutil.copytree(step8.parent, other_run / "checkpoints")
    refused(step8, other_run, "refusing to replace it", overwrite=True)
    assert (other_run / "checkpoints" / step8.name / ".metadata").is_file()


def test_export_command_line_errors_exit_with_status_2(step8, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/export.py"),
            "--checkpoint",
            str(tmp_path / "no"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "checkpoint error: checkpoint folder" in proc.stderr


@pytest.mark.parametrize("flat", [False, True])
def test_resume_with_other_candidate_source_is_refused(tmp_path, flat):
    """switchlora.candidate_source must match, also in manifests that kept it under method."""
    cfg = JobConfig()
    cfg.method.name = "switchlora"
    args = resolve_model_args("debug", vocab_size=256, max_seq_len=64)
    saved = method_record(cfg)
    if flat:  # the record before the [switchlora] section
        saved.update(saved.pop("switchlora"))
    manifest = {"model": dataclasses.asdict(args), "method": saved, "adapter_scales": {}}
    check_matches_run(tmp_path, manifest, cfg, args, {})
    cfg.switchlora.candidate_source = "seeded"
    with pytest.raises(CheckpointError) as err:
        check_matches_run(tmp_path, manifest, cfg, args, {})
    assert "switchlora.candidate_source: checkpoint 'pool', config 'seeded'" in str(err.value)
