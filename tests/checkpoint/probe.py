"""Single-process checkpoint probe for the tests: several trainer builds in one process.

    python tests/checkpoint/probe.py SPEC.json RESULT.json

SPEC is a list of cases ``{"name", "args": [train.py flags], "eval": bool, "logits": bool,
"save_to": dump folder or null, "poison": bool}``. Each case builds the trainer from its
flags, runs ``CheckpointManager.load`` (resume or initial load), then optionally evaluates,
records the logits of the first validation batch (``<RESULT>.<name>.pt``) and saves a
checkpoint of the loaded state into another dump folder (with ``poison``, after writing a
NaN into one parameter). A :class:`CheckpointError` is recorded, not raised. RESULT maps
case names to ``{"step", "val_loss", "error"}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from parallel.distributed import init_distributed, shutdown  # noqa: E402
from trainer.checkpoint import CheckpointError, CheckpointManager  # noqa: E402
from trainer.cli import parse_config  # noqa: E402
from trainer.data.loader import build_val_loader  # noqa: E402
from trainer.train import build_trainer, evaluate  # noqa: E402


def run_case(case: dict, info, out: Path) -> dict:
    cfg = parse_config(case["args"])
    tr = build_trainer(cfg, info)
    manager = CheckpointManager(cfg, info, cfg.job.dump_folder, log=print)
    record: dict = {"step": None, "val_loss": None, "error": None}
    try:
        manager.load(tr)
    except CheckpointError as exc:
        record["error"] = str(exc)
        return record
    record["step"] = tr.step
    if case.get("eval"):
        record["val_loss"] = evaluate(tr)
    if case.get("logits"):
        batch = next(iter(build_val_loader(tr.data, 2, 0, 1, 1)))
        tr.model.eval()
        with torch.no_grad():
            logits = tr.model(batch["input"]).float()
        torch.save({"tokens": batch["input"], "logits": logits}, f"{out}.{case['name']}.pt")
    if case.get("save_to"):
        target = dataclasses.replace(
            cfg,
            job=dataclasses.replace(cfg.job, dump_folder=case["save_to"]),
            checkpoint=dataclasses.replace(cfg.checkpoint, enable=True, async_mode="disabled"),
        )
        if case.get("poison"):
            with torch.no_grad():
                param = next(p for p in tr.model.parameters() if p.requires_grad)
                local = param.to_local() if hasattr(param, "to_local") else param
                local.view(-1)[0] = float("nan")
            tr.step += 1
        try:
            CheckpointManager(target, info, case["save_to"], log=print).save(tr, {})
        except CheckpointError as exc:
            record["error"] = str(exc)
    return record


def main() -> None:
    spec, out = Path(sys.argv[1]), Path(sys.argv[2])
    info = init_distributed("gloo")
    results = {}
    try:
        for case in json.loads(spec.read_text()):
            results[case["name"]] = run_case(case, info, out)
    finally:
        shutdown()
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
