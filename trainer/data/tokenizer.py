"""Tokenizers: a common interface plus byte-level, HF `tokenizers` and SentencePiece backends.

Every tokenizer exposes a ``name`` that identifies its vocabulary exactly ("byte", or the
backend plus a content hash of the model file). Shard folders record it in ``meta.json`` so
that data tokenized with one vocabulary is never trained with another.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

EXTRA_HINT = "install the optional extra: pip install -e '.[tokenizers]'"

# Candidate special tokens, tried in order when a tokenizer.json does not name them.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[EOS]")
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>", "<|bos|>", "[BOS]")


class Tokenizer(ABC):
    """Text <-> token ids. Ids are in ``[0, vocab_size)``; ``eos_id`` separates documents."""

    name: str
    vocab_size: int
    eos_id: int
    bos_id: int | None

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any special tokens added."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts; backends override this when they can parallelise."""
        return [self.encode(t) for t in texts]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255 and EOS = 256. Lossless, no dependency, vocab_size 257."""

    def __init__(self) -> None:
        self.name = "byte"
        self.vocab_size = 257
        self.eos_id = 256
        self.bos_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"byte tokenizer: id {i} outside [0, {self.vocab_size})")
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def file_digest(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file: the identity of a tokenizer model."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer.json file."""

    def __init__(self, path: str | Path, eos_token: str | None = None) -> None:
        try:
            from tokenizers import Tokenizer as _HFTokenizer
        except ImportError as e:
            raise ImportError(f"loading {path} needs the `tokenizers` package; {EXTRA_HINT}") from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
        self.path = path
        self.name = f"hf:{file_digest(path)}"
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eos = self._special_id((eos_token,) if eos_token else EOS_CANDIDATES)
        if eos is None:
            wanted = eos_token or " / ".join(EOS_CANDIDATES)
            raise ValueError(
                f"{path}: no end-of-text token in the vocabulary (looked for {wanted})"
            )
        self.eos_id = eos
        self.bos_id = self._special_id(BOS_CANDIDATES)

    def _special_id(self, candidates: Sequence[str]) -> int | None:
        for token in candidates:
            idx = self._tok.token_to_id(token)
            if idx is not None:
                return idx
        return None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model`` file (e.g. the LLaMA 32k BPE with byte fallback)."""

    def __init__(self, path: str | Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError as e:
            raise ImportError(
                f"loading {path} needs the `sentencepiece` package; {EXTRA_HINT}"
            ) from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:
            raise ValueError(f"{path} is not a valid SentencePiece model: {e}") from e
        self.path = path
        self.name = f"sp:{file_digest(path)}"
        self.vocab_size = self._sp.get_piece_size()
        if self._sp.eos_id() < 0:
            raise ValueError(f"{path}: the SentencePiece model defines no EOS piece")
        self.eos_id = self._sp.eos_id()
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))


def build_tokenizer(spec: str) -> Tokenizer:
    """Tokenizer from a spec: "byte", a tokenizer.json path, or a SentencePiece .model path."""
    if spec == "byte":
        return ByteTokenizer()
    if spec.endswith(".json"):
        return HFTokenizer(spec)
    if spec.endswith(".model"):
        return SentencePieceTokenizer(spec)
    raise ValueError(
        f"unknown tokenizer spec {spec!r}: use 'byte', a tokenizer.json path or a .model path"
    )
