"""scripts/train.py with non-finite gradients injected: ``nonfinite_run.py CALLS -- ARGS``.

CALLS is a comma list of 1-based calls of :func:`trainer.train.forward_backward` after which
every gradient is multiplied by NaN; ``N+`` means the N-th call and every later one. Used by
test_nonfinite.py to drive the real training loop into skipped steps and the stop.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


import trainer.train as train_module  # noqa: E402

spec, _, *args = sys.argv[1:]
exact = {int(c) for c in spec.split(",") if not c.endswith("+")}
starts = [int(c[:-1]) for c in spec.split(",") if c.endswith("+")]
original = train_module.forward_backward
calls = 0


def poisoned_forward_backward(tr, batches):
    global calls
    calls += 1
    loss = original(tr, batches)
    if calls in exact or any(calls >= s for s in starts):
        for p in tr.model.parameters():
            if p.grad is not None:
                p.grad.mul_(float("nan"))
    return loss


train_module.forward_backward = poisoned_forward_backward
sys.argv = [str(ROOT / "scripts/train.py"), *args]
sys.path.insert(0, str(ROOT / "scripts"))
import train as train_script  # noqa: E402

sys.exit(train_script.main())
