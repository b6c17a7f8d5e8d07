"""The per-batch code: one training pass and one evaluation pass, shared by training, test_dlv3p.py and the
benchmarks. The run around them (epochs, validation cadence, checkpoints) is ``deeplabv3plus.trainer``'s.

On a GPU the training step never waits on the host: the loss is summed and
checked for non-finite values on the device, and the host looks at the result
only every ``log_every`` steps and at the end of the pass, before any
checkpoint is written. The loss lives outside the model (``deeplabv3plus.loss``),
so prediction and TTA reuse the model as it is.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from deeplabv3plus.distributed import all_reduce_sum, get_world_size, is_main_process
from deeplabv3plus.inference import InferenceOptions, predict
from deeplabv3plus.metrics import ConfusionMatrix
from deeplabv3plus.precision import Precision, autocast
from segdata.classes import IGNORE_INDEX

__all__ = ["EpochStats", "EvaluationResult", "NoLabelledPixels", "TrainingStep", "evaluate", "masks_to_device",
           "peak_memory_mb", "to_device", "train_one_epoch"]


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Copy a batch of images to ``device`` without waiting (pinned memory), in the model's memory format."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def masks_to_device(masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, H, W) uint8 trainIds (pinned) -> int64 on ``device``: the copy moves 1 byte per pixel, not 8."""
    return masks.to(device, non_blocking=True).long()


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or the process's peak RSS (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NoLabelledPixels(ValueError):
    """A training pass whose masks had no labelled pixel: the model cannot learn from such data."""


