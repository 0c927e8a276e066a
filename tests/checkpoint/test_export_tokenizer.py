"""The export carries the run's tokenizer: Auto classes load it, ids match the run, generate runs.

References are independent of the project's tokenizer code: the UTF-8 bytes themselves for
the byte tokenizer, the ``tokenizers`` / ``sentencepiece`` libraries on the checkpoint's copy
of the tokenizer file for the BPE and SentencePiece runs.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.checkpoint.conftest import STEPS, launch
from trainer.checkpoint.tokenizer_copy import saved_tokenizer_file, tokenizer_record
from trainer.errors import CheckpointError, DataError
from trainer.export import export_checkpoint
from trainer.export.run import main as export_main

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TEXT = (
    "To be, or not to be: that is the question.\n"
    "Whether 'tis nobler in the mind to suffer\tthe slings  and arrows\r\n"
    "accents éàüß, CJK 中文字, emoji 🙂👍🏽, zero\x00byte, the text <|endoftext|> and </s>\n"
)


def reference_ids(kind: str, copy, text: str) -> list[int]:
    """The run's ids of ``text`` from an independent implementation."""
    if kind == "byte":
        return list(text.encode("utf-8"))
    if kind == "bpe":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(copy)).encode(text, add_special_tokens=False).ids
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(copy)).encode(text)


@pytest.fixture(scope="module", params=["byte", "bpe", "sp"])
def run(request, reference) -> dict:
    """(kind, checkpoint) of a byte, a BPE and a SentencePiece SwitchLoRA run."""
    if request.param == "byte":
        return {"kind": "byte", "step": reference["dump"] / "checkpoints" / f"step-{STEPS}"}
    fixture = request.getfixturevalue("bpe_run" if request.param == "bpe" else "sp_run")
    return {"kind": request.param, **fixture}


def test_export_loads_with_auto_classes_round_trips_and_generates(run, tmp_path):
    out = tmp_path / "hf"
    names = {f.name for f in export_checkpoint(run["step"], out, log=lambda _: None)}
    assert {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    } <= names
    manifest = json.loads((run["step"] / "manifest.json").read_text())
    eos_id = manifest["tokenizer"]["eos_id"]
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, transformers.LlamaForCausalLM)
    assert tok.eos_token_id == eos_id and tok.pad_token_id == eos_id and tok.bos_token_id is None
    assert model.generation_config.eos_token_id == eos_id
    assert tok.model_max_length == model.config.max_position_embeddings == 64
    if run["kind"] == "byte":
        assert eos_id == 256 and tok.eos_token == "<|endoftext|>"
    copy = saved_tokenizer_file(run["step"], manifest)
    want = reference_ids(run["kind"], copy, TEXT)
    assert tok(TEXT, add_special_tokens=False)["input_ids"] == want
    assert tok(TEXT)["input_ids"] == want  # nothing added around a text, as in training
    decoded = tok.decode(want)
    if run["kind"] == "sp":  # SentencePiece normalizes (\r\n, NFKC): compare with its own decode
        import sentencepiece as spm

        assert decoded == spm.SentencePieceProcessor(model_file=str(copy)).decode(want)
    else:
        assert decoded == TEXT
    batch = tok(["To be, or not", "My lord"], return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 6)
    assert (generated[:, -6:] < model.config.vocab_size).all()
    classifier = transformers.LlamaForSequenceClassification.from_pretrained(out, num_labels=3)
    assert classifier(**batch).logits.shape == (2, 3)


def test_byte_tokenizer_maps_every_byte_to_itself(reference, tmp_path):
    step = reference["dump"] / "checkpoints" / f"step-{STEPS}"
    export_checkpoint(step, tmp_path / "hf", log=lambda _: None)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "".join(chr(c) for c in range(0x2000)) + "".join(chr(c) for c in range(0x1F600, 0x1F650))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert len(tok) == 257 and tok.convert_ids_to_tokens(256) == "<|endoftext|>"
    assert tok.decode([*ids, 256], skip_special_tokens=True) == text


def test_checkpoint_keeps_a_hash_checked_copy(bpe_run, sp_run):
    for run, file, prefix in (
        (bpe_run, "tokenizer.json", "hf:"),
        (sp_run, "tokenizer.model", "sp:"),
    ):
        assert not run["original"].exists()
        manifest = json.loads((run["step"] / "manifest.json").read_text())
        record = manifest["tokenizer"]
        assert record["file"] == file and record["name"].startswith(prefix)
        assert (run["step"] / file).read_bytes() == run["moved"].read_bytes()
        assert manifest["files"][file] == run["moved"].stat().st_size


def test_changed_or_corrupt_tokenizer_is_refused(bpe_run, tmp_path, capsys):
    name = json.loads((bpe_run["step"] / "manifest.json").read_text())["tokenizer"]["name"]
    edited = tmp_path / "tokenizer.json"
    edited.write_bytes(bpe_run["moved"].read_bytes() + b" ")
    with pytest.raises(DataError, match="has changed since the run started"):
        tokenizer_record(str(edited), name, 0, tmp_path, copy=True)
    assert tokenizer_record(str(bpe_run["moved"]), name, 0, tmp_path, copy=True)["file"] == (
        "tokenizer.json"
    )
    broken = tmp_path / "ckpt"
    shutil.copytree(bpe_run["step"], broken)
    copy = broken / "tokenizer.json"
    data = bytearray(copy.read_bytes())
    data[10] ^= 1  # same size, other content
    copy.write_bytes(bytes(data))
    manifest = json.loads((broken / "manifest.json").read_text())
    with pytest.raises(CheckpointError, match="the copy is corrupt"):
        saved_tokenizer_file(broken, manifest)
    assert export_main(["--checkpoint", str(broken), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The export's checksum verification sees the damaged copy first and names it.
    assert len(err) == 1 and "file tokenizer.json does not match" in err[0], err
    assert not (tmp_path / "out").exists()


def test_resume_with_another_tokenizer_is_refused(bpe_run, tmp_path):
    dump = tmp_path / "dump"
    shutil.copytree(bpe_run["dump"], dump)
    before = sorted(p.name for p in (dump / "checkpoints").iterdir())
    proc = launch(
        [
            "--config",
            "configs/tiny_switch.toml",
            "--model.flavor",
            "debug",
            "--method.rank",
            "8",
            "--training.seq_len",
            "64",
            "--training.global_batch_size",
            "8",
            "--training.steps",
            "8",
            "--checkpoint.enable",
            "True",
            "--job.dump_folder",
            str(dump),
        ],
        nproc=1,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert lines == [lines[0]] and lines[0].startswith("data error: checkpoint")
    assert "trained with tokenizer hf:" in lines[0] and "uses byte" in lines[0]
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == before
