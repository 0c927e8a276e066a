"""Train a LLaMA model: ``torchrun --nproc_per_node=N scripts/train.py --config FILE [--section.field VALUE ...]``.

Also runs as a single process with plain ``python scripts/train.py --config FILE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.cli import parse_config  # noqa: E402
from trainer.errors import InputError  # noqa: E402
from trainer.train import NonFiniteError, run  # noqa: E402


def main() -> int:
    try:
        cfg = parse_config(sys.argv[1:])
        run(cfg)
    except InputError as exc:
        print(f"{exc.kind} error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
