"""Job configuration: one dataclass per TOML section, a docstring under every field.

A run is configured by a TOML file (``--config``) whose tables match the sections below,
then overridden by command-line flags ``--section.field value`` (parsed by tyro). Every key
is checked: unknown keys, wrong types and inconsistent values fail before any compute, with
a one-line message naming the key (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from switchlora.options import DEFAULT_TARGET_MODULES
from trainer.errors import ConfigError  # noqa: F401  (re-exported: raised for every bad key)


@dataclass
class Job:
    name: str = "run"
    """Name of the run, used in log lines and as the default dump folder name."""
    dump_folder: str = "outputs/run"
    """Folder for everything the run writes: resolved config, TensorBoard events, checkpoints."""
    seed: int = 0
    """Seed for model initialisation, data order and every switching decision."""
    description: str = ""
    """Free text kept with the resolved config."""
    lock_timeout_s: int = 1800
    """A dump folder's run.lock written on another host counts as stale (and is taken over) once its heartbeat, refreshed at every log step, is older than this many seconds; on this host a lock whose process has exited is taken over at once."""


@dataclass
class Model:
    flavor: str = "tiny"
    """Named model size from trainer/model/flavors.py (tiny, small, 60m, 130m, 250m, 350m, 1b, 7b, ...)."""
    dim: int | None = None
    """Hidden size; None keeps the flavour's value."""
    n_layers: int | None = None
    """Number of transformer blocks; None keeps the flavour's value."""
    n_heads: int | None = None
    """Number of attention heads; must divide dim."""
    n_kv_heads: int | None = None
    """Number of key/value heads for grouped-query attention; must divide n_heads. None = n_heads."""
    ffn_dim: int | None = None
    """Hidden size of the SwiGLU MLP; None keeps the flavour's value."""
    vocab_size: int | None = None
    """Embedding rows; None uses the tokenizer's vocabulary size (rounded up to a multiple of 64)."""
    norm_eps: float | None = None
    """RMSNorm epsilon; None keeps the flavour's value (1e-6)."""
    rope_theta: float | None = None
    """Rotary embedding base; None keeps the flavour's value (10000)."""
    init_std: float = 0.02
    """Standard deviation of the LLaMA N(0, std) initialisation of every linear and embedding."""


@dataclass
class Data:
    source: str = "embedded:shakespeare"
    """Training text: 'embedded:shakespeare' (ships with the package) or a folder written by scripts/prepare_data.py."""
    tokenizer: str = "byte"
    """'byte' (built in), a Hugging Face tokenizer.json path, or a sentencepiece .model path."""
    num_workers: int = 0
    """Data loader worker processes per rank."""
    val_fraction: float = 0.05
    """Held-out share of the embedded corpus used for validation (prepared folders carry their own split)."""
    packing: Literal["packed", "pad"] = "packed"
    """'packed': the token stream (documents joined by EOS) cut into windows of seq_len + 1 tokens; 'pad': GaLore's recipe, one sequence per document truncated to seq_len + 1 tokens and padded, the padding excluded from the loss (ignore index) and from its normalisation."""


@dataclass
class Optimizer:
    name: Literal["adamw"] = "adamw"
    """Optimizer family. AdamW everywhere; adapter methods add per-vector bias correction (SwitchLoRA) or projections (GaLore)."""
    lr: float = 1e-3
    """Peak learning rate, shared by every parameter group."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.999
    """AdamW second-moment decay."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    implementation: Literal["auto", "fused", "foreach", "for-loop"] = "auto"
    """torch.optim.AdamW kernel for full-rank training: auto picks fused on CUDA, foreach elsewhere."""


@dataclass
class LRSchedule:
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to the peak learning rate."""
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape of the decay after warm-up."""
    min_lr_ratio: float = 0.0
    """Floor of the decay as a fraction of the peak learning rate (0.1 = decay to 10%)."""


