"""Training and evaluation loops, shared by train_dlv3p.py and test_dlv3p.py.

``train_one_epoch`` and ``evaluate`` are plain functions over a model and a
loader; ``fit`` strings epochs, validation, history and checkpoints together.
The loss lives outside the model (``deeplabv3plus.loss``), so prediction and
TTA reuse the model as it is.

On a GPU the training step never waits on the host: the loss is summed and
checked for non-finite values on the device, and the host looks at the result
only every ``log_every`` steps and at the end of the epoch, before any
checkpoint is written.
"""

from __future__ import annotations

import itertools
import logging
import math
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from deeplabv3plus.checkpoint import CheckpointWriter
from deeplabv3plus.distributed import all_reduce_sum, get_world_size, is_main_process
from deeplabv3plus.history import write_history
from deeplabv3plus.inference import predict
from deeplabv3plus.metrics import ConfusionMatrix
from deeplabv3plus.precision import Precision, autocast
from segdata.classes import IGNORE_INDEX
from segdata.dataset import EpochStream

__all__ = [
    "EpochStats",
    "EvaluationResult",
    "NoLabelledPixels",
    "TrainState",
    "evaluate",
    "fit",
    "poly_lr_factor",
    "train_one_epoch",
]

log = logging.getLogger(__name__)


