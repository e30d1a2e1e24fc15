"""The trainer: seeded, AdamW, gradient clipping, validation each epoch, early stopping.

The best epoch (by the task's monitored validation metric) is checkpointed as it happens and
restored at the end, so the returned model is the one the metrics and exports describe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from seqpipe.checkpoint import load_checkpoint, save_checkpoint
from seqpipe.config import TrainingConfig
from seqpipe.distributed import Ranks, gathered, shard, shared, trainer
from seqpipe.errors import DamagedFileError
from seqpipe.resume import load_training_state, save_training_state
from seqpipe.runstate import raise_if_signalled


def seed_everything(seed: int, threads: int | None = None) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def train(
    task,
    model: torch.nn.Module,
    cfg: TrainingConfig,
    checkpoint: Path,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    monitor: tuple[str, str] | None = None,
    history_path: Path | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    ranks: Ranks = Ranks(),
    device: torch.device = torch.device("cpu"),
) -> list[dict]:
    """Train ``model`` on ``task``'s train split; return one record per epoch.

    ``monitor`` is the validation metric that picks the best epoch and its direction ("min" or
    "max"); default: the task's own. Each epoch's record is appended to ``history_path`` (JSON
    Lines) as soon as it exists, so a long run can be followed, or inspected after a crash.

    With ``run_dir``, the state to continue from is saved there after every epoch
    (:mod:`seqpipe.resume`); ``resume`` first restores it and continues with the next epoch, so
    the result is the one an uninterrupted run gives, bit for bit on CPU. Under torchrun every rank
    passes the run directory: all ranks restore from it, rank 0 alone writes it.

    ``on_epoch`` is called with each epoch's record once it is saved (``seqpipe tune`` reports the
    validation score there, and may stop the run by raising :class:`seqpipe.runstate.Stopped`).

    ``ranks``: this process's place in a torchrun job (see :mod:`seqpipe.distributed`): it trains
    on its shard of each epoch's batches; rank 0 validates, checkpoints and decides for all.
    ``device``: where the training steps run (batches are moved there); validation runs on the
    CPU copy of the kept weights, as evaluation and export do."""
    monitor_name, monitor_mode = monitor or (task.monitor, task.monitor_mode)
    # the epoch line also shows the task's own metric when the epoch is picked by loss
    shown = task.monitor if monitor_name == "loss" and task.monitor != "loss" else None
    generator = torch.Generator().manual_seed(cfg.seed)
    model.to(device)
    step = trainer(task, model, ranks, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    # an average of recent weights is a smoother model than the last step's: less noise in which
    # epoch early stopping picks, and usually a better one
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    kept = ema.module if ema is not None else model  # what is validated, checkpointed and returned
    sign = 1.0 if monitor_mode == "max" else -1.0
    best, best_loss, stale, history, first_epoch, spent = -math.inf, math.inf, 0, [], 1, 0.0
    if resume:
        assert run_dir is not None  # resuming reads the run directory's state
        counters = load_training_state(run_dir, model, ema, optimizer, generator, ranks.rank)
        best, stale, spent, first_epoch = (
            counters["best"],
            counters["stale"],
            counters["seconds"],
            counters["epoch"] + 1,
        )
        best_loss = counters.get("best_loss", math.inf)
        history = _history(history_path, counters.pop("history", None))
        log(f"resuming after epoch {counters['epoch']} (best validation {monitor_name} so far: {sign * best:.4f})")
        if counters.get("processes", 1) != ranks.world:
            log(
                f"the run trained in {counters.get('processes', 1)} process(es) and continues in {ranks.world}: the "
                "batches per "
                "step and the dropout draws change, so the result will differ from an uninterrupted run's"
            )
        if stale >= cfg.patience or (cfg.max_minutes is not None and spent >= cfg.max_minutes * 60):
            first_epoch = cfg.epochs + 1  # training had already stopped: go on to evaluation and export
    keeps_state = shared(run_dir is not None, ranks)  # rank 0's run directory: whether each epoch's state is saved
    n_batches = math.ceil(math.ceil(len(task.examples["train"]) / cfg.batch_size) / ranks.world)
    # bf16: the forward pass and loss in bfloat16 where torch's CPU autocast lists the op; the weights,
    # their gradients and the optimizer stay fp32, so validation, checkpoints and exports are unchanged
    autocast = (
        (lambda: torch.autocast(device.type, dtype=AUTOCAST[cfg.precision]))
        if cfg.precision in AUTOCAST
        else contextlib.nullcontext
    )
    # fp16 (CUDA only) scales the loss so small gradients do not flush to zero; bf16 has fp32's range
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    board = _tensorboard(history_path.parent / "tensorboard") if history_path is not None and ranks.main else None
    training_started = time.perf_counter() - spent
    for epoch in range(first_epoch, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, count, padding = 0.0, 0, Padding()
        # every rank draws the same order from the seeded generator, then trains on its own shard
        bucket = {"bucket": True} if cfg.bucket else {}  # a task without the keyword is refused at check when asked
        batches = shard(task.batches("train", cfg.batch_size, shuffle=True, generator=generator, **bucket), ranks)
        bar = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            file=sys.stderr,
            disable=None if ranks.main else True,
            unit="batch",
        )
        for batch in bar:
            batch = on_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = step(batch)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.item() * len(batch.targets)
            count += len(batch.targets)
            padding.add(batch)
            bar.set_postfix(loss=f"{total / count:.4f}")
            raise_if_signalled()
        trained = time.perf_counter() - started
        validation = shared(_validate(task, kept, device) if ranks.main else None, ranks)
        score = sign * validation[monitor_name]
        improved = better(score, validation["loss"], best, best_loss)
        if improved:
            best, best_loss, stale = score, validation["loss"], 0
            if ranks.main:
                save_checkpoint(kept, checkpoint)
        else:
            stale += 1
            for group in optimizer.param_groups:  # step size down once progress stalls
                group["lr"] *= cfg.lr_decay
        record = {
            "epoch": epoch,
            "train_loss": total / count,
            "validation": validation,
            "seconds": time.perf_counter() - started,
            "train_seconds": trained,
            "best": improved,
            **padding.record(),
        }
        history.append(record)
        if history_path is not None and ranks.main:
            with history_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if board is not None:
            board.add_scalar("train/loss", record["train_loss"], epoch)
            for name, value in validation.items():
                if isinstance(value, float):
                    board.add_scalar(f"validation/{name}", value, epoch)
            board.flush()
        if keeps_state:
            rank_rng = gathered(torch.get_rng_state(), ranks)  # every rank takes part; rank 0 writes
            if ranks.main:
                assert run_dir is not None  # keeps_state: rank 0 has the run directory
                save_training_state(
                    run_dir,
                    model,
                    ema,
                    optimizer,
                    generator,
                    {
                        "epoch": epoch,
                        "best": best,
                        "best_loss": best_loss,
                        "stale": stale,
                        "seconds": time.perf_counter() - training_started,
                        "monitor": monitor_name,
                    },
                    rank_rng if ranks.distributed else None,
                    history,
                )
        metric = monitor_name if monitor_name != "loss" else shown
        log(
            f"epoch {epoch:>3}/{cfg.epochs}  train loss {record['train_loss']:.4f}  validation loss "
            f"{validation['loss']:.4f}"
            + (
                f"  {metric} {validation[metric]:.4f}"
                if metric is not None and isinstance(validation.get(metric), float)
                else ""
            )
            + f"  {record['seconds']:.1f}s{padding.say()}{'  *best' if improved else ''}"
        )
        raise_if_signalled()  # a Ctrl-C that landed in a finalizer during validation or saving
        if on_epoch is not None:
            on_epoch(record)
        if stale >= cfg.patience:
            log(f"early stop: validation {monitor_name} has not improved for {cfg.patience} epochs")
            break
        minutes = shared((time.perf_counter() - training_started) / 60, ranks)  # rank 0's clock decides for all
        if cfg.max_minutes is not None and minutes >= cfg.max_minutes and epoch < cfg.epochs:
            if ranks.main:  # the other ranks' history starts at a resume, and may hold no best epoch
                log(
                    f"time budget: {minutes:.1f} of training.max_minutes = {cfg.max_minutes:g} spent after epoch "
                    f"{epoch}; "
                    f"stopping here, the best epoch so far ({max(r['epoch'] for r in history if r['best'])}) goes on "
                    "to "
                    "evaluation and export"
                )
            break
    if board is not None:
        board.close()
    model.cpu()
    if ranks.main:
        load_checkpoint(model, checkpoint)
    model.eval()
    return history


def better(score: float, loss: float, best: float, best_loss: float) -> bool:
    """Whether an epoch's validation ``score`` (signed so higher is better) beats the best so far; a
    tie goes to the lower validation loss. On a small validation split a metric such as accuracy
    takes few values, and the first epoch to reach one would otherwise be kept however unsure its
    answers still are (loss 0.52 beside a perfect macro-F1)."""
    if score != best:
        return score > best
    return loss < best_loss


class Padding:
    """The share of an epoch's padded steps that are padding: what ``[training] bucket`` saves.
    Counted over a batch's length fields (see :class:`seqpipe.contracts.Batch`: ``lengths``, or
    ``source_lengths`` and ``target_lengths``), each padded to the batch's longest sequence."""

    def __init__(self) -> None:
        self.steps = self.padded = 0

    def add(self, batch) -> None:
        if not dataclasses.is_dataclass(batch):
            return
        for field in dataclasses.fields(batch):
            lengths = getattr(batch, field.name)
            if (
                (field.name == "lengths" or field.name.endswith("_lengths"))
                and isinstance(lengths, torch.Tensor)
                and lengths.numel()
            ):
                self.steps += int(lengths.sum())
                self.padded += int(lengths.max()) * lengths.numel()

    def share(self) -> float | None:
        return 1.0 - self.steps / self.padded if self.padded else None

    def record(self) -> dict[str, float]:
        share = self.share()
        return {} if share is None else {"padding_share": share}

    def say(self) -> str:
        share = self.share()
        return "" if share is None else f"  padding {share:.0%}"


