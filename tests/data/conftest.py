"""Shared fixtures of the data-pipeline tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from trainer.data.shards import ShardWriter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prepare_data_cli() -> ModuleType:
    """The scripts/prepare_data.py module, imported from its file."""
    name = "prepare_data_cli"
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "prepare_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _train_byte_bpe(path: Path, texts: list[str], vocab_size: int = 400) -> Path:
    """Train a tiny byte-level BPE with an <|endoftext|> token and save it to ``path``."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def train_bpe() -> Callable[..., Path]:
    """``train_bpe(path, texts, vocab_size=400)``: a tiny byte-level BPE tokenizer.json."""
    return _train_byte_bpe


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-tokenizer shard folder: 3 train shard files (~46 windows of 9 tokens), small val."""
    folder = tmp_path_factory.mktemp("tiny_shards")
    rng = np.random.default_rng(0)
    with ShardWriter(folder, "byte", 257, 256, shard_tokens=150) as w:
        for _ in range(20):
            w.add_document("train", rng.integers(0, 256, size=int(rng.integers(5, 40))))
        for _ in range(5):
            w.add_document("val", rng.integers(0, 256, size=20))
    return folder
