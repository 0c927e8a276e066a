"""Worker: one token-budget evaluation; rank 0 writes {loss_sum, tokens} to the JSON path.

Usage: val_budget_worker.py OUT.json BUDGET <trainer config args...>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from parallel.distributed import init_distributed, shutdown
from trainer.cli import parse_config
from trainer.train import build_trainer, evaluation_sums


def main() -> None:
    out, budget, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    info = init_distributed()
    try:
        tr = build_trainer(parse_config(args), info)
        loss_sum, tokens = evaluation_sums(tr, budget)
        if info.is_main:
            out.write_text(json.dumps({"loss_sum": loss_sum, "tokens": tokens}))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
