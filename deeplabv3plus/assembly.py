"""A run's parts, built from its :class:`~deeplabv3plus.config.RunConfig`: the data (opened, checked, the config
fitted to it), the loaders, the model with its initial weights, the criterion, the optimizer with its schedule and
scaler, and the state (new, or resumed from last.pth); then the :class:`~deeplabv3plus.trainer.Trainer` that runs
them (detectron2's ``build_*`` methods, as functions of a config)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from deeplabv3plus import datasets
from deeplabv3plus.checkpoint import CheckpointError, checkpoint_classes, load_checkpoint, unwrap_model
from deeplabv3plus.config import RunConfig
from deeplabv3plus.convert import open_mmlab_backbone
from deeplabv3plus.distributed import DistributedContext, ShardSampler
from deeplabv3plus.engine import TrainingStep
from deeplabv3plus.inference import TrainedRun
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import ARCHITECTURES, DeepLabV3Plus, ModelConfig, without_aux_head
from deeplabv3plus.optimizer import build_optimizer
from deeplabv3plus.protocol import EvaluationProtocol, validation_protocol
from deeplabv3plus.tensorboard_log import TrainingLog, show_validation
from deeplabv3plus.trainer import Trainer, TrainState
from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.dataset import EpochStream, SeededSampler, SegmentationDataset, spread_frames
from segdata.flags import FlagError
from segdata.loading import loader_options
from segdata.mmseg_pipeline import MmsegTrainTransform
from segdata.transforms import Augmentation, train_transforms

__all__ = ["RunParts", "build_criterion", "build_loaders", "build_parts", "build_training_model", "check_resumable",
           "configure_kernels", "load_initial_weights", "load_resume_point", "wrap_for_training"]

log = logging.getLogger(__name__)


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


def build_criterion(config: RunConfig) -> nn.Module:
    """The loss: cross-entropy (averaged over the labelled pixels or over all: --loss-average; each class's pixels
    weighted by the run's class weights), plus --aux-loss-weight x the auxiliary head's."""
    return SegmentationLoss(IGNORE_INDEX, aux_weight=config.aux_loss_weight, class_weights=config.class_weight_values,
                            average=config.loss_average)


def build_train_transform(config: RunConfig):
    """The training transform of --pipeline: this project's crop-first one, or mmsegmentation's exactly."""
    if config.pipeline == "mmseg":
        return MmsegTrainTransform(config.crop_size, config.scale_range, config.resize_scale or (2048, 1024),
                                   config.crop_max_class_share, photometric=config.color_augmentation == "photometric")
    return train_transforms(config.crop_size, config.scale_range,
                            Augmentation(config.crop_max_class_share, color=config.color_augmentation),
                            jitter_on_device=config.jitter_on_device)


def iterations_per_epoch(frames: int, batch_size: int, world_size: int) -> int:
    """The batches of an epoch of ``frames`` (the training loader's length: whole batches of each process's share)."""
    return frames // world_size // (batch_size // world_size) if world_size > 1 else frames // batch_size


def build_loaders(train_set: SegmentationDataset, val_set: SegmentationDataset, config: RunConfig,
                  context: DistributedContext) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled, DistributedSampler under DDP, a seed per sample from the sampler's own generator,
    ``batch_size`` in total over the processes; its epochs one stream, see :class:`segdata.dataset.EpochStream`) and
    validation loader (each process its shard). Persistent workers of one thread each with a deeper prefetch queue;
    pinned memory on CUDA."""
    per_process = config.batch_size // context.world_size
    if len(train_set) < config.batch_size:
        raise FlagError(f"{train_set.root}: the train split has {len(train_set)} images, fewer than --batch-size "
                        f"{config.batch_size}")
    if context.enabled:
        sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=config.seed,
                                     drop_last=True)
    else:
        sampler = RandomSampler(train_set)
    options = loader_options(config.workers, context.device)
    # the loader's own generator: its workers' base seed is not drawn from the global random state either
    train_loader = DataLoader(train_set, per_process,
                              sampler=EpochStream(SeededSampler(sampler, config.seed, context.rank), per_process),
                              drop_last=True, generator=torch.Generator().manual_seed(config.seed), **options)
    val_loader = DataLoader(val_set, config.val_batch_size, sampler=ShardSampler(len(val_set), context.rank,
                                                                                 context.world_size), **options)
    return train_loader, val_loader


