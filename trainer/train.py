"""The training job: build, shard, initialise, then loop.

One optimizer step: micro-batches (forward, loss normalised by the global token count,
backward) -> global gradient norm and loss (one host read) -> skip the step if either is not
finite -> clip -> method hook (SwitchLoRA: switch, freeze, reset) -> optimizer step -> LR
step -> metrics -> validation / checkpoint on their intervals.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from parallel.distributed import DistInfo, init_distributed, shutdown
from parallel.fsdp import set_gradient_sync
from parallel.parallelize import StepHook, parallelize
from trainer.checkpoint import CheckpointManager
from trainer.config import ConfigError, JobConfig, config_to_dict, to_toml
from trainer.config_checks import (
    check_config,
    check_model_args,
    check_model_config,
    model_args_from_config,
)
from trainer.data.loader import DataBundle, build_data, build_val_loader
from trainer.data.padded import IGNORE_INDEX, target_counts
from trainer.diagnostics.rank import log_rank_diagnostic
from trainer.lr_schedule import build_scheduler
from trainer.methods import (
    MethodRuntime,
    build_runtime,
    get_method,
    init_method_weights,
    prepare_model,
)
from trainer.metrics import (
    MetricsLogger,
    format_step_line,
    peak_flops,
    peak_memory_gib,
    start_wandb,
)
from trainer.model.args import ModelArgs
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama
from trainer.optim import clip_grads_, grad_norm
from trainer.profiling import StepProfiler, step_profiler
from trainer.run_lock import hold_dump_folder


@dataclass
class TrainResult:
    """What a finished run reports (also written to <dump_folder>/summary.json)."""

    steps: int
    initial_val_loss: float
    final_val_loss: float
    train_losses: dict[int, float] = field(default_factory=dict)
    val_losses: dict[int, float] = field(default_factory=dict)
    skipped_steps: int = 0
    """Steps skipped because their loss or gradient norm was not finite."""

    @property
    def final_val_ppl(self) -> float:
        return math.exp(self.final_val_loss)

    @property
    def initial_val_ppl(self) -> float:
        return math.exp(self.initial_val_loss)


@dataclass
class Trainer:
    """Everything built for a run; created by :func:`build_trainer`."""

    cfg: JobConfig
    info: DistInfo
    model: Llama
    model_args: ModelArgs
    data: DataBundle
    method: MethodRuntime
    scheduler: torch.optim.lr_scheduler.LambdaLR
    grad_accum: int
    local_batch: int
    after_step: list[StepHook]
    """Run in order after each optimizer step: the method's hook, then those of parallelize."""
    step: int = 0


