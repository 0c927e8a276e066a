"""The embedded Shakespeare corpus and its train/val split."""

from __future__ import annotations

import gzip

import pytest

from trainer.data.embedded import SHAKESPEARE_FILE, SHAKESPEARE_PLAYS, load_embedded_documents
from trainer.data.loader import build_data, build_val_loader


def test_corpus_file() -> None:
    text = gzip.decompress(SHAKESPEARE_FILE.read_bytes())
    assert len(text) == 1_036_482
    assert text.isascii()


def test_documents_are_plays() -> None:
    plays = load_embedded_documents("embedded:shakespeare")
    assert len(plays) == len(SHAKESPEARE_PLAYS) == 8
    assert plays[0].startswith("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare")
    assert plays[-1].startswith("A MIDSUMMER NIGHT'S DREAM")
    assert sum(len(p) for p in plays) + 2 * 7 + 1 == 1_036_482
    with pytest.raises(ValueError, match="embedded:nothing"):
        load_embedded_documents("embedded:nothing")


def test_embedded_split() -> None:
    bundle = build_data("embedded:shakespeare", "byte", 256, 8, 0, 1, seed=0)
    train, val = len(bundle.train.dataset), len(bundle.val_windows)
    n_tokens = 1_036_482 - 15 + 8  # joining blank lines dropped, one EOS per play
    assert train + val == n_tokens // 257
    assert val == round(n_tokens // 257 * 0.05) > 0
    assert len(list(build_val_loader(bundle, 8, 1, 2, max_batches=3))) == 3
    # the first training window of the stream starts the first play
    assert bytes(bundle.train.dataset[0][:6].tolist()) == b"HAMLET"