@dataclass
class Training:
    steps: int = 1000
    """Number of optimizer steps."""
    global_batch_size: int = 32
    """Sequences per optimizer step, over all data-parallel ranks and micro-batches."""
    local_batch_size: int = 0
    """Sequences per micro-batch per rank; 0 = global_batch_size / world size (no accumulation)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    max_norm: float = 1.0
    """Gradient clipping: gradients are scaled so that their global L2 norm is at most this; 0 disables clipping."""
    max_skipped_steps: int = 5
    """A step whose loss or gradient norm is not finite is skipped (nothing is applied); the run stops when more than this many consecutive steps are skipped (0 = stop at the first)."""
    val_every: int = 0
    """Run validation every this many steps (0: only at the end)."""
    val_batches: int = 16
    """Validation batches of global_batch_size sequences per evaluation (0 = the whole validation split); not used when val_tokens > 0."""
    val_tokens: int = 0
    """Target tokens per evaluation, instead of val_batches: exactly the first this many of the validation split (padding excluded), whatever the world size (the official SwitchLoRA recipe: 10M); 0 = use val_batches."""
    final_val_tokens: int = 0
    """Target tokens of the evaluation after the last step (the official recipe: 100M); 0 = as the other evaluations."""


@dataclass
class Parallel:
    dp_shard: int = -1
    """Data-parallel shard degree (FSDP); -1 = all ranks not used by dp_replicate."""
    dp_replicate: int = 1
    """Data-parallel replicate degree; >1 with dp_shard>1 is HSDP, dp_shard=1 is replicate-only (DDP semantics)."""
    reshard_after_forward: bool = True
    """Free all-gathered block parameters after forward (ZeRO-3) instead of keeping them for backward."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend: auto = nccl when CUDA is available, gloo otherwise."""


@dataclass
class ActivationCheckpoint:
    mode: Literal["none", "full", "selective"] = "none"
    """Recompute activations in backward to save memory: none; full (every block); selective (see selective_ac_option)."""
    selective_ac_option: str = "op"
    """With mode = "selective": "op" keeps the outputs of matmuls and attention in every block and recomputes the rest (norms, rotary, SiLU); an integer k fully recomputes every k-th block and keeps the others."""


@dataclass
class Checkpoint:
    enable: bool = False
    """Save distributed checkpoints under <dump_folder>/checkpoints/step-<N>/ and, on start, resume from the newest complete one there."""
    interval: int = 500
    """Save every this many steps (and at the end)."""
    keep_latest: int = 2
    """How many complete checkpoints to keep; older ones are deleted after a newer one is complete."""
    async_mode: Literal["disabled", "async"] = "disabled"
    """'async': stage the state in CPU memory, write it from a background thread and wait for the staging before the next step."""
    load_step: int = 0
    """Resume from checkpoints/step-<load_step> instead of the newest complete checkpoint (0 = newest)."""
    initial_load_path: str = ""
    """A checkpoint folder (step-<N>) of another run to start from when this dump folder has none yet."""
    initial_load_model_only: bool = True
    """With initial_load_path: load only the model weights (the step, optimizer, schedule and data start fresh)."""


@dataclass
class Metrics:
    log_every: int = 10
    """Console line and TensorBoard scalars every this many steps."""
    tensorboard: bool = True
    """Write TensorBoard events under <dump_folder>/tb/."""
    wandb: bool = False
    """Also log the scalars to Weights & Biases (rank 0; needs the 'wandb' extra). Offline unless the environment sets WANDB_MODE (e.g. online): the run folder is <dump_folder>/wandb/."""
    wandb_project: str = "switchlora"
    """Weights & Biases project name (the run is named after job.name)."""
    rank_diagnostic_every: int = 0
    """Every this many steps (and at the last), log the singular values and effective rank of each projection's accumulated update W - W_init + s*B*A (TensorBoard histograms, <dump_folder>/rank_diagnostic.jsonl); 0 = off."""


@dataclass
class Profiling:
    enable_profiling: bool = False
    """Write a torch.profiler trace of every profile_freq-th step to <dump_folder>/<save_traces_folder>/iteration_<step>/rank<r>_trace.json."""
    save_traces_folder: str = "profile_trace"
    """Folder for the traces, under the dump folder."""
    profile_freq: int = 10
    """Trace (and snapshot) every this many steps; the step before each trace is a profiler warm-up."""
    enable_memory_snapshot: bool = False
    """CUDA only: record allocation history and dump a memory snapshot every profile_freq steps to <dump_folder>/<save_memory_snapshot_folder>/iteration_<step>/rank<r>_memory_snapshot.pickle."""
    save_memory_snapshot_folder: str = "memory_snapshot"
    """Folder for the memory snapshots, under the dump folder."""


@dataclass
class Compile:
    enable: bool = False
    """torch.compile(fullgraph=True) each transformer block."""


