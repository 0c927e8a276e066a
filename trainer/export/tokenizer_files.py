"""Tokenizer and generation files of an export, so transformers' Auto classes load it as is.

Written beside ``config.json``: ``tokenizer.json`` (plus ``tokenizer.model`` for a
SentencePiece run), ``tokenizer_config.json``, ``special_tokens_map.json`` and
``generation_config.json``. The tokenizer comes from the checkpoint's own copy (hash checked),
never from the path the run was configured with.

Special tokens are the ones the run used: its EOS, which also serves as the padding token (a
run packs documents and never pads; padded positions are masked anyway). No BOS: training
documents start right after the previous document's EOS, so none is declared and none is
added, and scoring tools that prefix a text with BOS-or-EOS (lm-evaluation-harness) use EOS,
the context the model was trained with.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.checkpoint.tokenizer_copy import saved_tokenizer_file
from trainer.data.tokenizer import build_tokenizer
from trainer.export.hf_tokenizer import (
    byte_tokenizer,
    sentencepiece_tokenizer,
    tokenizer_json_without_post_processor,
)

PROBE_TEXT = "Tokenizer probe: ASCII, accents (éàü), CJK 中文, emoji 🙂, tabs\tand\nnew lines  ."
"""Text encoded by both the run's tokenizer and the export to check that their ids agree."""


def write_tokenizer_files(
    checkpoint: Path,
    manifest: dict[str, Any],
    max_length: int,
    folder: Path,
    log: Callable[[str], None],
) -> list[str]:
    """Write the tokenizer and generation files into ``folder``; returns their names.

    Writes nothing (and says so) for a checkpoint saved before checkpoints kept a copy of
    their tokenizer file.
    """
    record = manifest.get("tokenizer") or {}
    name = record.get("name")
    backend = str(name).partition(":")[0]
    if name is None or (backend != "byte" and "file" not in record):
        log(
            f"note: checkpoint {checkpoint} holds no copy of its tokenizer ({name}); "
            "the export has no tokenizer files"
        )
        return []
    eos_id = int(record["eos_id"])
    written = ["tokenizer.json"]
    config: dict[str, Any] = {}
    if backend == "byte":
        tok = byte_tokenizer()
        # The run encodes the text "<|endoftext|>" as its bytes, never as EOS.
        config["split_special_tokens"] = True
    else:
        path = saved_tokenizer_file(checkpoint, manifest)
        if backend == "sp":
            tok = sentencepiece_tokenizer(path)
            shutil.copyfile(path, folder / "tokenizer.model")
            written.append("tokenizer.model")
            # SentencePiece never reads control pieces such as "</s>" out of the text.
            config["split_special_tokens"] = True
            unk = _sentencepiece_unk(path)
            if unk is not None:
                config["unk_token"] = unk
        else:
            tok = tokenizer_json_without_post_processor(path)
        _check_same_ids(build_tokenizer(str(path)).encode(PROBE_TEXT), tok, name, log)
    eos = tok.id_to_token(eos_id)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "eos_token": eos,
        "pad_token": eos,
        "bos_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        **config,
        "trainer_tokenizer": name,
    }
    special = {k: config[k] for k in ("eos_token", "pad_token", "unk_token") if k in config}
    generation = {"eos_token_id": eos_id, "pad_token_id": eos_id}
    for file, content in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
        ("generation_config.json", generation),
    ):
        (folder / file).write_text(json.dumps(content, indent=2, ensure_ascii=False))
        written.append(file)
    return written


def _sentencepiece_unk(path: Path) -> str | None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    return sp.id_to_piece(sp.unk_id()) if sp.unk_id() >= 0 else None


def _check_same_ids(want: list[int], tok: Any, name: str, log: Callable[[str], None]) -> None:
    have = tok.encode(PROBE_TEXT, add_special_tokens=False).ids
    if have != want:
        log(
            f"warning: the exported tokenizer encodes differently from the run's ({name}): "
            f"{len(have)} ids instead of {len(want)} on a probe text"
        )
