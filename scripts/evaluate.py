"""Perplexity and bits per byte: ``python scripts/evaluate.py --model CKPT_OR_EXPORT --data FILE...
[--seq-len N] [--output result.json]``.

Bits per byte = (sum of the tokens' negative log-likelihood in nats) / ln 2 / (UTF-8 bytes of
the text). See trainer/evaluation/run.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.evaluation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
