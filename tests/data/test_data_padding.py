"""data.packing = "pad": one window per document; the loss skips the padding.

The references run the model on each document's unpadded tokens, one document at a time, and
average the cross-entropy over the real targets only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.data.padded import IGNORE_INDEX, PaddedDocuments
from trainer.train import build_trainer, evaluate, forward_backward

SEQ = 32
EOS = 256
WORDS = ["to", "be", "or", "not", "that", "is", "the", "question"]


def _docs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)  # lengths from 3 to ~70 bytes: padded and truncated
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))) for _ in range(n)]


def _unpadded(doc: str) -> list[int]:
    """The document's byte ids and EOS, cut to SEQ + 1 tokens: what pad mode trains on."""
    return [*doc.encode("utf-8"), EOS][: SEQ + 1]


def _reference_loss(model, docs: list[str]) -> float:
    total, count = 0.0, 0
    for doc in docs:
        ids = torch.tensor([_unpadded(doc)])
        logits = model(ids[:, :-1]).float()
        total += F.cross_entropy(logits[0], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return total / count


@pytest.fixture
def shards(tmp_path, prepare_data_cli):
    train_docs, val_docs = _docs(12, seed=0), _docs(6, seed=1)
    paths = []
    for name, docs in (("train", train_docs), ("val", val_docs)):
        path = tmp_path / f"{name}.txt"
        path.write_text("".join(d + "\n" for d in docs))
        paths.append(path)
    out = tmp_path / "shards"
    prepare_data_cli.main(
        ["--input", str(paths[0]), "--val-input", str(paths[1]), "--txt-lines",
         "--output", str(out), "--shard-tokens", "64"]
    )  # fmt: skip
    return out, train_docs, val_docs


def test_windows_are_documents_padded_with_the_ignore_index(shards):
    out, train_docs, _ = shards
    from trainer.data.shards import open_split, read_meta

    windows = PaddedDocuments(open_split(out, read_meta(out), "train"), EOS, SEQ)
    assert len(windows) == len(train_docs)  # documents span the 64-token shard files
    for i, doc in enumerate(train_docs):
        ids = _unpadded(doc)
        want = ids + [IGNORE_INDEX] * (SEQ + 1 - len(ids))
        assert windows[i].tolist() == want, i


def test_pad_mode_loss_counts_only_real_tokens(shards, tmp_path):
    out, train_docs, val_docs = shards
    cfg = parse_config(
        ["--config", str(ROOT / "configs/tiny_full.toml"), "--model.flavor", "debug",
         "--data.source", str(out), "--data.packing", "pad", "--training.seq_len", str(SEQ),
         "--training.global_batch_size", "4", "--training.val_batches", "0",
         "--checkpoint.enable", "False", "--metrics.tensorboard", "False",
         "--job.dump_folder", str(tmp_path / "run")]
    )  # fmt: skip
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        tr.model.eval()
        want_val = _reference_loss(tr.model, val_docs)
        want_train = _reference_loss(tr.model, train_docs[:4])
        batch = tr.data.train.collate_fn([tr.data.train.dataset[i] for i in range(4)])
        assert (batch["target"] == IGNORE_INDEX).any()  # there is padding to skip
        got_train = forward_backward(tr, [batch]).item()
        got_val = evaluate(tr)
    finally:
        shutdown()
    assert got_val == pytest.approx(want_val, rel=1e-5)
    assert got_train == pytest.approx(want_train, rel=1e-5)
