"""The parts a training run is built from: the model (with its initial weights), the optimizer (with its LR schedule
and AMP scaler), the resumed state, and the TensorBoard log with its validation previews."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint, model_config, unwrap_model
from deeplabv3plus.distributed import DistributedContext, ShardSampler
from deeplabv3plus.engine import TrainState, poly_lr_factor
from deeplabv3plus.figures import prediction_frames
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import ARCHITECTURES, build_model, parameter_groups, without_aux_head
from deeplabv3plus.optimizer import build_sgd
from deeplabv3plus.precision import Precision
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of
from deeplabv3plus.tensorboard_log import TB_DIR, TrainingLog, tensorboard_problem
from segdata.class_weights import WEIGHTINGS, weights_for
from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.dataset import EpochStream, SeededSampler, spread_frames
from segdata.flags import FlagError
from segdata.loading import loader_options

__all__ = [
    "build_criterion",
    "class_weights",
    "build_loaders",
    "build_optimizer",
    "check_tensorboard",
    "build_training_model",
    "clamp_warmup",
    "configure_kernels",
    "crop_for_frames",
    "describe_split",
    "load_initial_weights",
    "load_resume_point",
    "open_training_log",
    "report_finished",
    "resume_state",
    "show_validation",
    "validation_frames",
    "validation_protocol",
    "wrap_for_training",
]

log = logging.getLogger(__name__)


def build_training_model(settings: dict, num_classes: int, pretrained_backbone: str | None,
                         init_weights: Path | None, context: DistributedContext, sync_bn: bool,
                         channels_last: bool) -> nn.Module:
    """The run's model on its device: ``settings`` give arch, backbone, output_stride and aux_loss_weight; started
    from ``init_weights`` (a checkpoint) or an ImageNet/local ``pretrained_backbone``; SyncBN across several CUDA
    processes when ``sync_bn``."""
    model = build_model(settings["backbone"], settings["output_stride"], num_classes, pretrained_backbone,
                        aux_head=settings["aux_loss_weight"] > 0, **ARCHITECTURES[settings["arch"]])
    if init_weights is not None:
        load_initial_weights(model, init_weights)
    model = model.to(context.device)
    if context.enabled and sync_bn and context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def load_initial_weights(model: nn.Module, path: Path) -> list[str]:
    """Start from a checkpoint's weights (--init-weights); an auxiliary head it lacks starts from scratch, and so do
    the classifiers when the checkpoint has another number of classes (fine-tuning, e.g. Cityscapes' 19 onto your
    5). Returns the names of the weights initialised afresh for a class count, which are also logged."""
    checkpoint = load_checkpoint(path)
    config = {key: model_config(checkpoint)[key] for key in ("backbone", "stem", "head")}
    wanted = {key: model.config[key] for key in ("backbone", "stem", "head")}
    if config != wanted:
        raise CheckpointError(f"{path}: holds a {config} model but the flags ask for {wanted}; pass the matching "
                              "--arch / --backbone")
    state = checkpoint["model"] if model.aux_head is not None else without_aux_head(checkpoint["model"])
    ours, theirs = model.state_dict(), model_config(checkpoint)["num_classes"]
    afresh = [key for key, value in state.items() if key in ours and value.shape != ours[key].shape
              and value.shape[0] == theirs and ours[key].shape[0] == model.config["num_classes"]]
    state = {key: value for key, value in state.items() if key not in afresh}
    if afresh:
        log.info("fine-tuning from %d to %d classes: %s initialised afresh", theirs, model.config["num_classes"],
                 ", ".join(afresh))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key not in afresh]
    if unexpected or any(not key.startswith("aux_head.") for key in missing):
        raise CheckpointError(
            f"{path}: the weights do not fit the model (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    return afresh


def build_criterion(aux_weight: float, class_weights: Sequence[float] | None = None) -> nn.Module:
    """Pixel-wise cross-entropy over labelled pixels (0 for a batch without any; each class's pixels weighted by
    ``class_weights``), plus ``aux_weight`` x the auxiliary head's."""
    return SegmentationLoss(IGNORE_INDEX, aux_weight=aux_weight, class_weights=class_weights)


def class_weights(rule: str, train_set, workers: int) -> list[float] | None:
    """The class weights of --class-weights for a new run (counted on the train masks once, or read from a file),
    said in one line; None for none."""
    weights = weights_for(rule, train_set, workers)
    if weights is not None:
        where = f"counted on the {len(train_set)} {train_set.split} masks" if rule in WEIGHTINGS else f"from {rule}"
        log.info("class weights (%s, %s): %s", rule if rule in WEIGHTINGS else "a file", where,
                 ", ".join(f"{name} {weight:.3g}" for name, weight in zip(train_set.classes.names, weights)))
    return weights


