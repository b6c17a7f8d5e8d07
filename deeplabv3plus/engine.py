"""Training and evaluation loops, shared by train_dlv3p.py and test_dlv3p.py.

``train_one_epoch`` and ``evaluate`` are plain functions over a model and a
loader; ``fit`` strings epochs, validation, history and checkpoints together.
The loss lives here, not in the model, so prediction and TTA reuse the model
as it is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from deeplabv3plus.checkpoint import save_checkpoint
from deeplabv3plus.distributed import all_reduce_sum, get_world_size, is_main_process
from deeplabv3plus.history import write_history
from deeplabv3plus.metrics import ConfusionMatrix

__all__ = ["EvaluationResult", "TrainState", "evaluate", "fit", "poly_lr_factor", "predict", "train_one_epoch"]

log = logging.getLogger(__name__)


def poly_lr_factor(iteration: int, total_iterations: int, power: float = 0.9, warmup_iterations: int = 0,
                   warmup_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up from ``warmup_ratio`` to 1, then ``(1 - it / total) ** power``."""
    poly = max(0.0, 1.0 - iteration / max(1, total_iterations)) ** power
    if iteration < warmup_iterations:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iterations)
    return poly


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_amp_dtype(amp: bool, amp_dtype: str | None, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``--amp [--amp-dtype]``: float16 on CUDA and bfloat16 on the CPU by default."""
    if not amp:
        return None
    return AMP_DTYPES[amp_dtype or ("float16" if torch.device(device).type == "cuda" else "bfloat16")]


def cpu_supports_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 or AMX); elsewhere bf16 autocast is slower than fp32."""
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # private, so guarded
    try:
        return bool(is_supported and is_supported())
    except RuntimeError:
        return False


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision on ``device`` when ``amp_dtype`` is given, else nothing."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader, device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, max_iterations: int | None = None,
                    description: str = "train") -> tuple[float, int]:
    """One pass over ``loader`` (at most ``max_iterations`` steps); returns (mean loss, steps).

    The LR scheduler steps once per iteration. A non-finite loss raises
    FloatingPointError before the optimizer step, so no weight is spoilt.
    """
    model.train()
    steps = len(loader) if max_iterations is None else min(len(loader), max_iterations)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    bar = tqdm(total=steps, desc=description, leave=False, disable=not is_main_process(), dynamic_ncols=True)
    for step, (images, masks, _) in enumerate(loader):
        if step >= steps:
            break
        images, masks = _to_device(images, device, channels_last), masks.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        loss = criterion(logits.float(), masks)
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"the training loss is {loss.item()} at step {step} of this epoch")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    bar.close()
    mean_loss = all_reduce_sum(loss_sum / max(1, steps)).item() / get_world_size()
    return mean_loss, steps


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,),
            amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Class probabilities (N, C, H, W), averaged over scales and (optionally) horizontal flips."""
    height, width = images.shape[-2:]
    total = None
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(
            images, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        variants = [(scaled, False), (scaled.flip(-1), True)] if flip else [(scaled, False)]
        for variant, flipped in variants:
            with autocast(images.device, amp_dtype):
                logits = model(variant)
            logits = logits.float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if flip else 1))


@dataclass
class EvaluationResult:
    """What one pass over a split gives: the summed confusion matrix, loss, timing and memory."""

    confusion: ConfusionMatrix
    loss: float
    images: int
    seconds_per_image: float
    peak_memory_mb: float

    def scores(self) -> dict[str, object]:
        return self.confusion.scores()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
             ignore_index: int = 255, flip: bool = False, scales: Sequence[float] = (1.0,),
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             on_prediction: Callable[[torch.Tensor, dict], None] | None = None,
             description: str = "eval") -> EvaluationResult:
    """Predict every batch, accumulate the confusion matrix and the pixel-mean NLL loss.

    ``on_prediction(predictions (N, H, W) int64 trainIds, meta)`` is called per batch
    (to write PNGs). Under DDP each process sees its shard and the sums are
    all-reduced, so the result equals a single-process run.
    """
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixels = torch.zeros((), dtype=torch.float64, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inference_seconds, images_seen = 0.0, 0
    for images, masks, meta in tqdm(loader, desc=description, leave=False, disable=not is_main_process(),
                                    dynamic_ncols=True):
        images, masks = _to_device(images, device, channels_last), masks.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        probabilities = predict(model, images, flip=flip, scales=scales, amp_dtype=amp_dtype)
        predictions = probabilities.argmax(dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        inference_seconds += time.perf_counter() - start
        images_seen += images.shape[0]
        valid = masks != ignore_index
        if valid.any():
            log_probabilities = probabilities.clamp_min(1e-12).log()
            loss_sum += F.nll_loss(log_probabilities, masks, ignore_index=ignore_index, reduction="sum").double()
            pixels += valid.sum()
        confusion.update(masks, predictions)
        if on_prediction is not None:
            on_prediction(predictions, meta)
    confusion.reduce_from_all_processes()
    totals = all_reduce_sum(torch.tensor([loss_sum.item(), pixels.item(), float(images_seen), inference_seconds],
                                         dtype=torch.float64, device=device))
    loss_total, pixel_total, image_total, seconds_total = totals.tolist()
    return EvaluationResult(
        confusion=confusion,
        loss=loss_total / pixel_total if pixel_total else math.nan,
        images=int(image_total),
        seconds_per_image=seconds_total / max(1.0, image_total),
        peak_memory_mb=_peak_memory_mb(device),
    )


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so that --resume continues exactly."""

    epoch: int = 0
    iteration: int = 0
    best_miou: float = -1.0
    history: list[dict] = field(default_factory=list)
    loss_sum: float = 0.0  # train loss summed over the epochs since the last validation
    loss_epochs: int = 0
    seconds: float = 0.0  # wall time since the last validation

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def seed_for_epoch(seed: int, epoch: int, rank: int) -> None:
    """Reseed torch at each epoch start: data order, augmentation and dropout then depend only on
    (seed, epoch, rank), so a resumed run repeats exactly what an uninterrupted one does."""
    torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


