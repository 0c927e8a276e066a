"""The scored model and its tokenizer, from a training checkpoint or an exported folder."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.checkpoint.layout import MANIFEST
from trainer.checkpoint.tokenizer_copy import saved_tokenizer_file
from trainer.data.tokenizer import ByteTokenizer, build_tokenizer
from trainer.errors import CheckpointError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class ScoredModel:
    """What an evaluation needs: logits of token ids, and text <-> ids as the model was trained."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    """LongTensor [B, L] -> logits [B, L, vocab]."""
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    prefix_id: int
    """Id that precedes every document (BOS when the tokenizer has one, else EOS; as lm-eval)."""
    tokenizer_name: str | None
    """The run's tokenizer identity (``byte``, ``hf:<hash>``, ``sp:<hash>``), None if unknown."""
    max_seq_len: int
    """Context length the model was trained with."""


def load_model(path: Path, device: torch.device, dtype: str, seq_len: int) -> ScoredModel:
    """A checkpoint folder (``manifest.json``) or an exported Hugging Face folder, with room
    for ``seq_len`` positions."""
    if not path.is_dir():
        raise CheckpointError(f"model {path} is not a folder (a checkpoint or an export)")
    if (path / MANIFEST).is_file():
        return _from_checkpoint(path, device, DTYPES[dtype], seq_len)
    if (path / "config.json").is_file():
        return _from_export(path, device, DTYPES[dtype])
    raise CheckpointError(
        f"model {path} is neither a checkpoint ({MANIFEST} missing) nor an export (config.json missing)"
    )


def _from_checkpoint(
    folder: Path, device: torch.device, dtype: torch.dtype, seq_len: int
) -> ScoredModel:
    from trainer.export.source import ExportSource
    from trainer.model.llama import Llama

    source = ExportSource.open(folder)
    state = dict(source.dense_tensors(torch.float32))
    args = dataclasses.replace(source.args, max_seq_len=max(source.args.max_seq_len, seq_len))
    with torch.device("meta"):
        model = Llama(args)
    model.to_empty(device="cpu")
    model.load_state_dict(state)
    model.reset_rope()
    model.to(device=device, dtype=dtype).eval()
    record = source.manifest.get("tokenizer") or {"name": "byte"}
    copy = saved_tokenizer_file(folder, source.manifest)
    tok = ByteTokenizer() if copy is None else build_tokenizer(str(copy))
    return ScoredModel(
        logits=model,
        encode=tok.encode,
        decode=tok.decode,
        prefix_id=tok.eos_id,
        tokenizer_name=record["name"],
        max_seq_len=source.args.max_seq_len,
    )


def _from_export(folder: Path, device: torch.device, dtype: torch.dtype) -> ScoredModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.model_max_length = 2**62  # documents are cut into windows here, not by the tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return ScoredModel(
        logits=lambda ids: model(ids).logits,
        encode=lambda text: tok(text, add_special_tokens=False)["input_ids"],
        decode=lambda ids: tok.decode(ids),
        prefix_id=prefix,
        tokenizer_name=config.get("trainer_tokenizer"),
        max_seq_len=model.config.max_position_embeddings,
    )
