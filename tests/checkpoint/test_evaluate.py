"""scripts/evaluate.py: windows, figures and inputs, checked against plain transformers/torch."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.checkpoint.conftest import STEPS
from trainer.data.shards import ShardWriter
from trainer.evaluation import evaluate_files
from trainer.evaluation.run import main as evaluate_main
from trainer.evaluation.windows import rolling_windows
from trainer.export import export_checkpoint

transformers = pytest.importorskip("transformers")

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcödé 🙂 中文\n" * 3


@pytest.fixture(scope="module")
def byte_export(reference, tmp_path_factory):
    step = reference["dump"] / "checkpoints" / f"step-{STEPS}"
    out = tmp_path_factory.mktemp("eval") / "hf"
    export_checkpoint(step, out, log=lambda _: None)
    return {"step": step, "export": out}


def test_rolling_windows_predict_every_token_once():
    ids = list(range(10, 20))
    assert rolling_windows(ids, 99, 4) == [
        ([99, 10, 11, 12], [10, 11, 12, 13], 4),
        ([13, 14, 15, 16], [14, 15, 16, 17], 4),
        ([15, 16, 17, 18], [16, 17, 18, 19], 2),  # full context, last two scored
    ]
    assert rolling_windows([], 99, 4) == []
    assert rolling_windows([5], 99, 1) == [([99], [5], 1)]
    assert rolling_windows([5, 6], 99, 4) == [([99, 5], [5, 6], 2)]


def test_rolling_windows_match_lm_eval():
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval not installed (extra 'eval')")
    for n, seq_len in ((1, 4), (7, 4), (8, 4), (9, 4), (30, 7), (5, 16)):
        ids = list(range(100, 100 + n))
        theirs = [
            utils.make_disjoint_window(w)
            for w in utils.get_rolling_token_windows(ids, 99, seq_len, 1)
        ]
        # lm-eval feeds (context + continuation)[-(seq_len + 1):][:-1] and scores the continuation
        fed = [((c + p)[-(seq_len + 1) :][:-1], p) for c, p in theirs]
        ours = [(x, y[-k:]) for x, y, k in rolling_windows(ids, 99, seq_len)]
        assert ours == fed


def plain_bits_per_byte(folder, text: str, seq_len: int) -> float:
    """Independent reference: transformers' model, chunks of seq_len predicted tokens, each
    fed with the one token before it; bytes counted by Python."""
    model = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    ids = list(text.encode("utf-8"))
    stream = torch.tensor([256, *ids])
    nll = 0.0
    with torch.no_grad():
        for k in range(0, len(ids), seq_len):
            end = min(k + seq_len, len(ids))  # predict ids[k:end] with a full window ending there
            first = max(0, end - seq_len)
            logits = model(stream[first:end][None]).logits[0].double()
            target = stream[first + 1 : end + 1]
            scored = logits.log_softmax(-1).gather(1, target[:, None])[-(end - k) :]
            nll -= scored.sum().item()
    return nll / math.log(2) / len(text.encode("utf-8"))


def test_bits_per_byte_matches_plain_reference_checkpoint_and_export(byte_export, tmp_path):
    text_file = tmp_path / "a.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    want = plain_bits_per_byte(byte_export["export"], TEXT, 16)
    for model in (byte_export["step"], byte_export["export"]):
        result = evaluate_files(model, [text_file], seq_len=16, batch_size=3, log=lambda _: None)
        got = result["files"][0]
        assert result["seq_len"] == 16 and got["bytes"] == len(TEXT.encode("utf-8"))
        assert got["tokens"] == got["bytes"]  # byte tokenizer
        assert got["bits_per_byte"] == pytest.approx(want, rel=1e-5)
        assert got["byte_perplexity"] == pytest.approx(2**want, rel=1e-5)
        assert got["loss"] == pytest.approx(got["nll"] / got["tokens"])
        assert got["words"] == len(TEXT.split()) + 1  # re.split keeps the empty tail
        assert got["word_perplexity"] == pytest.approx(math.exp(got["nll"] / got["words"]))


def test_jsonl_shards_output_and_errors(byte_export, tmp_path, capsys):
    docs = ["To be, or not to be", "that is the question", "Ünïcödé 🙂"]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    shards = tmp_path / "shards"
    with ShardWriter(shards, "byte", 257, 256) as writer:
        writer.add_document("train", list(b"unused"))
        for d in docs:
            writer.add_document("val", list(d.encode("utf-8")))
    out = tmp_path / "result.json"
    code = evaluate_main(
        [
            "--model",
            str(byte_export["step"]),
            "--data",
            str(jsonl),
            str(shards),
            "--seq-len",
            "8",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{jsonl}: 3 documents")
    result = json.loads(out.read_text())
    a, b = result["files"]
    assert a["bytes"] == sum(len(d.encode("utf-8")) for d in docs) == b["bytes"]
    assert a["nll"] == pytest.approx(b["nll"], rel=1e-6)  # same documents, same windows
    # one document scored alone: summed token NLL with the EOS prefix, plain torch
    model = transformers.LlamaForCausalLM.from_pretrained(byte_export["export"]).eval()
    ids = torch.tensor([256, *docs[0].encode("utf-8")])  # 19 bytes: chunks 8 + 8 + 3
    with torch.no_grad():
        parts = [
            F.cross_entropy(
                model(ids[k : k + 8][None]).logits[0], ids[k + 1 : k + 9], reduction="sum"
            )
            for k in (0, 8)
        ]
        last = F.cross_entropy(model(ids[11:19][None]).logits[0], ids[12:20], reduction="none")
    parts.append(last[-3:].sum())
    single = evaluate_files(byte_export["export"], [_jsonl(tmp_path, docs[:1])], seq_len=8)
    assert single["files"][0]["nll"] == pytest.approx(sum(p.item() for p in parts), rel=1e-5)

    other = tmp_path / "other"
    with ShardWriter(other, "hf:0123456789abcdef", 300, 0) as writer:
        writer.add_document("train", [1, 2])
        writer.add_document("val", [1, 2])
    for argv, needle in (
        (["--data", str(other)], "shards were written with tokenizer hf:0123456789abcdef"),
        (["--data", str(tmp_path / "missing.txt")], "does not exist"),
        (["--data", str(jsonl), "--seq-len", "0"], "--seq-len must be >= 1"),
    ):
        capsys.readouterr()
        assert evaluate_main(["--model", str(byte_export["step"]), *argv]) == 2
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if "error" in line]
        assert len(err) == 1 and needle in err[0] and "Traceback" not in captured.err, err


def _jsonl(folder, docs):
    path = folder / "single.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path
