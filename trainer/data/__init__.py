"""Data pipeline: tokenizers, token shards, windows, resumable sampler and loaders."""

from trainer.data.loader import DataBundle, build_data, build_val_loader
from trainer.data.tokenizer import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    build_tokenizer,
)

__all__ = [
    "ByteTokenizer",
    "DataBundle",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_data",
    "build_tokenizer",
    "build_val_loader",
]
