"""Training methods: one module per method, one table entry per method.

Adding a method: a module defining a :class:`~trainer.methods.base.TrainingMethod`, its entry in
:data:`METHODS`, and its name among the choices of ``method.name`` (trainer/config.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainer.config import JobConfig
from trainer.errors import ConfigError
from trainer.methods.base import MethodRuntime, TrainingMethod
from trainer.methods.full import FULL
from trainer.methods.galore import GALORE
from trainer.methods.lora import LORA, SWITCHLORA
from trainer.methods.relora import RELORA
from trainer.model.llama import Llama

METHODS: dict[str, TrainingMethod] = {m.name: m for m in (FULL, LORA, SWITCHLORA, RELORA, GALORE)}
"""Every method by its method.name."""


def get_method(name: str) -> TrainingMethod:
    """The method called ``name``; a ConfigError naming the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def prepare_model(model: Llama, cfg: JobConfig) -> Callable | None:
    """The configured method's :attr:`TrainingMethod.prepare_model`."""
    return get_method(cfg.method.name).prepare_model(model, cfg)


def init_method_weights(model: Llama, cfg: JobConfig) -> None:
    """The configured method's :attr:`TrainingMethod.init_weights`."""
    get_method(cfg.method.name).init_weights(model, cfg)


def build_runtime(model: Llama, cfg: JobConfig, device: torch.device) -> MethodRuntime:
    """The configured method's :attr:`TrainingMethod.build_runtime`."""
    return get_method(cfg.method.name).build_runtime(model, cfg, device)


__all__ = [
    "METHODS",
    "TrainingMethod",
    "MethodRuntime",
    "build_runtime",
    "get_method",
    "init_method_weights",
    "prepare_model",
]
