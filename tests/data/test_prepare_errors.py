"""scripts/prepare_data.py: a bad input or an occupied output is one line and exit status 2."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/prepare_data.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.jsonl.gz"])
def test_non_utf8_input_names_the_file(tmp_path: Path, name: str) -> None:
    good = tmp_path / "good.txt"
    good.write_text("plain text\n" * 20)
    bad = tmp_path / name
    body = (
        '{"text": "caf\xe9"}\n'.encode("latin-1")
        if "jsonl" in name
        else "caf\xe9\n".encode("latin-1")
    )
    bad.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    out = tmp_path / "out"
    line = one_line_error(prepare("--input", str(good), str(bad), "--output", str(out)))
    assert line.startswith(f"data error: {bad}: not UTF-8 text"), line
    assert not (out / "meta.json").exists()


def test_existing_output_asks_for_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("some words\n" * 50)
    out = tmp_path / "out"
    assert prepare("--input", str(src), "--output", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = one_line_error(prepare("--input", str(src), "--output", str(out)))
    assert (
        line
        == f"data error: --output {out} already holds a shard folder; pass --overwrite to replace it"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = one_line_error(prepare("--input", str(src), "--output", str(mine)))
    assert (
        line == f"data error: --output {mine} already holds files; pass --overwrite to replace it"
    )
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert prepare("--input", str(src), "--output", str(out), "--overwrite").returncode == 0
