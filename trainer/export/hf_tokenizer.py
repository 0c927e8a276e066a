"""The run's tokenizer as a Hugging Face fast tokenizer (a ``tokenizers.Tokenizer``).

Each form encodes text to exactly the ids the run trained on (``Tokenizer.encode`` of
``trainer.data.tokenizer``, no special tokens added):

- ``byte``: a byte-level BPE without merges whose 256 base tokens are the bytes (byte ``b`` is
  id ``b``) plus the special token ``<|endoftext|>`` = 256 (the run's EOS).
- ``hf:``: the run's tokenizer.json, without a post-processor (the run never added BOS/EOS
  around a text; documents are only followed by EOS).
- ``sp:``: the SentencePiece model rebuilt by transformers' converter, which follows the
  model's own normalizer, dummy prefix and byte fallback; its control pieces are special.
"""

from __future__ import annotations

import json
from pathlib import Path

BYTE_EOS = "<|endoftext|>"
"""Text of the byte tokenizer's EOS (id 256) in the Hugging Face form."""


def byte_to_unicode() -> dict[int, str]:
    """The printable character that stands for each byte in byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer():
    """The built-in byte tokenizer (ids 0..255 = bytes, 256 = EOS) as a ``tokenizers.Tokenizer``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: b for b, char in byte_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(BYTE_EOS, special=True, normalized=False)])
    return tok


def tokenizer_json_without_post_processor(path: Path):
    """A run's tokenizer.json loaded with its post-processor (added BOS/EOS) removed."""
    from tokenizers import Tokenizer

    data = json.loads(path.read_text(encoding="utf-8"))
    data["post_processor"] = None
    return Tokenizer.from_str(json.dumps(data))


def sentencepiece_tokenizer(path: Path):
    """A SentencePiece ``.model`` converted to a ``tokenizers.Tokenizer`` with the same ids."""
    import importlib

    from tokenizers import AddedToken

    # transformers re-exports a function under the module's name, so import the module itself.
    convert = importlib.import_module("transformers.convert_slow_tokenizer")
    extractor = convert.SentencePieceExtractor(str(path))
    proto = extractor.proto
    if proto.trainer_spec.model_type == 1:  # unigram: pieces with their scores
        vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    else:
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    tok = convert.SpmConverter.build_tokenizer_from_spm_proto(proto=proto, vocab=vocab, legacy=True)
    control = [p.piece for p in proto.pieces if p.type in (2, 3)]  # UNKNOWN and CONTROL pieces
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in control])
    return tok