@dataclass
class Precision:
    mode: Literal["fp32", "bf16", "pure_bf16", "float8"] = "fp32"
    """fp32; bf16 compute with fp32 master shards and fp32 gradient reduction (FSDP2 MixedPrecisionPolicy); pure_bf16: every parameter (frozen W included), candidate pool and optimizer moment stored in bf16 and gradients reduced in bf16, as the official SwitchLoRA release trains (per-vector step counts stay fp32); or float8: bf16 plus torchao float8 matmuls in the frozen base linears of adapter layers and in full-rank linears (not lm_head, not dims indivisible by 16; emulated without float8 hardware)."""
    float8_recipe: Literal["tensorwise", "rowwise"] = "tensorwise"
    """float8 scaling: one scale per tensor, or one per row (power-of-2 scales; more accurate, slower)."""
    float8_all_gather: bool = False
    """float8: FSDP2 all-gathers float8 weights (tensorwise only), with scales recomputed in one all-reduce after every optimizer step (and so after every switch or merge)."""


@dataclass
class Method:
    name: Literal["full", "lora", "switchlora", "relora", "galore"] = "full"
    """Training method for the attention and MLP projections."""
    rank: int = 128
    """Adapter rank r."""
    alpha: float = 1.0
    """Adapter scale numerator: s = alpha / rank."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Linear layers that get an adapter; the rest of the model trains full-rank."""
    init: Literal["switchlora", "lora"] = "switchlora"
    """Adapter init of lora and switchlora: the SwitchLoRA formula for A and B, or LoRA's kaiming A with B = 0."""


@dataclass
class SwitchLoRA:
    """SwitchLoRA (method.name = "switchlora"): when and how adapter vectors are switched."""

    interval0: float = 40.0
    """Initial switching interval (steps between switches of one vector)."""
    descent_ratio: float = 0.1
    """The switching frequency falls to 0.3x its start at step descent_ratio * steps."""
    fixed_interval: bool = False
    """Keep the interval at interval0 for the whole run."""
    freeze_steps: int = 5
    """Steps a switched vector's counterpart stays frozen (0 = reset its state without freezing)."""
    candidate_source: Literal["pool", "seeded"] = "pool"
    """'pool' stores min(m, n) candidate vectors per factor; 'seeded' draws them from a keyed generator."""
    pool_write_back: bool = True
    """Pool only: write the trained outgoing vector back into its pool slot."""
    pool_choice: Literal["sequential", "random"] = "sequential"
    """Pool only: walk the pool as a ring, or draw uniformly from unused entries."""
    pool_offload_cpu: bool = False
    """Pool only: keep pools in pinned CPU memory and copy only the rows needed each step."""


@dataclass
class ReLoRA:
    """ReLoRA (method.name = "relora"): LoRA adapters (A kaiming-uniform, B = 0) on
    method.target_modules with rank method.rank, merged into W and restarted on an interval."""

    interval: int = 5000
    """Optimizer steps between resets: W += s*B*A, A re-drawn, B = 0, adapter moments pruned, LR re-warmed."""
    restart_warmup_steps: int = 100
    """Steps of the linear LR re-warm-up after each reset, from 0 back to the decay envelope."""
    alpha: float = 32.0
    """Adapter scale numerator: s = alpha / method.rank (ReLoRA's default; method.alpha is for lora/switchlora)."""
    prune: Literal["random", "magnitude"] = "random"
    """How the adapters' Adam moments are pruned at a reset: random entries, or the smallest magnitudes per tensor."""
    prune_ratio: float = 0.999
    """Fraction of each adapter moment tensor zeroed at a reset (0.999 keeps 0.1 %; 1.0 clears them)."""
    dropout: float = 0.0
    """Dropout on the adapters' input in training mode, B (A dropout(x)). The official ReLoRA trainer hard-codes 0.1 (set it to reproduce it); 0 keeps the adapter branch the same deterministic function as LoRA's and SwitchLoRA's, so the comparison differs only in the merges and restarts."""


@dataclass
class GaLore:
    """GaLore (method.name = "galore"): full-rank training; AdamW moments of method.target_modules
    weights live in a rank-method.rank projection of the gradient."""

    update_interval: int = 200
    """Steps between projector refreshes from the current gradient's singular vectors (the first at step 0)."""
    scale: float = 0.25
    """alpha: the projected-back update of a projected weight is multiplied by this."""
    eps: float | None = None
    """AdamW denominator epsilon of the GaLore optimizer (every group); None uses optimizer.eps (1e-8, as every other method). galore-torch's default is 1e-6."""