@dataclass
class TrainingStep:
    """The objects of a training step, carried together: the model as trained (DDP / compiled), the criterion, the
    optimizer with its per-iteration LR scheduler and AMP scaler, the device, the precision and memory format, the
    batch transform that finishes a batch on the device (the colour jitter and normalisation of uint8 crops:
    ``batch_transform(images on the device, meta)``), and how often the host looks at the loss."""

    model: nn.Module
    criterion: Callable[[torch.Tensor | dict, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    scaler: torch.amp.GradScaler | None = None
    precision: Precision = Precision()
    channels_last: bool = False
    batch_transform: Callable[[torch.Tensor, dict], torch.Tensor] | None = None
    log_every: int = 20
    ignore_index: int = IGNORE_INDEX

    def run(self, images: torch.Tensor, masks: torch.Tensor, meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a batch from the loader: to the device, forward, loss, backward, update, LR step. Returns the
        loss and the batch's labelled pixels, both on the device (not read)."""
        if self.batch_transform is not None:
            images = self.batch_transform(images.to(self.device, non_blocking=True), meta)
        images, masks = to_device(images, self.device, self.channels_last), masks_to_device(masks, self.device)
        with autocast(self.device, self.precision.dtype):
            outputs = self.model(images)
        loss = self.criterion(outputs, masks)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return loss, (masks != self.ignore_index).sum()


@dataclass
class EpochStats:
    """What one training pass gives: mean loss, steps, seconds per step waiting for data and computing, peak memory."""

    loss: float
    steps: int
    data_seconds: float
    compute_seconds: float
    peak_memory_mb: float


class _NonFiniteLossWatch:
    """Remembers, on the device, the first step whose loss was not finite; the host reads it only in ``check``."""

    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_value = torch.zeros((), dtype=torch.float32, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        is_first = ~torch.isfinite(loss) & (self.first_step < 0)
        self.first_step = torch.where(is_first, step, self.first_step)
        self.first_value = torch.where(is_first, loss.detach().float(), self.first_value)

    def check(self) -> None:
        """FloatingPointError when any process saw a non-finite loss (the same decision on every rank)."""
        flags = all_reduce_sum((self.first_step >= 0).to(torch.float64).reshape(1))
        if flags.item() == 0:  # one host sync, every log_every steps
            return
        step = int(self.first_step.item())
        if step < 0:
            raise FloatingPointError("the training loss is not finite on another process")
        raise FloatingPointError(f"the training loss is {self.first_value.item()} at step {step} of this epoch")


@dataclass
class _LogPoint:
    """Where the previous check stood: steps done, the time, and the seconds waited for data until then."""

    steps: int
    time: float
    data_seconds: float


def train_one_epoch(step: TrainingStep, batches: Iterable, *, max_iterations: int | None = None,
                    on_log: Callable[[int, dict], None] | None = None, description: str = "train") -> EpochStats:
    """One pass of ``step`` over ``batches`` (a loader, or anything with a length; at most ``max_iterations``).

    The LR scheduler steps once per iteration. A non-finite loss raises
    FloatingPointError at the next check (every ``log_every`` steps and at the
    end of the pass), so a pass that saw one never returns and no checkpoint
    holds its weights. The progress bar counts every step and shows the loss of
    the checked steps (reading it is the host sync the check makes anyway).
    A pass whose masks hold no labelled pixel (on any process) raises
    NoLabelledPixels at its end: a batch without labels gives a zero loss, a
    pass without any is data the model cannot learn from.
    ``on_log(steps done, values)`` gets, at each check, the loss (and the terms a
    criterion keeps in ``parts``), the LR, seconds per iteration waiting for data
    and computing since the previous check, and the peak memory: read at the sync
    the check makes anyway.
    """
    step.model.train()
    device = step.device
    steps = len(batches) if max_iterations is None else min(len(batches), max_iterations)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    labelled = torch.zeros((), dtype=torch.int64, device=device)
    watch = _NonFiniteLossWatch(device)
    bar = tqdm(total=steps, desc=description, leave=False, disable=not is_main_process(), dynamic_ncols=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = ready = time.perf_counter()
    data_seconds = 0.0
    previous = _LogPoint(0, start, 0.0)
    try:
        for index, (images, masks, meta) in enumerate(batches):
            if index >= steps:
                break
            data_seconds += time.perf_counter() - ready
            loss, batch_labelled = step.run(images, masks, meta)
            watch.observe(loss, index)
            labelled += batch_labelled
            loss_sum += loss.detach()
            bar.update(1)  # the count needs no device value: the bar moves every step, on every device
            if (index + 1) % step.log_every == 0 or index + 1 == steps:
                watch.check()
                parts = getattr(step.criterion, "parts", {})
                read = torch.stack([loss.detach().float(), *(value.float() for value in parts.values())]).tolist()
                learning_rate = step.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{read[0]:.4f}", lr=f"{learning_rate:.2e}")
                if on_log is not None:
                    now, count = time.perf_counter(), index + 1 - previous.steps
                    waited = data_seconds - previous.data_seconds
                    on_log(index + 1, {"loss": read[0], **{f"loss_{key}": value for key, value in zip(parts, read[1:])},
                                       "lr": learning_rate, "data_time": waited / count,
                                       "compute_time": (now - previous.time - waited) / count,
                                       "peak_memory_mib": peak_memory_mb(device)})
                    previous = _LogPoint(index + 1, now, data_seconds)
            ready = time.perf_counter()
    finally:
        bar.close()
    _synchronize(device)
    total_seconds = time.perf_counter() - start
    loss_total, labelled_total = all_reduce_sum(torch.stack([loss_sum / max(1, steps), labelled.double()])).tolist()
    if steps and labelled_total == 0:
        raise NoLabelledPixels(f"no labelled pixel in this pass's {steps} training batches: every mask pixel is "
                               f"{step.ignore_index} (ignored), so the model learns nothing")
    per_step = max(1, steps)
    return EpochStats(loss_total / get_world_size(), steps, data_seconds / per_step,
                      (total_seconds - data_seconds) / per_step, peak_memory_mb(device))


@dataclass
class EvaluationResult:
    """What one pass over a split gives: the summed confusion matrix, loss, timing and memory."""

    confusion: ConfusionMatrix
    loss: float
    images: int
    seconds_per_image: float
    peak_memory_mb: float
    memory: str = "process RSS"  # what peak_memory_mb measures: "GPU allocated" on CUDA

    def scores(self) -> dict[str, object]:
        return self.confusion.scores()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int,
             options: InferenceOptions = InferenceOptions(),
             on_prediction: Callable[[torch.Tensor, dict], None] | None = None) -> EvaluationResult:
    """Predict every batch with the inference ``options`` (whole or sliding windows, flip, scales, precision, memory
    format), accumulate the confusion matrix over IGNORE_INDEX-free pixels and the pixel-mean NLL loss.

    ``on_prediction(predictions (N, H, W) int64 trainIds, meta)`` is called per batch (to write PNGs). Under DDP
    each process sees its shard and the sums are all-reduced, so the result equals a single-process run.
    """
    model.eval()
    confusion = ConfusionMatrix(num_classes, IGNORE_INDEX, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixels = torch.zeros((), dtype=torch.float64, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inference_seconds, images_seen = 0.0, 0
    split = getattr(getattr(loader, "dataset", None), "split", "eval")
    for images, masks, meta in tqdm(loader, desc=split, leave=False, disable=not is_main_process(),
                                    dynamic_ncols=True):
        images, masks = to_device(images, device, options.channels_last), masks_to_device(masks, device)
        _synchronize(device)  # time the model alone, not the copy
        start = time.perf_counter()
        probabilities = predict(model, images, options, masks.shape[-2:])
        predictions = probabilities.argmax(dim=1)
        _synchronize(device)
        inference_seconds += time.perf_counter() - start
        images_seen += images.shape[0]
        log_probabilities = probabilities.clamp_min(1e-12).log()
        loss_sum += F.nll_loss(log_probabilities, masks, ignore_index=IGNORE_INDEX, reduction="sum").double()
        pixels += (masks != IGNORE_INDEX).sum()
        confusion.update(masks, predictions)
        if on_prediction is not None:
            on_prediction(predictions, meta)
    confusion.reduce_from_all_processes()
    counts = torch.tensor([float(images_seen), inference_seconds], dtype=torch.float64, device=device)
    loss_total, pixel_total, image_total, seconds_total = all_reduce_sum(
        torch.cat([torch.stack([loss_sum, pixels]), counts])).tolist()
    return EvaluationResult(
        confusion=confusion,
        loss=loss_total / pixel_total if pixel_total else math.nan,
        images=int(image_total),
        seconds_per_image=seconds_total / max(1.0, image_total),
        peak_memory_mb=peak_memory_mb(device),
        memory="GPU allocated" if device.type == "cuda" else "process RSS",
    )
