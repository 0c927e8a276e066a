"""lm-evaluation-harness on exports, offline, with two local tasks; agreement with evaluate.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.checkpoint.conftest import ROOT, STEPS
from trainer.data.embedded import load_embedded_documents
from trainer.evaluation import evaluate_files
from trainer.export import export_checkpoint

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason="lm-eval is not installed (pip install -e '.[eval]')",
)

SEQ_LEN = 32

ROLLING_TASK = """\
task: {name}
dataset_path: text
dataset_kwargs:
  data_files:
    test: {file}
  sample_by: document
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""

CHOICE_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

CHOICES = [
    {"question": "To be, or not to", "choices": [" be", " see", " qz"], "answer": 0},
    {"question": "My good lord,", "choices": [" I will", " 123 %%"], "answer": 0},
    {"question": "What say you", "choices": [" to this?", " xx yy zz"], "answer": 0},
]


def test_lm_eval_offline_on_exports_agrees_with_evaluate(reference, bpe_run, tmp_path):
    text = load_embedded_documents("embedded:shakespeare")[-1][-2500:] + "\nÜnïcödé 🙂 中文\n"
    text_file = tmp_path / "text.txt"
    text_file.write_text(text, encoding="utf-8")
    choice_file = tmp_path / "choice.jsonl"
    choice_file.write_text("".join(json.dumps(row) + "\n" for row in CHOICES))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_text.yaml").write_text(ROLLING_TASK.format(name="tiny_text", file=text_file))
    (tasks / "tiny_choice.yaml").write_text(
        CHOICE_TASK.format(name="tiny_choice", file=choice_file)
    )
    runs = {
        "byte": reference["dump"] / "checkpoints" / f"step-{STEPS}",
        "bpe": bpe_run["step"],
    }
    exports = {}
    for kind, step in runs.items():
        exports[kind] = tmp_path / f"hf-{kind}"
        export_checkpoint(step, exports[kind], log=lambda _: None)
    spec = [
        {
            "model": str(exports[kind]),
            "include_path": str(tasks),
            "tasks": ["tiny_text", "tiny_choice"],
            "max_length": SEQ_LEN,
        }
        for kind in runs
    ]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/checkpoint/lm_eval_run.py"), "spec.json", "out.json"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((tmp_path / "out.json").read_text())
    figures = {}
    for kind, found in zip(runs, results):
        rolling, choice = found["tiny_text"], found["tiny_choice"]
        assert all(math.isfinite(v) for v in [*rolling.values(), *choice.values()]), found
        assert 0 <= choice["acc"] <= 1 and choice["sample_len"] == len(CHOICES)
        ours = {}
        for model in (runs[kind], exports[kind]):  # checkpoint and export score alike
            ours = evaluate_files(model, [text_file], seq_len=SEQ_LEN, log=lambda _: None)
            ours = ours["files"][0]
            for metric in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
                assert ours[metric] == pytest.approx(rolling[metric], rel=0.01), (kind, metric)
        figures[kind] = (rolling["bits_per_byte"], ours["bits_per_byte"])
    print("bits per byte (lm-eval, evaluate.py):", figures)