def build_training_model(config: RunConfig, num_classes: int, context: DistributedContext) -> nn.Module:
    """The run's model on its device: a new run's from ``--init-weights`` (a checkpoint) or an ImageNet / local
    ``--pretrained-backbone`` (a resumed run's weights come from its checkpoint); SyncBN across several CUDA
    processes; channels_last if asked."""
    pretrained = config.pretrained_backbone if config.is_new_run and not config.init_weights else None
    if pretrained == "open-mmlab":
        if config.arch != "mmseg":
            raise FlagError("argument --pretrained-backbone: open-mmlab's weights are of ResNetV1c (deep stem): use "
                            "them with --arch mmseg, or give imagenet for --arch deeplabv3plus")
        pretrained = open_mmlab_backbone(config.backbone)
    model = DeepLabV3Plus(ModelConfig(config.backbone, config.output_stride, num_classes, config.aux_loss_weight > 0,
                                      **ARCHITECTURES[config.arch], align_corners=config.align_corners), pretrained)
    if config.init_weights is not None and config.is_new_run:
        load_initial_weights(model, Path(config.init_weights))
    model = model.to(context.device)
    if context.enabled and config.sync_bn and context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def load_initial_weights(model: nn.Module, path: Path) -> list[str]:
    """Start from a trained run's weights (--init-weights); an auxiliary head it lacks starts from scratch, and so do
    the classifiers when it has another number of classes (fine-tuning, e.g. Cityscapes' 19 onto your 5). Returns
    the names of the weights reinitialised for a class count, which are also logged."""
    run = TrainedRun.load(path)
    trained = {key: run.model_config[key] for key in ("backbone", "stem", "head")}
    wanted = {key: model.config[key] for key in ("backbone", "stem", "head")}
    if trained != wanted:
        raise CheckpointError(f"{path}: holds a {trained} model but the flags ask for {wanted}; pass the matching "
                              "--arch / --backbone")
    weights = run.checkpoint["model"] if model.aux_head is not None else without_aux_head(run.checkpoint["model"])
    ours, theirs = model.state_dict(), run.model_config["num_classes"]
    reinitialised = [key for key, value in weights.items() if key in ours and value.shape != ours[key].shape
                     and value.shape[0] == theirs and ours[key].shape[0] == model.config["num_classes"]]
    weights = {key: value for key, value in weights.items() if key not in reinitialised}
    if reinitialised:
        log.info("fine-tuning from %d to %d classes: %s initialised afresh", theirs, model.config["num_classes"],
                 ", ".join(reinitialised))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [key for key in missing if key not in reinitialised]
    if unexpected or any(not key.startswith("aux_head.") for key in missing):
        raise CheckpointError(
            f"{path}: the weights do not fit the model (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    return reinitialised


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


@dataclass
class RunParts:
    """What a run is made of before it starts: its fitted config, where it runs, its classes, data and loaders, the
    model, the optimizer with its LR schedule and AMP scaler, and its state (new, or resumed)."""

    config: RunConfig
    context: DistributedContext
    classes: ClassTable
    splits: tuple[SegmentationDataset, SegmentationDataset]
    loaders: tuple[DataLoader, DataLoader]
    model: nn.Module
    optimizer: tuple  # (optimizer, scheduler, scaler)
    state: TrainState

    @property
    def total_iterations(self) -> int:
        return self.config.total_iterations(len(self.loaders[0]))

    def validation_protocol(self) -> EvaluationProtocol:
        """How the run's validations score (args.json's ``val_protocol``)."""
        return validation_protocol(self.loaders[1].dataset, self.config.as_record(),
                                   datasets.dataset_kind(self.config.dataset).ground_truth())

    def describe(self, run_dir: Path) -> str:
        """The run's first line: where, how long, how, from where."""
        config, context = self.config, self.context
        return (f"run {run_dir}: {self.total_iterations} iterations ({len(self.loaders[0])} per epoch), batch "
                f"{config.batch_size} on {context.world_size} process(es), device {context.device} "
                f"({config.amp_dtype or 'float32'}, {'channels_last' if config.channels_last else 'contiguous'}, "
                f"{config.workers} loader workers), from "
                + ("the start" if config.is_new_run else f"iteration {self.state.iteration}"))

    def trainer(self, run_dir: Path, training_log: TrainingLog | None = None) -> Trainer:
        """The :class:`Trainer` of these parts, writing to ``run_dir`` (and to TensorBoard's ``training_log``)."""
        config, context = self.config, self.context
        (train_set, val_set), (optimizer, scheduler, scaler) = self.splits, self.optimizer
        eval_model, train_model = wrap_for_training(self.model, config.compile, context)
        step = TrainingStep(train_model, build_criterion(config), optimizer, scheduler, context.device, scaler,
                            config.precision, config.channels_last,
                            train_set.transforms.batch_step() if config.jitter_on_device else None, config.log_every)
        kind = datasets.dataset_kind(config.dataset)
        return Trainer(
            step, eval_model, *self.loaders, run_dir, self.classes.names, self.state, self.total_iterations,
            seed=config.seed, rank=context.rank, val_every=config.val_every, val_interval=config.val_interval,
            record={"args": config.as_record(), "classes": self.classes.as_dict()},
            data_check=kind.check_command(config.data_root),
            on_log=None if training_log is None else training_log.training,
            on_validation=None if training_log is None else show_validation(
                training_log, val_set, config.preview_frames, self.classes.palette(), context.device,
                config.precision.dtype))


def build_parts(config: RunConfig, context: DistributedContext, checkpoint: dict | None,
                crop_given: bool) -> RunParts:
    """Open the data (the fast check first), fit the config to it (``crop_given``: --crop-size was given), and build
    the loaders, the model, the optimizer and the state; a resumed run's from ``checkpoint``."""
    classes = datasets.class_table(config.dataset, config.classes and Path(config.classes),
                                   checkpoint and checkpoint_classes(checkpoint), config.resume)
    train_set, val_set = datasets.open_training_splits(config.dataset, Path(config.data_root), config.train_split,
                                                       classes, config.cache)
    log.info("data: %s; %s", train_set.describe(), val_set.describe())
    config = config.fitted_to(train_set, iterations_per_epoch(len(train_set), config.batch_size, context.world_size),
                              crop_given)
    train_set = train_set.with_transforms(build_train_transform(config))
    loaders = build_loaders(train_set, spread_frames(val_set, config.val_frames), config, context)
    torch.manual_seed(config.seed)
    model = build_training_model(config, classes.num_classes, context)
    optimizer = build_optimizer(model, config, config.total_iterations(len(loaders[0])))
    state = TrainState()
    if checkpoint is not None:
        check_resumable(checkpoint, Path(config.resume))
        unwrap_model(model).load_state_dict(checkpoint["model"])
        for part, key in zip(optimizer, ("optimizer", "scheduler", "scaler")):
            part.load_state_dict(checkpoint[key])
        state = TrainState.from_checkpoint(checkpoint)
    return RunParts(config, context, classes, (train_set, val_set), loaders, model, optimizer, state)
