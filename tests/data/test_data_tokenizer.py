"""Tokenizers: byte round trip, spec parsing, HF and SentencePiece backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.tokenizer import ByteTokenizer, HFTokenizer, build_tokenizer

SAMPLE = "To be, or not to be: that is the question.\n\tÜnïcödé — 日本語 🙂\n"


def test_byte_round_trip() -> None:
    tok = ByteTokenizer()
    ids = tok.encode(SAMPLE)
    assert ids == list(SAMPLE.encode("utf-8"))
    assert max(ids) < 256
    assert tok.decode(ids) == SAMPLE
    assert tok.decode(ids + [tok.eos_id]) == SAMPLE
    assert (tok.vocab_size, tok.eos_id, tok.bos_id, tok.name) == (257, 256, None, "byte")
    assert tok.encode_batch(["ab", ""]) == [[97, 98], []]


def test_byte_decode_rejects_bad_id() -> None:
    with pytest.raises(ValueError, match="257"):
        ByteTokenizer().decode([1, 257])


def test_build_tokenizer_specs(tmp_path: Path) -> None:
    assert isinstance(build_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer spec"):
        build_tokenizer("gpt2")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        build_tokenizer(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    pytest.importorskip("tokenizers")
    with pytest.raises(ValueError, match="bad.json"):
        build_tokenizer(str(bad))


def test_hf_tokenizer_round_trip(tmp_path: Path, train_bpe) -> None:
    path = train_bpe(tmp_path / "tokenizer.json", [SAMPLE * 20, "the cat sat on the mat"])
    tok = build_tokenizer(str(path))
    assert isinstance(tok, HFTokenizer)
    assert tok.eos_id == 0 and tok.name.startswith("hf:")
    ids = tok.encode(SAMPLE)
    assert len(ids) < len(SAMPLE.encode("utf-8"))
    assert tok.decode(ids) == SAMPLE
    assert tok.encode_batch([SAMPLE, "cat"]) == [ids, tok.encode("cat")]


def test_hf_tokenizer_without_eos(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models

    path = tmp_path / "noeos.json"
    tokenizers.Tokenizer(models.BPE()).save(str(path))
    with pytest.raises(ValueError, match="no end-of-text token"):
        HFTokenizer(path)


def test_sentencepiece_round_trip(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((SAMPLE + "the quick brown fox jumps over the lazy dog\n") * 50)
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=400,
        model_type="bpe",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        user_defined_symbols=["\n"],
        byte_fallback=True,
        minloglevel=2,
    )
    tok = build_tokenizer(str(tmp_path / "sp.model"))
    assert tok.name.startswith("sp:") and tok.eos_id >= 0
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
