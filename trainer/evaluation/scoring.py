"""Summed negative log-likelihood of documents, and the figures derived from it.

Definitions (all sums run over every scored document of a file):

- ``nll``: sum over every token of the documents of -ln p(token | preceding tokens of its
  window), in nats (see ``trainer.evaluation.windows`` for the windows);
- ``loss = nll / tokens`` and ``perplexity = exp(loss)``: per token, so they depend on the
  tokenizer;
- ``bits_per_byte = nll / ln 2 / bytes``, where ``bytes`` is the number of UTF-8 bytes of the
  documents' text: the same for every tokenizer, so runs with different tokenizers compare;
  ``byte_perplexity = 2 ** bits_per_byte``;
- ``word_perplexity = exp(nll / words)``, words counted as ``len(re.split(r"\\s+", text))``.

These are lm-evaluation-harness' ``bits_per_byte``, ``byte_perplexity`` and
``word_perplexity`` of a ``loglikelihood_rolling`` task, computed the same way.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from trainer.evaluation.documents import Document
from trainer.evaluation.models import ScoredModel
from trainer.evaluation.windows import Window, rolling_windows


@dataclass
class Score:
    """Sums over the documents of one file, and the figures derived from them."""

    documents: int
    tokens: int
    bytes: int
    words: int
    nll: float
    """Summed negative log-likelihood in nats."""

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / max(self.bytes, 1)

    @property
    def byte_perplexity(self) -> float:
        return 2.0**self.bits_per_byte

    @property
    def word_perplexity(self) -> float:
        return math.exp(self.nll / max(self.words, 1))

    def to_json(self) -> dict[str, float | int]:
        derived = ("loss", "perplexity", "bits_per_byte", "byte_perplexity", "word_perplexity")
        return {**asdict(self), **{k: getattr(self, k) for k in derived}}


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word_perplexity."""
    return len(re.split(r"\s+", text))


@torch.no_grad()
def score_documents(
    model: ScoredModel,
    documents: list[Document],
    seq_len: int,
    batch_size: int,
    device: torch.device,
) -> Score:
    """Score every token of ``documents`` once, in rolling windows of ``seq_len`` tokens."""
    by_length: dict[int, list[Window]] = defaultdict(list)
    for doc in documents:
        for window in rolling_windows(doc.ids, model.prefix_id, seq_len):
            by_length[len(window[0])].append(window)
    nll = 0.0
    for windows in by_length.values():  # equal lengths batch without padding
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            inputs = torch.tensor([w[0] for w in chunk], device=device)
            targets = torch.tensor([w[1] for w in chunk], device=device)
            logits = model.logits(inputs).float()
            token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            for row, (_, _, scored) in enumerate(chunk):
                nll += token_nll[row, -scored:].double().sum().item()
    return Score(
        documents=len(documents),
        tokens=sum(len(d.ids) for d in documents),
        bytes=sum(len(d.text.encode("utf-8")) for d in documents),
        words=sum(count_words(d.text) for d in documents),
        nll=nll,
    )
