"""Command line: ``--config file.toml`` then ``--section.field value`` overrides (tyro)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import tyro

from trainer.config import (
    ConfigError,
    JobConfig,
    check_override,
    config_from_dict,
    config_to_dict,
    is_bool_field,
    load_toml,
)

_DESCRIPTION = (
    "Pre-train a LLaMA model with full-rank, LoRA or SwitchLoRA projections. "
    "Start from a TOML file with --config FILE; every field can then be overridden with "
    "--section.field VALUE (see the sections below)."
)


def parse_config(argv: Sequence[str] | None = None) -> JobConfig:
    """Load ``--config`` (if given) and apply command-line overrides; checks every type."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    check_overrides(rest)
    base = load_toml(known.config) if known.config else JobConfig()
    cfg = tyro.cli(
        JobConfig,
        default=base,
        args=canonical_booleans(rest),
        description=_DESCRIPTION,
        use_underscores=True,
        config=(tyro.conf.FlagConversionOff,),
    )
    # Round-trip through the TOML checker so that CLI values obey the same rules.
    return config_from_dict(config_to_dict(cfg))


def check_overrides(args: Sequence[str]) -> None:
    """Check every ``--section.field value...`` override as a TOML value would be checked, so
    that an unknown key or a wrong type fails with one line naming the key (ConfigError)."""
    if "-h" in args or "--help" in args:
        return  # tyro prints the help
    flags: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            flags.append((name, [value] if eq else []))
        elif flags:
            flags[-1][1].append(arg)
        else:
            raise ConfigError(f"unexpected argument {arg!r} (overrides are --section.field value)")
    for name, tokens in flags:
        if "." not in name:
            raise ConfigError(f"unknown option '--{name}' (overrides are --section.field value)")
        check_override(name.replace("-", "_"), tokens)


def canonical_booleans(args: Sequence[str]) -> list[str]:
    """The overrides with boolean values spelled ``True``/``False``, as tyro reads them, so
    that the TOML spelling ``true``/``false`` (any case) works on the command line too."""
    out: list[str] = []
    key = ""
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            key = name.replace("-", "_")
            if eq and is_bool_field(key) and value.lower() in ("true", "false"):
                arg = f"--{name}={value.capitalize()}"
        elif is_bool_field(key) and arg.lower() in ("true", "false"):
            arg = arg.capitalize()
        out.append(arg)
    return out