# autocast dtypes of the reduced training precisions (fp16 is refused at `check` unless the device is CUDA)
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def on_device(batch, device: torch.device):
    """``batch`` with its tensor fields on ``device`` (a task's batches are dataclasses of tensors)."""
    if device.type == "cpu":
        return batch
    if not dataclasses.is_dataclass(batch):
        raise TypeError(
            f"a batch of type {type(batch).__name__} is not a dataclass of tensors, so it cannot be moved to "
            f"{device}; train on the CPU or make the task's batches dataclasses"
        )
    return dataclasses.replace(  # type: ignore[type-var]  # a dataclass instance: checked above
        batch,
        **{
            f.name: getattr(batch, f.name).to(device)
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)
        },
    )


def _validate(task, kept: torch.nn.Module, device: torch.device) -> dict:
    """The task's validation metrics of the kept weights, computed on the CPU (where tasks build
    their evaluation batches), then the weights go back to the training device."""
    if device.type == "cpu":
        return task.evaluate(kept, "validation")
    kept.cpu()
    try:
        return task.evaluate(kept, "validation")
    finally:
        kept.to(device)


def _tensorboard(folder: Path):
    """A TensorBoard writer when the optional ``tensorboard`` package is installed (``pip install
    seqpipe[tensorboard]``), else None: history.jsonl has the same figures."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def _history(path: Path | None, saved: list[dict] | None) -> list[dict]:
    """The records of the epochs the resumed state holds, written back as the run's history.jsonl (a
    killed run may have logged one more epoch than its last saved state; that epoch is run again)."""
    if saved is None:
        raise DamagedFileError(
            f"{path.parent if path else 'the run directory'}: its resume.safetensors holds no epoch history "
            "(written by an older seqpipe); start the run again."
        )
    if path is not None:
        path.write_text("".join(json.dumps(r) + "\n" for r in saved), encoding="utf-8")
    return list(saved)
