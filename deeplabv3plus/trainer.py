"""A training run: epoch after epoch up to its length, validation when due, checkpoints at every epoch end, and the
state that makes a resume exact. :class:`Trainer` carries the step's parts (``engine.TrainingStep``), the loaders and
the run's record, so no method re-lists them; ``deeplabv3plus.assembly`` builds it from a ``RunConfig``.

Exact resume: a run is checkpointed at epoch ends only, and every epoch reseeds torch from (seed, epoch, rank)
while the sampler draws its order and per-sample seeds from a generator of its own (``segdata.dataset``); so a run
killed anywhere and resumed from its last.pth repeats what the uninterrupted run does, batch for batch, with any
number of loader workers. A run that ended inside an epoch (its length reached there) and is made longer goes on
with that epoch's next batch.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from deeplabv3plus import engine
from deeplabv3plus.checkpoint import CheckpointWriter
from deeplabv3plus.distributed import is_main_process
from deeplabv3plus.history import history_row, write_history
from deeplabv3plus.inference import InferenceOptions
from segdata.dataset import EpochStream

__all__ = ["EpochEnds", "TrainState", "Trainer", "report_finished", "unfinished_epoch"]

log = logging.getLogger(__name__)


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

    def add_epoch(self, stats: engine.EpochStats, seconds: float, continued: bool = False) -> None:
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

    def close_row(self, lr: float, result: engine.EvaluationResult, seconds: float) -> dict:
        """Append the history row of a validation and start the next period's sums."""
        row = history_row(self, lr, result, seconds)
        self.history.append(row)
        self.loss_sum, self.loss_epochs, self.seconds = 0.0, 0, 0.0
        self.steps, self.data_seconds, self.compute_seconds, self.peak_memory_mb = 0, 0.0, 0.0, 0.0
        return row


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


def seed_for_epoch(seed: int, epoch: int, rank: int) -> None:
    """Reseed torch at each epoch start: data order, augmentation and dropout then depend only on
    (seed, epoch, rank), so a resumed run repeats exactly what an uninterrupted one does."""
    torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def unfinished_epoch(state: TrainState, iterations_per_epoch: int) -> int:
    """The batches the run trained of its last epoch when it ended inside it (a run's length reached mid-epoch,
    then made longer on resume); 0 when it ended at an epoch's end."""
    done = state.iteration - (state.epoch - 1) * iterations_per_epoch
    return done if state.epoch > 0 and 0 < done < iterations_per_epoch else 0


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


