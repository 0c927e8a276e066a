"""Run lm-evaluation-harness' Python API on an export, offline: ``python lm_eval_run.py SPEC OUT``.

SPEC is a JSON list of {"model": export folder, "include_path": task folder, "tasks": [...],
"max_length": N}; OUT receives, per entry, {task: {metric: value}}. A process of its own, so that the
offline switches are set before ``datasets`` and ``huggingface_hub`` are imported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def main(spec_file: str, out_file: str) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    outputs = []
    for spec in json.loads(Path(spec_file).read_text()):
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=(
                f"pretrained={spec['model']},max_length={spec['max_length']},"
                "dtype=float32,device=cpu"
            ),
            tasks=spec["tasks"],
            task_manager=TaskManager(include_path=spec["include_path"]),
            batch_size=4,
            log_samples=False,
        )
        outputs.append(
            {
                task: {k.split(",")[0]: v for k, v in values.items() if isinstance(v, int | float)}
                for task, values in results["results"].items()
            }
        )
    with open(out_file, "w") as fh:
        json.dump(outputs, fh, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