def poly_lr_factor(iteration: int, total_iterations: int, power: float = 0.9, warmup_iterations: int = 0,
                   warmup_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up from ``warmup_ratio`` to 1, then ``(1 - it / total) ** power``."""
    poly = max(0.0, 1.0 - iteration / max(1, total_iterations)) ** power
    if iteration < warmup_iterations:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iterations)
    return poly


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
    """A training epoch whose masks had no labelled pixel: the model cannot learn from such data."""


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


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader, device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, precision: Precision = Precision(),
                    channels_last: bool = False, max_iterations: int | None = None, log_every: int = 20,
                    batch_transform: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
                    ignore_index: int = IGNORE_INDEX, on_log: Callable[[int, dict], None] | None = None,
                    description: str = "train") -> EpochStats:
    """One pass over ``loader`` (at most ``max_iterations`` steps).

    The LR scheduler steps once per iteration. A non-finite loss raises
    FloatingPointError at the next check (every ``log_every`` steps and at the
    end of the pass), so an epoch that saw one never returns and no checkpoint
    holds its weights. The progress bar counts every step and shows the loss of
    the checked steps (reading it is the host sync the check makes anyway).
    ``batch_transform(images on the device, meta)`` finishes a batch on the device
    (the colour jitter and normalisation of uint8 crops) before the model sees it.
    A pass whose masks hold no pixel other than ``ignore_index`` (on any process)
    raises NoLabelledPixels at its end: a batch without labels gives a zero loss,
    an epoch without any is data the model cannot learn from.
    ``on_log(steps done, values)`` gets, at each check, the loss (and the terms a
    criterion keeps in ``parts``), the LR, seconds per iteration waiting for data
    and computing since the previous check, and the peak memory: read at the sync
    the check makes anyway.
    """
    model.train()
    steps = len(loader) if max_iterations is None else min(len(loader), max_iterations)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    labelled = torch.zeros((), dtype=torch.int64, device=device)
    watch = _NonFiniteLossWatch(device)
    bar = tqdm(total=steps, desc=description, leave=False, disable=not is_main_process(), dynamic_ncols=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = ready = time.perf_counter()
    data_seconds = 0.0
    logged = (0, start, 0.0)  # steps, time and data seconds at the previous check
    try:
        for step, (images, masks, meta) in enumerate(loader):
            if step >= steps:
                break
            data_seconds += time.perf_counter() - ready
            if batch_transform is not None:
                images = batch_transform(images.to(device, non_blocking=True), meta)
            images, masks = to_device(images, device, channels_last), masks_to_device(masks, device)
            with autocast(device, precision.dtype):
                outputs = model(images)
            loss = criterion(outputs, masks)
            watch.observe(loss, step)
            labelled += (masks != ignore_index).sum()
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
            bar.update(1)  # the count needs no device value: the bar moves every step, on every device
            if (step + 1) % log_every == 0 or step + 1 == steps:
                watch.check()
                parts = getattr(criterion, "parts", {})
                read = torch.stack([loss.detach().float(), *(value.float() for value in parts.values())]).tolist()
                bar.set_postfix(loss=f"{read[0]:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                if on_log is not None:
                    now, count = time.perf_counter(), step + 1 - logged[0]
                    waited = data_seconds - logged[2]
                    on_log(step + 1, {"loss": read[0], **{f"loss_{key}": value for key, value in zip(parts, read[1:])},
                                      "lr": optimizer.param_groups[0]["lr"], "data_time": waited / count,
                                      "compute_time": (now - logged[1] - waited) / count,
                                      "peak_memory_mib": peak_memory_mb(device)})
                    logged = (step + 1, now, data_seconds)
            ready = time.perf_counter()
    finally:
        bar.close()
    _synchronize(device)
    total_seconds = time.perf_counter() - start
    loss_total, labelled_total = all_reduce_sum(torch.stack([loss_sum / max(1, steps), labelled.double()])).tolist()
    if steps and labelled_total == 0:
        raise NoLabelledPixels(f"no labelled pixel in this pass's {steps} training batches: every mask pixel is "
                               f"{ignore_index} (ignored), so the model learns nothing")
    mean_loss = loss_total / get_world_size()
    per_step = max(1, steps)
    return EpochStats(mean_loss, steps, data_seconds / per_step, (total_seconds - data_seconds) / per_step,
                      peak_memory_mb(device))


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
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
             ignore_index: int = IGNORE_INDEX, flip: bool = False, scales: Sequence[float] = (1.0,),
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             on_prediction: Callable[[torch.Tensor, dict], None] | None = None,
             description: str = "eval", **predict_options: object) -> EvaluationResult:
    """Predict every batch, accumulate the confusion matrix and the pixel-mean NLL loss.

    ``on_prediction(predictions (N, H, W) int64 trainIds, meta)`` is called per batch
    (to write PNGs). ``predict_options`` go to :func:`deeplabv3plus.inference.predict`
    (sliding windows). Under DDP each process sees its shard and the sums are
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
        images, masks = to_device(images, device, channels_last), masks_to_device(masks, device)
        _synchronize(device)  # time the model alone, not the copy
        start = time.perf_counter()
        probabilities = predict(model, images, flip=flip, scales=scales, amp_dtype=amp_dtype, **predict_options)
        predictions = probabilities.argmax(dim=1)
        _synchronize(device)
        inference_seconds += time.perf_counter() - start
        images_seen += images.shape[0]
        log_probabilities = probabilities.clamp_min(1e-12).log()
        loss_sum += F.nll_loss(log_probabilities, masks, ignore_index=ignore_index, reduction="sum").double()
        pixels += (masks != ignore_index).sum()
        confusion.update(masks, predictions)
        if on_prediction is not None:
            on_prediction(predictions, meta)
    confusion.reduce_from_all_processes()
    totals = all_reduce_sum(
        torch.stack(
            [
                loss_sum,
                pixels,
                torch.tensor(float(images_seen), dtype=torch.float64, device=device),
                torch.tensor(inference_seconds, dtype=torch.float64, device=device),
            ]
        )
    )
    loss_total, pixel_total, image_total, seconds_total = totals.tolist()
    return EvaluationResult(
        confusion=confusion,
        loss=loss_total / pixel_total if pixel_total else math.nan,
        images=int(image_total),
        seconds_per_image=seconds_total / max(1.0, image_total),
        peak_memory_mb=peak_memory_mb(device),
        memory="GPU allocated" if device.type == "cuda" else "process RSS",
    )


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so that --resume continues exactly.

    The sums cover the epochs since the last validation (one history row).
    """

    epoch: int = 0
    iteration: int = 0
    best_miou: float = -1.0
    history: list[dict] = field(default_factory=list)
    loss_sum: float = 0.0  # mean train loss of each epoch, summed
    loss_epochs: int = 0
    seconds: float = 0.0  # wall time
    steps: int = 0
    data_seconds: float = 0.0  # per-step seconds waiting for the loader, summed over steps
    compute_seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> TrainState:
        """The state saved in a checkpoint (fields a checkpoint of an older version lacks keep their defaults)."""
        return cls(**{key: checkpoint[key] for key in cls().as_dict() if key in checkpoint})

    def add_epoch(self, stats: EpochStats, seconds: float, continued: bool = False) -> None:
        """Count a pass: a new epoch, or the rest of one the run had ended inside (``continued``)."""
        self.epoch, self.iteration = self.epoch + (not continued), self.iteration + stats.steps
        self.loss_sum, self.loss_epochs = self.loss_sum + stats.loss, self.loss_epochs + 1
        self.seconds += seconds
        self.steps += stats.steps
        self.data_seconds += stats.data_seconds * stats.steps
        self.compute_seconds += stats.compute_seconds * stats.steps
        # NaN (unknown) stays NaN: max() would drop it for the 0.0 a period starts with
        self.peak_memory_mb = (math.nan if math.isnan(stats.peak_memory_mb) or math.isnan(self.peak_memory_mb)
                               else max(self.peak_memory_mb, stats.peak_memory_mb))

    def close_row(self, lr: float, result: EvaluationResult, seconds: float) -> dict:
        """Append the history row of a validation and start the next period's sums."""
        scores = result.scores()
        steps = max(1, self.steps)
        row = {
            "epoch": self.epoch, "iteration": self.iteration, "lr": lr,
            "train_loss": self.loss_sum / max(1, self.loss_epochs), "val_loss": result.loss,
            "miou": scores["mean_iou"], "mean_dice": scores["mean_dice"], "pixel_accuracy": scores["pixel_accuracy"],
            "mean_class_accuracy": scores["mean_class_accuracy"], "seconds": self.seconds + seconds,
            "data_time": self.data_seconds / steps, "compute_time": self.compute_seconds / steps,
            "peak_memory_mib": self.peak_memory_mb, "iou": scores["iou"],
            "confusion_matrix": result.confusion.matrix.cpu().tolist(),
        }
        self.history.append(row)
        self.loss_sum, self.loss_epochs, self.seconds = 0.0, 0, 0.0
        self.steps, self.data_seconds, self.compute_seconds, self.peak_memory_mb = 0, 0.0, 0.0, 0.0
        return row


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
    precision: Precision = Precision()
    channels_last: bool = False
    log_every: int = 20
    ignore_index: int = IGNORE_INDEX
    val_interval: int | None = None  # iterations: validate at the end of each epoch that passes a multiple of it
    batch_transform: Callable[[torch.Tensor, dict], torch.Tensor] | None = None
    on_log: Callable[[int, dict], None] | None = None  # (iteration, values) at each --log-every check
    on_validation: Callable[[nn.Module, dict], None] | None = None  # (model, history row) after each validation
    checkpoint_extra: dict = field(default_factory=dict)


class _EpochOfStream:
    """``count`` batches of a loader iterator that spans epochs (see :class:`segdata.dataset.EpochStream`)."""

    def __init__(self, batches: Iterator, count: int) -> None:
        self.batches, self.count = batches, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        return itertools.islice(self.batches, self.count)


def _epochs_of(train_loader: DataLoader, first_epoch: int, skip_batches: int = 0) -> Callable[[int, int], Iterable]:
    """``batches(epoch, steps)``: one epoch's batches, the first epoch's first ``skip_batches`` left out. A loader
    over an :class:`EpochStream` is iterated once for the whole run (started at ``first_epoch``); any other loader
    anew per epoch (its sampler told the epoch)."""
    if isinstance(train_loader.sampler, EpochStream):
        train_loader.sampler.first_epoch, train_loader.sampler.skip_batches = first_epoch, skip_batches
        stream = iter(train_loader)
        return lambda epoch, steps: _EpochOfStream(stream, steps)

    def per_epoch(epoch: int, steps: int) -> Iterable:
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler, or a sampler wrapping one
            train_loader.sampler.set_epoch(epoch)
        skipped = skip_batches if epoch == first_epoch else 0
        return _EpochOfStream(itertools.islice(train_loader, skipped, None), steps) if skipped else train_loader

    return per_epoch


def unfinished_epoch(state: TrainState, iterations_per_epoch: int) -> int:
    """The batches the run trained of its last epoch when it ended inside it (a run's length reached mid-epoch,
    then made longer on resume); 0 when it ended at an epoch's end."""
    done = state.iteration - (state.epoch - 1) * iterations_per_epoch
    return done if state.epoch > 0 and 0 < done < iterations_per_epoch else 0


def fit(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, train_loader: DataLoader,
        val_loader: DataLoader, device: torch.device, config: FitConfig, state: TrainState) -> TrainState:
    """Train epoch by epoch up to ``config.total_iterations``, validating every ``val_every`` epochs
    and after the last; rank 0 writes history.csv, per_class_iou.json, last.pth and best.pth.

    last.pth (the resume point) holds the optimizer, scheduler and scaler states; best.pth the model and the run's
    record without them (half the size: the model to share). Checkpoints are written in the background while the
    next epoch trains (:class:`CheckpointWriter`); every write has ended when ``fit`` returns or raises.
    A non-finite loss raises FloatingPointError; the checkpoints already written stay as they were.
    """
    # Evaluate the model inside DDP: its forward would sync buffers, and ranks may get unequal shards.
    eval_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    iterations_per_epoch = len(train_loader)
    num_epochs = math.ceil(config.total_iterations / iterations_per_epoch)
    main = is_main_process()
    writer = CheckpointWriter()

    def checkpoint(name: str, resume_point: bool) -> None:
        if main:
            resume = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict()} if resume_point else {}
            writer.save(config.run_dir / name, model, **resume, **state.as_dict(), **config.checkpoint_extra)

    # a run that ended inside an epoch (its length reached there) and was made longer goes on with that epoch
    done_in_epoch = unfinished_epoch(state, iterations_per_epoch)
    first_epoch = state.epoch - 1 if done_in_epoch else state.epoch
    batches_of = _epochs_of(train_loader, first_epoch, done_in_epoch)
    ends = EpochEnds()
    try:
        for epoch in range(first_epoch, num_epochs):
            seed_for_epoch(config.seed, epoch, config.rank)
            available = iterations_per_epoch - (done_in_epoch if epoch == first_epoch else 0)
            ends.add(*_train_and_validate_epoch(
                model, eval_model, criterion, optimizer, scheduler, scaler,
                batches_of(epoch, min(available, config.total_iterations - state.iteration)), val_loader,
                device, config, state, epoch, num_epochs, checkpoint, continued=bool(done_in_epoch)
                and epoch == first_epoch))
    except BaseException:
        writer.wait(raise_error=False)  # the write in progress ends; the reason the run stopped is what is reported
        raise
    writer.wait()
    if ends.epochs:
        log.info("epoch ends: %s", ends.describe())
    return state