@dataclass
class FitConfig:
    """The knobs of :func:`fit` that are not objects."""

    total_iterations: int
    run_dir: Path
    num_classes: int
    class_names: Sequence[str]
    val_every: int = 1
    seed: int = 0
    rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    checkpoint_extra: dict = field(default_factory=dict)


def fit(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, train_loader: DataLoader,
        val_loader: DataLoader, device: torch.device, config: FitConfig, state: TrainState) -> TrainState:
    """Train epoch by epoch up to ``config.total_iterations``, validating every ``val_every`` epochs
    and after the last; rank 0 writes history.csv, per_class_iou.json, last.pth and best.pth.

    A non-finite loss raises FloatingPointError; the checkpoints already written stay as they were.
    """
    # Evaluate the model inside DDP: its forward would sync buffers, and ranks may get unequal shards.
    eval_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    iterations_per_epoch = len(train_loader)
    num_epochs = math.ceil(config.total_iterations / iterations_per_epoch)
    main = is_main_process()

    def checkpoint(name: str) -> None:
        if main:
            save_checkpoint(config.run_dir / name, model, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), **state.as_dict(),
                            **config.checkpoint_extra)

    for epoch in range(state.epoch, num_epochs):
        seed_for_epoch(config.seed, epoch, config.rank)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        try:
            loss, steps = train_one_epoch(
                model, criterion, optimizer, scheduler, train_loader, device, scaler=scaler,
                amp_dtype=config.amp_dtype, channels_last=config.channels_last,
                max_iterations=config.total_iterations - state.iteration, description=f"epoch {epoch + 1}/{num_epochs}")
        except FloatingPointError as error:
            raise FloatingPointError(
                f"{error} (epoch {epoch + 1}, iteration {state.iteration}); training stopped and "
                f"{config.run_dir / 'last.pth'} keeps the last good state. Lower --lr, or leave out --amp"
            ) from None
        state.epoch, state.iteration = epoch + 1, state.iteration + steps
        state.loss_sum, state.loss_epochs = state.loss_sum + loss, state.loss_epochs + 1
        state.seconds += time.perf_counter() - start
        if state.epoch % config.val_every == 0 or state.epoch == num_epochs:
            start = time.perf_counter()
            result = evaluate(eval_model, val_loader, device, config.num_classes, amp_dtype=config.amp_dtype,
                              channels_last=config.channels_last, description="val")
            scores = result.scores()
            state.history.append({
                "epoch": state.epoch, "iteration": state.iteration, "lr": optimizer.param_groups[-1]["lr"],
                "train_loss": state.loss_sum / state.loss_epochs, "val_loss": result.loss,
                "miou": scores["mean_iou"], "mean_dice": scores["mean_dice"],
                "pixel_accuracy": scores["pixel_accuracy"], "mean_class_accuracy": scores["mean_class_accuracy"],
                "seconds": state.seconds + time.perf_counter() - start, "iou": scores["iou"],
            })
            state.loss_sum, state.loss_epochs, state.seconds = 0.0, 0, 0.0
            log.info("epoch %d iteration %d: train loss %.4f, val loss %.4f, mIoU %.4f, mDice %.4f, pixel acc %.4f",
                     state.epoch, state.iteration, state.history[-1]["train_loss"], result.loss,
                     scores["mean_iou"], scores["mean_dice"], scores["pixel_accuracy"])
            if main:
                write_history(config.run_dir, state.history, config.class_names)
            if scores["mean_iou"] > state.best_miou:
                state.best_miou = scores["mean_iou"]
                checkpoint("best.pth")
        checkpoint("last.pth")
    return state