@dataclass
class JobConfig:
    """Every setting of a training run."""

    job: Job = field(default_factory=Job)
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_schedule: LRSchedule = field(default_factory=LRSchedule)
    training: Training = field(default_factory=Training)
    parallel: Parallel = field(default_factory=Parallel)
    activation_checkpoint: ActivationCheckpoint = field(default_factory=ActivationCheckpoint)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    metrics: Metrics = field(default_factory=Metrics)
    profiling: Profiling = field(default_factory=Profiling)
    compile: Compile = field(default_factory=Compile)
    precision: Precision = field(default_factory=Precision)
    method: Method = field(default_factory=Method)
    switchlora: SwitchLoRA = field(default_factory=SwitchLoRA)
    relora: ReLoRA = field(default_factory=ReLoRA)
    galore: GaLore = field(default_factory=GaLore)


# --------------------------------------------------------------------------- TOML loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (parsed from TOML) against the annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


# Keys that existed in earlier releases: an old config gets one line saying where they went.
MOVED_KEYS = {
    "parallel.activation_checkpoint": "activation_checkpoint.mode ('full' for true, 'none' for false)",
    **{
        f"method.{name}": f"switchlora.{name}"
        for name in (
            "interval0",
            "descent_ratio",
            "fixed_interval",
            "freeze_steps",
            "candidate_source",
            "pool_write_back",
            "pool_choice",
            "pool_offload_cpu",
        )
    },
}


def _unknown_key_error(key: str, known: list[str]) -> ConfigError:
    if key in MOVED_KEYS:
        return ConfigError(f"{key}: moved to {MOVED_KEYS[key]}")
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown key '{key}'{hint}")


def _build_section(cls: type, table: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise _unknown_key_error(f"{section}.{key}", names)
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def check_override(key: str, tokens: list[str]) -> None:
    """Check a command-line override ``--<key> <tokens...>`` like the same value in a TOML file.

    ``key`` is "section.field"; each token is read as a TOML value (``true``/``false`` in any
    case as booleans, anything that is not valid TOML as a string). Raises ConfigError naming
    the key.
    """
    hints = typing.get_type_hints(JobConfig)
    section, _, name = key.partition(".")
    if section not in hints or not name:
        raise _unknown_key_error(key, list(hints))
    cls = hints[section]
    fields = typing.get_type_hints(cls)
    if name not in fields:
        raise _unknown_key_error(key, list(fields))
    tp = fields[name]
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        for i, token in enumerate(tokens):
            _check_token(token, item, f"{key}[{i}]")
        return
    if len(tokens) != 1:
        raise ConfigError(f"{key}: expected one value, got {len(tokens)}")
    _check_token(tokens[0], tp, key)


def is_bool_field(key: str) -> bool:
    """Whether ``key`` ("section.field") names a known boolean field."""
    hints = typing.get_type_hints(JobConfig)
    section, _, name = key.partition(".")
    if section not in hints:
        return False
    return typing.get_type_hints(hints[section]).get(name) is bool


def _check_token(token: str, tp: Any, key: str) -> None:
    """A command-line token read as TOML, or failing that as the plain string it is."""
    if token == "None":
        value: Any = None
    elif token.lower() in ("true", "false"):
        value = token.lower() == "true"
    else:
        try:
            value = tomllib.loads(f"v = {token}")["v"]
        except tomllib.TOMLDecodeError:
            value = token
    try:
        _coerce(value, tp, key)
    except ConfigError:
        _coerce(token, tp, key)  # e.g. a string field given "123"


def config_from_dict(raw: dict[str, Any]) -> JobConfig:
    """Build a :class:`JobConfig` from nested TOML tables, checking every key and type."""
    hints = typing.get_type_hints(JobConfig)
    sections = {}
    for name, table in raw.items():
        if name not in hints:
            raise _unknown_key_error(name, list(hints))
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: expected a [{name}] table, got {table!r}")
        sections[name] = _build_section(hints[name], table, name)
    return JobConfig(**sections)


def load_toml(path: str | Path) -> JobConfig:
    """Read a TOML config file; errors name the file and the offending key."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"--config {path} is a folder; pass a TOML file such as {path}/<name>.toml"
        )
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_to_dict(cfg: JobConfig) -> dict[str, Any]:
    """Plain nested dict of the config (tuples as lists, None values dropped) for TOML/JSON."""

    def clean(value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        return value

    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        out[f.name] = {k: clean(v) for k, v in dataclasses.asdict(section).items() if v is not None}
    return out


def to_toml(cfg: JobConfig) -> str:
    """Serialise a config to TOML text that :func:`load_toml` reads back to an equal config."""
    lines: list[str] = []
    for section, table in config_to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