def model_vocab_size(cfg: JobConfig, tokenizer_vocab: int) -> int:
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    return -(-tokenizer_vocab // 64) * 64


def build_trainer(cfg: JobConfig, info: DistInfo) -> Trainer:
    check_config(cfg, info.world_size)
    t = cfg.training
    local_batch = t.local_batch_size or t.global_batch_size // info.world_size
    grad_accum = t.global_batch_size // (info.world_size * local_batch)
    torch.manual_seed(cfg.job.seed)
    data = build_data(
        source=cfg.data.source,
        tokenizer=cfg.data.tokenizer,
        seq_len=t.seq_len,
        local_batch_size=local_batch,
        dp_rank=info.rank,
        dp_world=info.world_size,
        seed=cfg.job.seed,
        num_workers=cfg.data.num_workers,
        val_fraction=cfg.data.val_fraction,
        packing=cfg.data.packing,
    )
    check_val_budgets(cfg, data)
    model_args = model_args_from_config(cfg, model_vocab_size(cfg, data.vocab_size))
    check_model_args(model_args, cfg, data.vocab_size)

    with torch.device("meta"):
        model = Llama(model_args)
    post_step = parallelize(model, cfg, info, prepare_model(model, cfg))
    model.to_empty(device=info.device)
    init_dense_weights(model, cfg.job.seed, cfg.model.init_std)
    init_method_weights(model, cfg)
    method = build_runtime(model, cfg, info.device)
    scheduler = method.scheduler or build_scheduler(
        method.optimizer,
        cfg.lr_schedule.warmup_steps,
        t.steps,
        cfg.lr_schedule.decay,
        cfg.lr_schedule.min_lr_ratio,
    )
    # The method's hook first: it may switch or merge W, which the parallel hooks then see.
    # Looked up at each call, so a wrapper set on the runtime later (the bench's timers) runs.
    after_step = [lambda step: method.after_optimizer_step(step), *post_step]
    return Trainer(
        cfg, info, model, model_args, data, method, scheduler, grad_accum, local_batch, after_step
    )


def training_flops_per_token(tr: Trainer) -> float:
    """Training FLOPs per token of the run's model and method (the MFU definition): adapter
    layers add their rank-r matmuls; other methods train the dense projections."""
    m = tr.cfg.method
    adapter_rank = m.rank if get_method(m.name).adapters else 0
    return tr.model_args.flops_per_token(
        tr.cfg.training.seq_len, adapter_rank, tuple(m.target_modules)
    )


def check_val_budgets(cfg: JobConfig, data: DataBundle) -> None:
    """The token budgets of the evaluations fit in the validation split (checked before step 0)."""
    t = cfg.training
    budgets = [(k, getattr(t, k)) for k in ("val_tokens", "final_val_tokens") if getattr(t, k)]
    if not budgets:
        return
    available = int(target_counts(data.val_windows).sum())
    for key, budget in budgets:
        if budget > available:
            raise ConfigError(
                f"training.{key}: {budget:,} tokens exceed the {available:,} target tokens of "
                f"the validation split of {cfg.data.source} (seq_len {t.seq_len}, packing "
                f"{cfg.data.packing!r})"
            )


@torch.no_grad()
def evaluation_sums(tr: Trainer, max_tokens: int = 0) -> tuple[float, int]:
    """(summed loss, target tokens) of one evaluation over every rank.

    ``max_tokens`` > 0: exactly that many target tokens; otherwise training.val_batches
    global batches (0 = the whole split). Padding targets count in neither.
    """
    tr.model.eval()
    # val_batches counts global batches, so the evaluated sequences do not depend on the world size.
    max_batches = tr.cfg.training.val_batches * tr.grad_accum or None
    total = torch.zeros((), dtype=torch.float64, device=tr.info.device)
    count = torch.zeros((), dtype=torch.float64, device=tr.info.device)
    for batch in build_val_loader(
        tr.data, tr.local_batch, tr.info.rank, tr.info.world_size, max_batches, max_tokens
    ):
        inputs = batch["input"].to(tr.info.device, non_blocking=True)
        targets = batch["target"].to(tr.info.device, non_blocking=True)
        logits = tr.model(inputs)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            reduction="sum",
            ignore_index=IGNORE_INDEX,
        )
        total += loss.double()
        count += (targets != IGNORE_INDEX).sum()
    stats = torch.stack([total, count])
    dist.all_reduce(stats)
    tr.model.train()
    return stats[0].item(), int(stats[1].item())


def evaluate(tr: Trainer, max_tokens: int = 0) -> float:
    """Mean validation loss per target token (all ranks); see :func:`evaluation_sums`."""
    total, count = evaluation_sums(tr, max_tokens)
    if count == 0:
        raise ConfigError(
            "data: the validation split holds no complete sequence of training.seq_len"
        )
    return total / count


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm; the run stops."""


@dataclass
class StepResult:
    """What one call of :func:`train_step` did."""

    loss: float
    """Mean loss per token of the global batch (all ranks, all micro-batches)."""
    grad_norm: float
    """Global L2 norm of the gradients before clipping."""
    metrics: dict[str, float]
    """TensorBoard scalars of the method's hook (empty for a skipped step)."""
    skipped: bool
    """True when the loss or the gradient norm was not finite and nothing was applied."""


