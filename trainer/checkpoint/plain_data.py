"""The project's own checkpoint entries as JSON text: data in, data out, no code.

Progress records, data loader states and RNG states hold dicts (some with integer keys),
tuples, numpy arrays and torch byte tensors. JSON has none of those, so each is written as a
tagged object and rebuilt on reading; nothing else is ever constructed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

TAG = "__plain__"
"""Key that marks a tagged object (a dict with other key types, a tuple, an array)."""


def _encode(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {k: _encode(v) for k, v in obj.items()}
        return {TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [_encode(v) for v in obj]}
    if isinstance(obj, np.ndarray):
        return {
            TAG: "ndarray",
            "dtype": str(obj.dtype),
            "shape": list(obj.shape),
            "data": obj.ravel().tolist(),
        }
    if isinstance(obj, torch.Tensor):
        return {
            TAG: "tensor",
            "dtype": str(obj.dtype).removeprefix("torch."),
            "shape": list(obj.shape),
            "data": obj.detach().cpu().reshape(-1).tolist(),
        }
    raise TypeError(f"cannot store a {type(obj).__name__} as plain data")


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get(TAG)
    if kind is None:
        return {k: _decode(v) for k, v in obj.items()}
    if kind == "dict":
        return {_decode(k): _decode(v) for k, v in obj["items"]}
    if kind == "tuple":
        return tuple(_decode(v) for v in obj["items"])
    if kind == "ndarray":
        return np.asarray(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if kind == "tensor":
        dtype = getattr(torch, obj["dtype"])
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown tensor dtype {obj['dtype']!r}")
        return torch.tensor(obj["data"], dtype=dtype).reshape(obj["shape"])
    raise ValueError(f"unknown tagged object {kind!r}")


def to_text(obj: Any) -> str:
    """``obj`` as JSON text (tuples, arrays, tensors and non-string keys tagged)."""
    return json.dumps(_encode(obj))


def from_text(text: str) -> Any:
    """The object :func:`to_text` wrote; ValueError for text it could not have written."""
    if not isinstance(text, str):
        raise ValueError(f"expected JSON text, found a {type(text).__name__}")
    return _decode(json.loads(text))
