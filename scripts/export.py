"""Export a checkpoint: ``python scripts/export.py --checkpoint DIR --output DIR [--format hf|torch]
[--adapters-only] [--dtype bf16|fp32] [--overwrite] [--max-shard-size 5GB]``.

Merges W + s*B*A into dense weights and writes a Hugging Face LLaMA folder (or one torch
file); one process, no GPU, one tensor at a time. See trainer/export/run.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