def forward_backward(tr: Trainer, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Accumulate the gradients of ``batches``; returns this rank's share of the mean loss.

    Gradients are reduced across ranks only in the last micro-batch's backward: the earlier
    ones accumulate unreduced gradients locally, so a step moves the same bytes whatever
    the number of micro-batches.
    """
    device = tr.info.device
    tokens_per_step: float | torch.Tensor = (
        tr.cfg.training.global_batch_size * tr.cfg.training.seq_len
    )
    if tr.cfg.data.packing == "pad":  # the step's real targets over every rank: one all-reduce
        tokens_per_step = sum((b["target"] != IGNORE_INDEX).sum() for b in batches).to(device)
        dist.all_reduce(tokens_per_step)
        tokens_per_step = tokens_per_step.clamp_min(1).float()
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        if len(batches) > 1:
            set_gradient_sync(tr.model, i == len(batches) - 1)
        inputs = batch["input"].to(device, non_blocking=True)
        targets = batch["target"].to(device, non_blocking=True)
        logits = tr.model(inputs)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            reduction="sum",
            ignore_index=IGNORE_INDEX,
        )
        loss = loss / tokens_per_step
        loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def apply_update(
    tr: Trainer, params: list[torch.nn.Parameter], norm: torch.Tensor
) -> dict[str, float]:
    """Clip, run the method's hooks and the optimizer and LR steps; advance the step count."""
    clip_grads_(params, tr.cfg.training.max_norm, norm)
    hook_metrics = tr.method.before_optimizer_step(tr.step)
    tr.method.optimizer.step()
    for hook in tr.after_step:
        hook(tr.step)
    tr.scheduler.step()
    tr.method.optimizer.zero_grad(set_to_none=True)
    tr.step += 1
    return hook_metrics


def train_step(tr: Trainer, batches: list[dict[str, torch.Tensor]]) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches, skipped if it is not finite.

    A skipped step drops its gradients and changes nothing else: no switch, merge or
    projector refresh, no optimizer or LR step, ``tr.step`` unchanged (its batches are used).
    """
    loss_sum = forward_backward(tr, batches)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    norm = grad_norm(params)
    loss = loss_sum.clone()
    dist.all_reduce(loss)
    # The one host read of the step: every rank sees the same two values and decides alike.
    loss_value, norm_value = torch.stack([loss, norm.to(loss)]).tolist()
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        tr.method.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_value, norm_value, {}, skipped=True)
    hook_metrics = apply_update(tr, params, norm)
    return StepResult(loss_value, norm_value, hook_metrics, skipped=False)


def run(cfg: JobConfig) -> TrainResult:
    """Initialise the process group, train, and shut it down again."""
    check_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    check_model_config(cfg)
    info = init_distributed(cfg.parallel.backend, cfg.parallel.dp_replicate, cfg.parallel.dp_shard)
    try:
        result = train(cfg, info)
    except BaseException:
        shutdown(wait_for_all=False)
        raise
    shutdown()
    return result


def train(cfg: JobConfig, info: DistInfo) -> TrainResult:
    """Hold the dump folder (one live run per folder) while training in it."""
    dump = Path(cfg.job.dump_folder)
    if info.is_main:
        dump.mkdir(parents=True, exist_ok=True)
    log = print if info.is_main else (lambda _line: None)
    lock = hold_dump_folder(dump, cfg.job.lock_timeout_s, info.rank, info.device, log)
    try:
        return train_in(cfg, info, dump, lock.heartbeat if lock else lambda: None)
    finally:
        if lock is not None:
            lock.release()


def train_in(
    cfg: JobConfig, info: DistInfo, dump: Path, heartbeat: Callable[[], None]
) -> TrainResult:
    tr = build_trainer(cfg, info)
    wandb_run = None
    if cfg.metrics.wandb and info.is_main:
        wandb_run = start_wandb(dump, cfg.metrics.wandb_project, cfg.job.name, config_to_dict(cfg))
    logger = MetricsLogger(
        dump / "tb" if cfg.metrics.tensorboard else None, enabled=info.is_main, wandb_run=wandb_run
    )
    t = cfg.training
    n_params = sum(p.numel() for p in tr.model.parameters())
    n_trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    logger.line(
        f"{cfg.job.name}: {cfg.method.name} | {n_params / 1e6:.2f}M params, "
        f"{n_trainable / 1e6:.2f}M trainable ({n_trainable / n_params:.1%}) | "
        f"{info.world_size} x {info.device.type} | global batch {t.global_batch_size} x {t.seq_len} "
        f"tokens ({tr.grad_accum} micro-batch{'es' if tr.grad_accum > 1 else ''}) | {t.steps} steps"
    )
    peak = peak_flops(info.device)
    flops_per_token = training_flops_per_token(tr)

    ckpt = CheckpointManager(cfg, info, dump, logger.line)
    restored = ckpt.load(tr)  # resume (or a full initial load): the progress so far
    if info.is_main:
        (dump / "config.toml").write_text(to_toml(cfg))
    if restored is not None:
        result = TrainResult(**{**restored, "steps": t.steps})
    else:
        initial_val = evaluate(tr, t.val_tokens)
        logger.line(f"step 0 | val loss {initial_val:.4f} | val ppl {math.exp(initial_val):.2f}")
        logger.scalars(0, {"val/loss": initial_val, "val/ppl": math.exp(initial_val)})
        result = TrainResult(t.steps, initial_val_loss=initial_val, final_val_loss=initial_val)
        result.val_losses[0] = initial_val

    with step_profiler(cfg.profiling, dump, info.rank, info.device, tr.step, logger.line) as prof:
        train_loop(tr, ckpt, logger, result, prof, flops_per_token, peak, heartbeat)
    logger.line(
        f"final | {cfg.job.name} | step {tr.step} | val loss {result.final_val_loss:.4f} | "
        f"val ppl {result.final_val_ppl:.2f} (initial {result.initial_val_ppl:.2f})"
    )
    logger.close()
    if info.is_main:
        summary = {
            "steps": result.steps,
            "initial_val_loss": result.initial_val_loss,
            "final_val_loss": result.final_val_loss,
            "final_val_ppl": result.final_val_ppl,
            "train_losses": result.train_losses,
            "val_losses": result.val_losses,
            "skipped_steps": result.skipped_steps,
            "params": n_params,
            "trainable_params": n_trainable,
        }
        (dump / "summary.json").write_text(json.dumps(summary, indent=2))
    ckpt.close()
    return result


def train_loop(
    tr: Trainer,
    ckpt: CheckpointManager,
    logger: MetricsLogger,
    result: TrainResult,
    prof: StepProfiler,
    flops_per_token: float,
    peak: float | None,
    heartbeat: Callable[[], None],
) -> None:
    """Step until ``training.steps``: metrics, validation, diagnostics and checkpoints."""
    cfg, info, t = tr.cfg, tr.info, tr.cfg.training
    dump = Path(cfg.job.dump_folder)
    tokens_per_step = t.global_batch_size * t.seq_len
    train_iter = iter(tr.data.train)
    window_start = time.perf_counter()
    window_steps = 0
    window_switched = 0.0
    skipped_in_a_row = 0
    while tr.step < t.steps:
        ckpt.wait_for_staging()
        batches = [next(train_iter) for _ in range(tr.grad_accum)]
        out = train_step(tr, batches)
        prof.step(tr.step)
        window_steps += 1
        if out.skipped:
            skipped_in_a_row += 1
            result.skipped_steps += 1
            logger.scalars(tr.step + 1, {"train/skipped_steps": result.skipped_steps})
            logger.line(
                f"step {tr.step + 1}: skipped (loss {out.loss}, grad norm {out.grad_norm}); "
                f"{skipped_in_a_row} in a row, {result.skipped_steps} in all"
            )
            if skipped_in_a_row > t.max_skipped_steps:
                raise NonFiniteError(
                    f"stopping at step {tr.step + 1}: {skipped_in_a_row} consecutive steps "
                    f"had a non-finite loss or gradient norm (training.max_skipped_steps = "
                    f"{t.max_skipped_steps}); nothing of them was applied or saved"
                )
            continue
        skipped_in_a_row = 0
        hook_metrics = out.metrics
        if hook_metrics:
            logger.scalars(tr.step, hook_metrics)
            window_switched += hook_metrics.get("switch/vectors_switched", 0.0)
        last = tr.step == t.steps
        if tr.step % cfg.metrics.log_every == 0 or last:
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * tokens_per_step / elapsed
            values = {
                "train/loss": out.loss,
                "train/lr": tr.scheduler.get_last_lr()[0],
                "train/grad_norm": out.grad_norm,
                "perf/tokens_per_s": tokens_per_s,
                "perf/step_time_s": elapsed / window_steps,
                "mem/peak_gib": peak_memory_gib(info.device),
            }
            # Per device beside the global figures: comparable across world sizes.
            values["perf/tokens_per_s_per_device"] = tokens_per_s / info.world_size
            values["perf/tflops_per_device"] = (
                flops_per_token * tokens_per_s / info.world_size / 1e12
            )
            if peak:
                values["perf/mfu"] = flops_per_token * tokens_per_s / (peak * info.world_size)
            logger.scalars(tr.step, values)
            if "switch/vectors_switched" in hook_metrics:
                values["switch/vectors_switched_window"] = window_switched
            logger.line(format_step_line(tr.step, t.steps, values))
            heartbeat()
            result.train_losses[tr.step] = out.loss
            window_start = time.perf_counter()
            window_steps = 0
            window_switched = 0.0
        if last or (t.val_every and tr.step % t.val_every == 0):
            val = evaluate(tr, (last and t.final_val_tokens) or t.val_tokens)
            result.val_losses[tr.step] = val
            result.final_val_loss = val
            logger.scalars(tr.step, {"val/loss": val, "val/ppl": math.exp(val)})
            logger.line(f"step {tr.step} | val loss {val:.4f} | val ppl {math.exp(val):.2f}")
            window_start = time.perf_counter()
        every = cfg.metrics.rank_diagnostic_every
        if every > 0 and (last or tr.step % every == 0):
            log_rank_diagnostic(
                tr.model, cfg, tr.step, logger.writer, dump if info.is_main else None
            )
        ckpt.maybe_save(tr, dataclasses.asdict(result), last)