def check_tensorboard(wanted: bool | None) -> None:
    """FlagError when --tensorboard is asked for and cannot be written (checked before any work)."""
    problem = tensorboard_problem() if wanted else None
    if problem:
        raise FlagError(f"argument --tensorboard: {problem}; pip install -r requirements-tensorboard.txt (again), "
                        "or drop the flag")


def clamp_warmup(warmup_iters: int, total_iterations: int) -> int:
    """The warm-up of a run, shortened to a tenth of the run (with a warning) where it would never reach the peak
    LR."""
    if warmup_iters < total_iterations:
        return warmup_iters
    clamped = total_iterations // 10
    log.warning("warning: --warmup-iters %d is not shorter than the run (%d iterations); using %d, a tenth of it",
                warmup_iters, total_iterations, clamped)
    return clamped


def build_optimizer(model: nn.Module, settings: dict, total_iterations: int, device: torch.device,
                    precision: Precision):
    """SGD over backbone/head parameter groups (fused on CUDA: no host sync per step), poly LR with warm-up
    (stepped per iteration), AMP scaler; ``settings`` give lr, backbone_lr_multiplier, momentum, weight_decay,
    power and warmup_iters."""
    groups = parameter_groups(model, settings["lr"], settings["weight_decay"], settings["backbone_lr_multiplier"])
    optimizer = build_sgd(groups, settings["lr"], settings["momentum"], settings["weight_decay"], device)
    power, warmup = settings["power"], settings["warmup_iters"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_lr_factor(iteration, total_iterations, power, warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    return optimizer, scheduler, scaler


def load_resume_point(path: Path) -> dict:
    """The checkpoint --resume names, if training can go on from it (CheckpointError naming the way on otherwise)."""
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, path)
    return checkpoint


def check_resumable(checkpoint: dict, path: Path) -> None:
    """CheckpointError unless the checkpoint holds the optimizer state a resumed run needs (best.pth does not)."""
    if "optimizer" not in checkpoint:
        last = Path(path).parent / "last.pth"
        raise CheckpointError(f"{path}: has no optimizer state (best.pth keeps the weights alone), so training cannot "
                              f"resume from it; resume from the run's last.pth ({last}), or start a new run from these "
                              f"weights with --init-weights {path} --run-name NAME")


def resume_state(checkpoint: dict, path: Path, model: nn.Module, optimizer, scheduler, scaler) -> TrainState:
    """Load a training checkpoint into model, optimizer, scheduler and scaler; the saved TrainState."""
    check_resumable(checkpoint, path)
    unwrap_model(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    return TrainState.from_checkpoint(checkpoint)


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """Fixed training crops: cuDNN autotuning on CUDA, unless a reproducible run is asked for."""
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def wrap_for_training(model: nn.Module, compile_model: bool,
                      context: DistributedContext) -> tuple[nn.Module, nn.Module]:
    """(the model validation runs, the model training runs): torch.compile'd if asked, and DDP under torchrun."""
    eval_model = torch.compile(model) if compile_model else model
    if not context.enabled:
        return eval_model, eval_model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return eval_model, nn.parallel.DistributedDataParallel(eval_model, device_ids=device_ids)


def open_training_log(run_dir: Path, wanted: bool | None, iteration: int) -> TrainingLog | None:
    """TensorBoard logs in {run}/tb, unless off (``wanted`` False) or not installed. A run resumed at ``iteration``
    appends, and what a killed run logged past that iteration is dropped (it is trained again)."""
    if wanted is False:
        return None
    problem = tensorboard_problem()
    if problem:
        log.info("TensorBoard logging is off: %s (pip install -r requirements-tensorboard.txt turns it on)", problem)
        return None
    training_log = TrainingLog(run_dir / TB_DIR, purge_step=iteration + 1 if iteration else None)
    log.info("TensorBoard logs in %s; view them with: tensorboard --logdir %s", run_dir / TB_DIR, run_dir.parent)
    return training_log


def show_validation(training_log: TrainingLog, val_set, preview_frames: int, classes: ClassTable,
                    device: torch.device, amp_dtype: torch.dtype | None) -> Callable[[nn.Module, dict], None]:
    """After each validation: its scores, and image | prediction | ground truth of the first val frames."""
    indices = range(min(preview_frames, len(val_set)))

    def show(model: nn.Module, row: dict) -> None:
        training_log.validation(row["iteration"], row, classes.names)
        if indices:
            training_log.images(row["iteration"], prediction_frames(model, val_set, indices, classes.palette(), device,
                                                                    amp_dtype))
        training_log.flush()

    return show


def build_loaders(train_set: Dataset, val_set: Dataset, batch_size: int, val_batch_size: int, workers: int,
                  seed: int, context: DistributedContext) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled, DistributedSampler under DDP, a seed per sample from the sampler's own generator,
    ``batch_size`` in total over the processes; its epochs one stream, see :class:`segdata.dataset.EpochStream`) and
    validation loader (each process its shard). Persistent workers of one thread each with a deeper prefetch queue;
    pinned memory on CUDA."""
    per_process = batch_size // context.world_size
    if len(train_set) < batch_size:
        raise FlagError(f"{train_set.root}: the train split has {len(train_set)} images, fewer than --batch-size "
                        f"{batch_size}")
    if context.enabled:
        train_sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=seed,
                                           drop_last=True)
    else:
        train_sampler = RandomSampler(train_set)
    options = loader_options(workers, context.device)
    # the loader's own generator: its workers' base seed is not drawn from the global random state either
    train_loader = DataLoader(train_set, per_process,
                              sampler=EpochStream(SeededSampler(train_sampler, seed, context.rank), per_process),
                              drop_last=True, generator=torch.Generator().manual_seed(seed), **options)
    val_loader = DataLoader(val_set, val_batch_size, sampler=ShardSampler(len(val_set), context.rank,
                                                                          context.world_size), **options)
    return train_loader, val_loader


def describe_split(data) -> str:
    """Where a split's frames come from, in words: ``train: 367 frames from the list ROOT/train.txt, read from the
    decoded cache ROOT/cache`` (a run says it at its start)."""
    where = getattr(data, "source", "") or str(data.root)
    cache = f", read from the decoded cache {data.cache.cache_root}" if data.cache is not None else ""
    return f"{data.split}: {len(data)} frames from {where}{cache}"


def validation_frames(val_set: Dataset, frames: int | None) -> Dataset:
    """The val frames validated during training: all, or ``frames`` of them spread evenly over the split, the same
    at every validation (--val-frames: a quick look during a run; test_dlv3p.py scores the whole split)."""
    return spread_frames(val_set, frames)


def crop_for_frames(crop: Sequence[int], sizes: Sequence[tuple[int, int]], scale_range: Sequence[float],
                    given: bool) -> tuple[int, int]:
    """The training crop (H, W) for frames of ``sizes``: ``crop`` when some frame, at the largest random scale,
    covers it; otherwise every crop would be mostly padding, and a crop that was ``given`` is refused (FlagError) while
    the recipe's is fitted to the largest frame with a printed line."""
    height, width = max(size[0] for size in sizes), max(size[1] for size in sizes)
    reach = (int(height * max(scale_range)), int(width * max(scale_range)))
    if crop[0] <= reach[0] and crop[1] <= reach[1]:
        return crop[0], crop[1]
    if given:
        raise FlagError(f"argument --crop-size: {crop[0]}x{crop[1]} is larger than every train frame even at the "
                        f"largest random scale (frames at most {height}x{width}, x{max(scale_range):g}); give a crop "
                        f"of at most {min(crop[0], height)}x{min(crop[1], width)}")
    fitted = (min(crop[0], height), min(crop[1], width))
    log.warning("warning: the recipe's %dx%d crop is larger than every train frame (at most %dx%d): training on "
                "%dx%d crops; --crop-size chooses another", crop[0], crop[1], height, width, *fitted)
    return fitted


def validation_protocol(val_set, output_stride: int, precision_name: str | None, channels_last: bool,
                        ground_truth: str, split_frames: int | None = None) -> EvaluationProtocol:
    """How validation during training scores: whole val images (``split_frames``: of a split that holds that many,
    when --val-frames takes a subset), the training's output stride, precision and memory format."""
    return EvaluationProtocol(split="val", images=len(val_set), image_size=image_size_of(val_set.image_sizes()),
                              train_output_stride=output_stride, test_output_stride=output_stride,
                              amp_dtype=precision_name, channels_last=channels_last, ground_truth=ground_truth,
                              of_images=split_frames if split_frames != len(val_set) else None)


def report_finished(state: TrainState, run_dir: Path) -> None:
    """The last line of a finished run: best and last scores, or why there are none."""
    last = state.history[-1]
    if state.best_miou < 0:
        log.warning("warning: the val split has no labelled pixels (every mask is 255), so no mIoU was computed and "
                    "no best.pth written; %s holds the trained model", run_dir / "last.pth")
    else:
        log.info("done: best val mIoU %.4f; last: mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f -> %s",
                 state.best_miou, last["miou"], last["mean_dice"], last["pixel_accuracy"], run_dir)
