"""Nothing runs from a checkpoint file, damage is caught before loading, NaN is never saved.

Crafted files imitate an attacker who rewrites a checkpoint folder including its manifest
(so the checksums match): a pickle in DCP's ``.metadata`` or in one of the project's own
entries whose unpickling would create a marker file. Damaged files imitate bit rot: same
size, 4 KiB of random or zeroed bytes in the middle of a tensor data file, manifest left as
written. Single-process cases go through tests/checkpoint/probe.py in one process; the
2-process command line is launched for the one-line message, load_step and rank 1's entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.checkpoint.conftest import (
    HALF,
    ROOT,
    STEPS,
    SWITCH,
    check_ok,
    digest,
    launch,
    train_losses,
)
from trainer.checkpoint import CheckpointError
from trainer.checkpoint.checksum import file_checksum
from trainer.checkpoint.dcp_index import read_metadata
from trainer.checkpoint.manifest import check_matches_run, model_args_of, read_manifest
from trainer.cli import parse_config
from trainer.export import export_checkpoint


class MakesMarker:
    """Unpickling this calls ``open(path, "w")``, creating the marker file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def reseal(folder: Path, *names: str) -> None:
    """Record the current size and checksum of ``names`` in the manifest (as an attacker would)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = (folder / name).stat().st_size
        manifest["checksums"][name] = file_checksum(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def craft_metadata(folder: Path, marker: Path) -> None:
    """Replace ``.metadata`` by a marker-making pickle padded to the same size."""
    path = folder / ".metadata"
    size = path.stat().st_size
    payload = pickle.dumps(MakesMarker(marker))
    path.write_bytes(payload + b" " * max(0, size - len(payload)))  # bytes after STOP are ignored
    reseal(folder, ".metadata")


def craft_entry(folder: Path, key: str, marker: Path) -> None:
    """Point entry ``key`` at a torch.save of a marker-making object appended to its file."""
    metadata = read_metadata(folder)
    index = next(i for i in metadata.storage_data if i.fqn == key)
    info = metadata.storage_data[index]
    data = folder / info.relative_path
    payload_file = folder / "payload.tmp"
    torch.save(MakesMarker(marker), payload_file)
    payload = payload_file.read_bytes()
    payload_file.unlink()
    offset = data.stat().st_size
    with open(data, "ab") as fh:
        fh.write(payload)
    metadata.storage_data[index] = dataclasses.replace(info, offset=offset, length=len(payload))
    metadata.storage_meta = None
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    reseal(folder, ".metadata", info.relative_path)


def damage(folder: Path, how: str) -> str:
    """Overwrite 4 KiB in the middle of the largest data file (size unchanged); its name."""
    data = max(folder.glob("*.distcp"), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = os.urandom(4096) if how == "random" else bytes(4096)
    data.write_bytes(bytes(raw))
    return data.name


@pytest.fixture(scope="module")
def crafted(reference, tmp_path_factory) -> dict:
    """Copies of the reference run, each with one crafted or damaged step-8, probed once."""
    base = tmp_path_factory.mktemp("crafted")
    markers = base / "markers"
    markers.mkdir()
    dumps = {}
    for name in (
        "metadata",
        "progress",
        "rank0",
        "random",
        "zeroed",
        "poison",
    ):
        dumps[name] = base / name
        shutil.copytree(reference["dump"], dumps[name])
    step = f"checkpoints/step-{STEPS}"
    craft_metadata(dumps["metadata"] / step, markers / "metadata")
    craft_entry(dumps["progress"] / step, "train.progress", markers / "progress")
    craft_entry(dumps["rank0"] / step, "per_rank.rank_0", markers / "rank0")
    damaged = {how: damage(dumps[how] / step, how) for how in ("random", "zeroed")}
    digests = {name: digest(dump / "checkpoints") for name, dump in dumps.items()}
    flags = [*SWITCH, "--job.dump_folder"]
    cases = [
        {"name": "resume_metadata", "args": [*flags, str(dumps["metadata"])]},
        {
            "name": "init_metadata",
            "args": [
                *flags,
                str(base / "i1"),
                "--checkpoint.initial_load_path",
                str(dumps["metadata"] / step),
            ],
        },
        {"name": "resume_progress", "args": [*flags, str(dumps["progress"])]},
        {"name": "resume_rank0", "args": [*flags, str(dumps["rank0"])]},
        {
            "name": "init_full_rank0",
            "args": [
                *flags,
                str(base / "i2"),
                "--checkpoint.initial_load_path",
                str(dumps["rank0"] / step),
                "--checkpoint.initial_load_model_only",
                "False",
            ],
        },
        {"name": "resume_random", "args": [*flags, str(dumps["random"])]},
        {"name": "resume_zeroed", "args": [*flags, str(dumps["zeroed"])]},
        {
            "name": "init_zeroed",
            "args": [
                *flags,
                str(base / "i3"),
                "--checkpoint.initial_load_path",
                str(dumps["zeroed"] / step),
            ],
        },
        {
            "name": "resume_zeroed_load_step",
            "args": [*flags, str(dumps["zeroed"]), "--checkpoint.load_step", str(HALF)],
        },
        {
            "name": "resume_other_seq_len",
            "args": [*flags, str(reference["dump"]), "--training.seq_len", "32"],
        },
        {
            "name": "save_nan",
            "args": [*flags, str(dumps["poison"])],
            "save_to": str(dumps["poison"]),
            "poison": True,
        },
    ]
    spec = base / "spec.json"
    spec.write_text(json.dumps(cases))
    result = base / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/checkpoint/probe.py"), str(spec), str(result)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    check_ok(proc)
    return {
        "results": json.loads(result.read_text()),
        "dumps": dumps,
        "digests": digests,
        "markers": markers,
        "damaged": damaged,
        "base": base,
    }


def error_of(crafted, name: str) -> str:
    case = crafted["results"][name]
    assert case["error"], f"{name} loaded without error"
    assert "\n" not in case["error"]
    return case["error"]


def unchanged(crafted, *names: str) -> None:
    for name in names:
        assert digest(crafted["dumps"][name] / "checkpoints") == crafted["digests"][name], name


def test_crafted_pickles_run_nothing_on_resume_or_initial_load(crafted):
    step8 = f"step-{STEPS}"
    for case in ("resume_metadata", "init_metadata"):
        text = error_of(crafted, case)
        assert f"{step8}/.metadata is not a DCP index" in text and "io.open" in text
    for case, key in (
        ("resume_progress", "train.progress"),
        ("resume_rank0", "per_rank.rank_0"),
        ("init_full_rank0", "per_rank.rank_0"),
    ):
        text = error_of(crafted, case)
        assert f"entry {key} is not plain data" in text and step8 in text, text
    assert list(crafted["markers"].iterdir()) == []
    unchanged(crafted, "metadata", "progress", "rank0")


def test_crafted_metadata_runs_nothing_on_export(crafted, tmp_path):
    folder = crafted["dumps"]["metadata"] / "checkpoints" / f"step-{STEPS}"
    with pytest.raises(CheckpointError, match=r"\.metadata is not a DCP index"):
        export_checkpoint(folder, tmp_path / "out", log=lambda _: None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/export.py"), "--checkpoint", str(folder)]
        + ["--output", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("checkpoint error: ")
    assert list(crafted["markers"].iterdir()) == []
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
    unchanged(crafted, "metadata")


@pytest.mark.parametrize("how", ["random", "zeroed"])
def test_same_size_damage_is_refused_on_resume_and_export_naming_the_good_one(
    crafted, how, tmp_path
):
    name = crafted["damaged"][how]
    text = error_of(crafted, f"resume_{how}")
    assert f"step-{STEPS} is damaged: file {name} does not match the checksum" in text
    assert f"step-{HALF}: resume from it with --checkpoint.load_step {HALF}" in text
    assert "nothing was loaded" in text
    folder = crafted["dumps"][how] / "checkpoints" / f"step-{STEPS}"
    with pytest.raises(CheckpointError, match=f"file {name} does not match") as info:
        export_checkpoint(folder, tmp_path / "out", log=lambda _: None)
    assert f"export it with --checkpoint {folder.with_name(f'step-{HALF}')}" in str(info.value)
    assert not (tmp_path / "out").exists()
    unchanged(crafted, how)


def test_damage_is_refused_on_initial_load_and_load_step_selects_the_older(crafted):
    text = error_of(crafted, "init_zeroed")
    assert "does not match the checksum" in text and "--checkpoint.initial_load_path" in text
    assert crafted["results"]["resume_zeroed_load_step"] == {
        "step": HALF,
        "val_loss": None,
        "error": None,
    }


def test_non_finite_state_is_never_saved(crafted):
    text = error_of(crafted, "save_nan")
    assert f"refusing to save the checkpoint of step {STEPS + 1}" in text
    assert "holds NaN or Inf" in text and "model." in text
    unchanged(crafted, "poison")
    assert not list((crafted["dumps"]["poison"] / "checkpoints").glob("*.partial"))


def test_resume_with_other_data_order_names_the_field(crafted, reference):
    text = error_of(crafted, "resume_other_seq_len")
    assert "training.seq_len: checkpoint 64, config 32" in text
    folder = reference["dump"] / "checkpoints" / f"step-{STEPS}"
    manifest = read_manifest(folder)
    base = parse_config([*SWITCH, "--job.dump_folder", str(reference["dump"])])
    args = model_args_of(manifest)
    scales = manifest["adapter_scales"]
    check_matches_run(folder, manifest, base, args, scales)  # the run as written fits
    for section, field, value, shown in (
        ("job", "seed", 7, "job.seed: checkpoint 0, config 7"),
        (
            "training",
            "global_batch_size",
            16,
            "training.global_batch_size: checkpoint 8, config 16",
        ),
        (
            "data",
            "source",
            "/elsewhere/shards",
            "data.source: checkpoint 'embedded:shakespeare', config '/elsewhere/shards'",
        ),
    ):
        changed = dataclasses.replace(
            base, **{section: dataclasses.replace(getattr(base, section), **{field: value})}
        )
        with pytest.raises(CheckpointError, match=shown):
            check_matches_run(folder, manifest, changed, args, scales)


def test_command_line_refuses_damage_in_one_line_then_load_step_continues(crafted, reference):
    dump = crafted["base"] / "cli_random"
    shutil.copytree(crafted["dumps"]["random"], dump)
    args = [*SWITCH, "--checkpoint.interval", str(HALF), "--job.dump_folder", str(dump)]
    before = digest(dump / "checkpoints")
    proc = launch(args, nproc=1)  # torchrun adds its own report; the script's line is the same
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("checkpoint error: ")
    assert f"--checkpoint.load_step {HALF}" in proc.stderr
    assert digest(dump / "checkpoints") == before

    out = check_ok(launch([*args, "--checkpoint.load_step", str(HALF)]))
    assert f"resumed from {dump / 'checkpoints' / f'step-{HALF}'}" in out
    ref, got = train_losses(reference["dump"]), train_losses(dump)
    for step in range(HALF + 1, STEPS + 1):
        assert got[step] == ref[step], step
    older = f"step-{HALF}/"
    kept = {k: v for k, v in digest(dump / "checkpoints").items() if k.startswith(older)}
    assert kept == {k: v for k, v in reference["digest"].items() if k.startswith(older)}
    manifest = read_manifest(dump / "checkpoints" / f"step-{STEPS}")
    assert all(
        file_checksum(dump / "checkpoints" / f"step-{STEPS}" / n) == c
        for n, c in manifest["checksums"].items()
    )


def test_crafted_rank1_entry_runs_nothing_on_two_processes(crafted, reference):
    dump = crafted["base"] / "rank1"
    shutil.copytree(reference["dump"], dump)
    marker = crafted["markers"] / "rank1"
    craft_entry(dump / "checkpoints" / f"step-{STEPS}", "per_rank.rank_1", marker)
    proc = launch([*SWITCH, "--job.dump_folder", str(dump)])
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if "per_rank.rank_1" in line]
    assert ours and all(line.startswith("checkpoint error: ") for line in ours), proc.stderr
    assert "not plain data (it asks to run code or build objects: GLOBAL io.open)" in ours[0]
    assert 'scripts/train.py", line' not in proc.stderr  # no traceback from the training script
    assert not marker.exists()