@dataclass
class EpochEnds:
    """What the ends of a run's epochs cost: the training time of each epoch, and the pause after it (the checkpoint
    snapshot and bookkeeping; validation apart)."""

    epochs: int = 0
    training_seconds: float = 0.0
    pause_seconds: float = 0.0
    validation_seconds: float = 0.0
    validations: int = 0

    def add(self, training: float, pause: float, validation: float | None) -> None:
        self.epochs += 1
        self.training_seconds += training
        self.pause_seconds += pause
        if validation is not None:
            self.validation_seconds += validation
            self.validations += 1

    def describe(self) -> str:
        """``0.31 s pause per epoch (1.6% of an epoch's 19.8 s), validations 12.0 s each``, in words."""
        pause, epoch = self.pause_seconds / self.epochs, self.training_seconds / self.epochs
        text = f"{pause:.2f} s pause per epoch ({100 * pause / max(epoch, 1e-9):.1f}% of an epoch's {epoch:.1f} s)"
        if self.validations:
            text += f", validations {self.validation_seconds / self.validations:.1f} s each"
        return text


def _train_and_validate_epoch(model, eval_model, criterion, optimizer, scheduler, scaler, batches, val_loader,
                              device: torch.device, config: FitConfig, state: TrainState, epoch: int, num_epochs: int,
                              checkpoint: Callable[[str, bool], None],
                              continued: bool = False) -> tuple[float, float, float | None]:
    """One epoch of :func:`fit`: train, validate when due, write last.pth (and best.pth when the mIoU improved).
    Returns the seconds of training, of the pause after it (validation apart) and of the validation (None: none)."""
    start = time.perf_counter()
    try:
        stats = train_one_epoch(
            model, criterion, optimizer, scheduler, batches, device, scaler=scaler,
            precision=config.precision, channels_last=config.channels_last, log_every=config.log_every,
            batch_transform=config.batch_transform, ignore_index=config.ignore_index,
            on_log=None if config.on_log is None else
            (lambda steps, values, done=state.iteration: config.on_log(done + steps, values)),
            max_iterations=config.total_iterations - state.iteration, description=f"epoch {epoch + 1}/{num_epochs}")
    except NoLabelledPixels as error:
        raise NoLabelledPixels(f"{error} (epoch {epoch + 1}); check the train masks: python -m cityscapes.check "
                               "reports masks without a labelled pixel") from None
    except FloatingPointError as error:
        raise FloatingPointError(
            f"{error} (epoch {epoch + 1}, iteration {state.iteration}); training stopped and "
            f"{config.run_dir / 'last.pth'} keeps the last good state. Lower --lr, or leave out --amp"
        ) from None
    before = state.iteration
    trained = time.perf_counter()
    state.add_epoch(stats, trained - start, continued)
    improved, validation_seconds = False, None
    if config.val_interval:
        due = state.iteration // config.val_interval > before // config.val_interval
    else:
        due = state.epoch % config.val_every == 0
    if due or state.epoch == num_epochs:
        validation_start = time.perf_counter()
        result = evaluate(eval_model, val_loader, device, config.num_classes, ignore_index=config.ignore_index,
                          amp_dtype=config.precision.dtype,
                          channels_last=config.channels_last, description="val")
        row = state.close_row(optimizer.param_groups[-1]["lr"], result, time.perf_counter() - validation_start)
        log.info("epoch %d iteration %d: train loss %.4f, val loss %.4f, mIoU %.4f, mDice %.4f, pixel acc %.4f; "
                 "per iteration %.3f s data + %.3f s compute; peak memory %.0f MiB",
                 row["epoch"], row["iteration"], row["train_loss"], row["val_loss"], row["miou"], row["mean_dice"],
                 row["pixel_accuracy"], row["data_time"], row["compute_time"], row["peak_memory_mib"])
        if int(result.confusion.matrix.sum()) == 0:
            log.warning("warning: the val split has no labelled pixels (every mask is 255): no mIoU to compare")
        if is_main_process():
            write_history(config.run_dir, state.history, config.class_names)
            if config.on_validation is not None:
                config.on_validation(eval_model, row)
        improved = row["miou"] > state.best_miou  # False for NaN: a split without labels never counts as best
        if improved:
            state.best_miou = row["miou"]
        validation_seconds = time.perf_counter() - validation_start
    checkpoint("last.pth", True)  # first: a full disk must still leave a last.pth to resume from
    if improved:
        checkpoint("best.pth", False)
    pause = time.perf_counter() - trained - (validation_seconds or 0.0)
    return trained - start, pause, validation_seconds