@dataclass
class Trainer:
    """One run, carrying its parts: the training ``step`` (model, criterion, optimizer, schedule, scaler, device,
    precision, memory format, batch transform), the model validation runs (``eval_model``: inside DDP, the plain
    one), the loaders, the run's folder and class names, its ``state``, and what to do at each log point and
    validation (TensorBoard). ``record``: what every checkpoint carries besides the state (the config, the class
    table); ``data_check``: the command that checks the train masks, named when a pass has no labelled pixel."""

    step: engine.TrainingStep
    eval_model: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    run_dir: Path
    class_names: tuple[str, ...]
    state: TrainState
    total_iterations: int
    seed: int = 0
    rank: int = 0
    val_every: int = 1
    val_interval: int | None = None  # iterations: validate at the end of each epoch that passes a multiple of it
    record: dict = field(default_factory=dict)
    data_check: str = "the data check"
    on_log: Callable[[int, dict], None] | None = None  # (iteration, values) at each --log-every check
    on_validation: Callable[[nn.Module, dict], None] | None = None  # (model, history row) after each validation
    _epochs: int = field(default=0, init=False, repr=False)  # of the run, set by fit
    _writer: CheckpointWriter = field(default_factory=CheckpointWriter, init=False, repr=False)

    def fit(self) -> TrainState:
        """Train epoch by epoch up to ``total_iterations``, validating when due and after the last epoch; rank 0
        writes history.csv, per_class_iou.json, last.pth and best.pth.

        last.pth (the resume point) holds the optimizer, scheduler and scaler states; best.pth the model and the
        run's record without them (half the size: the model to share). Checkpoints are written in the background
        while the next epoch trains (:class:`CheckpointWriter`); every write has ended when ``fit`` returns or
        raises. A non-finite loss raises FloatingPointError; the checkpoints already written stay as they were.
        """
        per_epoch = len(self.train_loader)
        self._epochs = math.ceil(self.total_iterations / per_epoch)
        done_in_epoch = unfinished_epoch(self.state, per_epoch)
        first_epoch = self.state.epoch - 1 if done_in_epoch else self.state.epoch
        batches_of = _epochs_of(self.train_loader, first_epoch, done_in_epoch)
        ends = EpochEnds()
        try:
            for epoch in range(first_epoch, self._epochs):
                seed_for_epoch(self.seed, epoch, self.rank)
                continued = bool(done_in_epoch) and epoch == first_epoch
                available = per_epoch - (done_in_epoch if continued else 0)
                ends.add(*self._epoch(epoch, batches_of(epoch, min(available, self.total_iterations -
                                                                   self.state.iteration)), continued))
        except BaseException:
            self._writer.wait(raise_error=False)  # the write in progress ends; the stop's reason is what is reported
            raise
        self._writer.wait()
        if ends.epochs:
            log.info("epoch ends: %s", ends.describe())
        return self.state

    def _epoch(self, epoch: int, batches: Iterable, continued: bool) -> tuple[float, float, float | None]:
        """Train one epoch, validate when due, write last.pth (and best.pth when the mIoU improved). Returns the
        seconds of training, of the pause after it (validation apart) and of the validation (None: none)."""
        start, state = time.perf_counter(), self.state
        done = state.iteration
        try:
            stats = engine.train_one_epoch(
                self.step, batches, max_iterations=self.total_iterations - done,
                on_log=None if self.on_log is None else lambda steps, values: self.on_log(done + steps, values),
                description=f"epoch {epoch + 1}/{self._epochs}")
        except engine.NoLabelledPixels as error:
            raise engine.NoLabelledPixels(f"{error} (epoch {epoch + 1}); check the train masks: {self.data_check} "
                                          "reports masks without a labelled pixel") from None
        except FloatingPointError as error:
            raise FloatingPointError(
                f"{error} (epoch {epoch + 1}, iteration {done}); training stopped and {self.run_dir / 'last.pth'} "
                "keeps the last good state. Lower --lr, or leave out --amp") from None
        trained = time.perf_counter()
        state.add_epoch(stats, trained - start, continued)
        if self.val_interval:
            due = state.iteration // self.val_interval > done // self.val_interval
        else:
            due = state.epoch % self.val_every == 0
        improved, validation_seconds = False, None
        if due or state.epoch == self._epochs:
            improved, validation_seconds = self._validate()
        self._save("last.pth", resume_point=True)  # first: a full disk must still leave a last.pth to resume from
        if improved:
            self._save("best.pth", resume_point=False)
        return trained - start, time.perf_counter() - trained - (validation_seconds or 0.0), validation_seconds

    def _validate(self) -> tuple[bool, float]:
        """Score the val split, append the history row (files, TensorBoard); whether the mIoU improved, and the
        seconds it took."""
        start = time.perf_counter()
        options = InferenceOptions(amp_dtype=self.step.precision.dtype, channels_last=self.step.channels_last)
        result = engine.evaluate(self.eval_model, self.val_loader, self.step.device, len(self.class_names), options)
        row = self.state.close_row(self.step.optimizer.param_groups[-1]["lr"], result, time.perf_counter() - start)
        log.info("epoch %d iteration %d: train loss %.4f, val loss %.4f, mIoU %.4f, mDice %.4f, pixel acc %.4f; "
                 "per iteration %.3f s data + %.3f s compute; peak memory %.0f MiB",
                 row["epoch"], row["iteration"], row["train_loss"], row["val_loss"], row["miou"], row["mean_dice"],
                 row["pixel_accuracy"], row["data_time"], row["compute_time"], row["peak_memory_mib"])
        if int(result.confusion.matrix.sum()) == 0:
            log.warning("warning: the val split has no labelled pixels (every mask is 255): no mIoU to compare")
        if is_main_process():
            write_history(self.run_dir, self.state.history, self.class_names)
            if self.on_validation is not None:
                self.on_validation(self.eval_model, row)
        improved = row["miou"] > self.state.best_miou  # False for NaN: a split without labels never counts as best
        if improved:
            self.state.best_miou = row["miou"]
        return improved, time.perf_counter() - start

    def _save(self, name: str, resume_point: bool) -> None:
        """Snapshot a checkpoint now (rank 0), written in the background: last.pth with what a resume needs."""
        if not is_main_process():
            return
        step = self.step
        resume = ({"optimizer": step.optimizer.state_dict(), "scheduler": step.scheduler.state_dict(),
                   "scaler": step.scaler.state_dict()} if resume_point else {})
        self._writer.save(self.run_dir / name, step.model, **resume, **self.state.as_dict(), **self.record)


def report_finished(state: TrainState, run_dir: Path) -> None:
    """The last line of a finished run: best and last scores, or why there are none."""
    last = state.history[-1]
    if state.best_miou < 0:
        log.warning("warning: the val split has no labelled pixels (every mask is 255), so no mIoU was computed and "
                    "no best.pth written; %s holds the trained model", run_dir / "last.pth")
    else:
        log.info("done: best val mIoU %.4f; last: mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f -> %s",
                 state.best_miou, last["miou"], last["mean_dice"], last["pixel_accuracy"], run_dir)
