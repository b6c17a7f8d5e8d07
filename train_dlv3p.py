"""Train DeepLabV3+ on Cityscapes (or the synthetic demo set).

    python train_dlv3p.py --backbone resnet50 --output_stride 8
    torchrun --nproc_per_node 4 train_dlv3p.py --backbone resnet50 --output_stride 8

Defaults follow the common ResNet DeepLabV3+ Cityscapes recipe: 80k iterations,
batch 8 (in total, over all processes), 768x768 crops of images scaled by
0.5-2.0, SGD lr 0.01 momentum 0.9 weight decay 5e-4, poly LR (power 0.9) after
a linear warm-up, ImageNet-pretrained backbone, SyncBN on multiple GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from cityscapes.cache import CACHE_DIR
from cityscapes.check import check_before_run
from cityscapes.dataset import GROUND_TRUTHS, CityscapesSegmentation, SeededSampler
from cityscapes.files import missing_folders, remove_empty_folders, remove_stale_temporaries, write_json
from cityscapes.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cityscapes.transforms import eval_transforms, train_transforms
from deeplabv3plus import cli
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint, unwrap_model
from deeplabv3plus.distributed import DistributedContext, ShardSampler, init_distributed_mode
from deeplabv3plus.engine import FitConfig, TrainState, fit, poly_lr_factor
from deeplabv3plus.figures import prediction_frames
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import ARCHITECTURES, build_model, parameter_groups, without_aux_head
from deeplabv3plus.optimizer import build_sgd
from deeplabv3plus.precision import AMP_DTYPES, Precision, resolve_precision
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of
from deeplabv3plus.run import (
    DEFAULT_ITERATIONS,
    KEPT_DEFAULTS,
    LENGTH_KEYS,
    RUN_DEFAULTS,
    resolve_run_settings,
    resume_record,
)
from deeplabv3plus.tensorboard_log import TB_DIR, TrainingLog, tensorboard_available

log = logging.getLogger("train_dlv3p")

def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="train_dlv3p.py", description=__doc__.splitlines()[0])
    recipe = lambda key: f" (default: {RUN_DEFAULTS[key]}, or the resumed run's)"  # noqa: E731
    kept = lambda key: f" (default: {KEPT_DEFAULTS[key]}, or the resumed run's)"  # noqa: E731
    data = parser.add_argument_group("Data")
    data.add_argument("--data-root", "--data_root", type=Path, default=None,
                      help="folder holding leftImg8bit/, gtFine/ and generated_gt/" + kept("data_root"))
    data.add_argument("--crop-size", "--crop_size", type=cli.crop_side, nargs="+", default=None, metavar="SIZE",
                      help="training crop: one size (square) or height width" + recipe("crop_size"))
    data.add_argument("--scale-range", "--scale_range", type=cli.positive_float, nargs=2, default=None,
                      metavar=("MIN", "MAX"), help="random scale range of training images" + recipe("scale_range"))
    data.add_argument(
        "--workers", type=cli.non_negative_int, default=4, help="data loading processes per training process"
    )
    data.add_argument("--jitter-on-device", action=argparse.BooleanOptionalAction, default=None,
                      help="colour jitter and normalisation of each batch on the training device instead of in the "
                           "loader workers (default: on for CUDA; the same random draws either way)")
    data.add_argument("--cache", action="store_true",
                      help="read training frames from the decoded cache (python -m cityscapes.cache) instead of PNGs")
    data.add_argument("--batch-size", "--batch_size", type=cli.positive_int, default=None,
                      help="training batch size in total, split over the processes" + recipe("batch_size"))
    data.add_argument("--val-batch-size", "--val_batch_size", type=cli.positive_int, default=1,
                      help="validation batch per process")

    model = parser.add_argument_group("Model")
    model.add_argument("--arch", choices=list(ARCHITECTURES), default=None,
                       help="deeplabv3plus: torchvision ResNet, dense ASPP and decoder; mmseg: mmsegmentation's "
                            "deeplabv3plus_r*-d8 (ResNetV1c deep stem, depthwise-separable ASPP head)" + recipe("arch"))
    model.add_argument("--backbone", choices=list(BACKBONES), default=None, help="ResNet depth" + recipe("backbone"))
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=None, help="backbone output stride" + recipe("output_stride"))
    model.add_argument("--aux-loss-weight", "--aux_loss_weight", type=cli.non_negative_float, default=None,
                       help="weight of the auxiliary FCN head's loss on layer3 (training only; 0: no auxiliary head)"
                       + recipe("aux_loss_weight"))
    model.add_argument(
        "--init-weights",
        "--init_weights",
        type=Path,
        default=None,
        help="start from the weights of a checkpoint (ours or converted, e.g. mmsegmentation's) to fine-tune",
    )
    model.add_argument("--pretrained-backbone", "--pretrained_backbone", default=None,
                       help="'imagenet' (torchvision download), 'none', or a path to a ResNet state dict"
                       + kept("pretrained_backbone"))

    optimization = parser.add_argument_group("Optimization")
    length = optimization.add_mutually_exclusive_group()
    length.add_argument("--iters", type=cli.positive_int, default=None,
                        help=f"training iterations (default {DEFAULT_ITERATIONS}, or the resumed run's; more on "
                             "--resume makes the run longer, the poly LR computed for the new length)")
    length.add_argument("--epochs", type=cli.positive_int, default=None, help="training epochs instead of --iters")
    optimization.add_argument(
        "--lr", type=cli.positive_float, default=None, help="peak learning rate of the head" + recipe("lr")
    )
    optimization.add_argument("--backbone-lr-multiplier", type=cli.non_negative_float, default=None,
                              help="backbone LR = lr x this" + recipe("backbone_lr_multiplier"))
    optimization.add_argument(
        "--momentum", type=cli.non_negative_float, default=None, help="SGD momentum" + recipe("momentum")
    )
    optimization.add_argument("--weight-decay", "--weight_decay", type=cli.non_negative_float, default=None,
                              help="weight decay (not applied to norm weights and biases)" + recipe("weight_decay"))
    optimization.add_argument("--power", type=cli.positive_float, default=None, help="poly LR power" + recipe("power"))
    optimization.add_argument("--warmup-iters", type=cli.non_negative_int, default=None,
                              help="linear LR warm-up iterations" + recipe("warmup_iters"))
    optimization.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                              help="mixed precision (float16 + GradScaler on CUDA, bfloat16 on the CPU)")
    optimization.add_argument("--amp-dtype", choices=list(AMP_DTYPES), default=None,
                              help="autocast dtype with --amp (default: float16 on CUDA, bfloat16 on CPU)")

    runtime = parser.add_argument_group("Runtime")
    runtime.add_argument("--device", type=cli.device, default=cli.default_device(), help="cuda, cuda:N or cpu")
    runtime.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the model")
    runtime.add_argument("--deterministic", action="store_true",
                         help="deterministic kernels (slower; no cuDNN autotuning)")
    runtime.add_argument(
        "--seed", type=int, default=None, help="random seed (data order, augmentation, init)" + recipe("seed")
    )
    runtime.add_argument("--save-dir", "--save_dir", type=Path, default=None,
                         help="folder of runs (default: saved, or the resumed run's parent folder)")
    runtime.add_argument("--run-name", "--run_name", default=None,
                         help="run folder name (default dlv3p_{backbone}_os{stride}, or the resumed run's)")
    runtime.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from (saved/{run}/last.pth)")
    runtime.add_argument("--overwrite", action="store_true",
                         help="replace the run already in the run folder (without it, such a run is never touched)")
    validation = runtime.add_mutually_exclusive_group()
    validation.add_argument("--val-every", "--val_every", type=cli.positive_int, default=None,
                            help="validate every N epochs (and at the end)" + kept("val_every"))
    validation.add_argument("--val-interval", "--val_interval", type=cli.positive_int, default=None,
                            help="validate every N iterations instead (at the end of the epoch that reaches each "
                                 "multiple of N), e.g. 8000 as mmsegmentation's 80k schedule")
    runtime.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                         help="write TensorBoard logs to {run}/tb (default: on when the tensorboard package is "
                              "installed: pip install -r requirements-tensorboard.txt)")
    runtime.add_argument("--preview-frames", type=cli.non_negative_int, default=4,
                         help="val frames shown as image | prediction | ground truth in TensorBoard at each validation")
    runtime.add_argument("--log-every", "--log_every", type=cli.positive_int, default=20,
                         help="look at the loss (progress bar, non-finite check) every N iterations")

    distributed = parser.add_argument_group("Distributed (launch with torchrun)")
    distributed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True,
                             help="SyncBatchNorm when training on several CUDA devices")
    return parser


def resolve_args(args: argparse.Namespace, context: DistributedContext,
                 checkpoint: dict | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Check flags against each other and fill the run's settings (see deeplabv3plus.run) and derived defaults;
    FlagError names the flag and the fix. Also returns what a resume changed, in words."""
    keys = [*RUN_DEFAULTS, *KEPT_DEFAULTS, *LENGTH_KEYS]
    settings, changes = resolve_run_settings({key: getattr(args, key) for key in keys}, checkpoint, args.resume)
    vars(args).update(settings)
    args.data_root = Path(args.data_root).resolve()  # recorded absolute: --resume alone works from any folder
    args.init_weights = None if args.init_weights is None else Path(args.init_weights)
    args.scale_range = list(cli.scale_range(args.scale_range))
    if args.batch_size % context.world_size:
        raise cli.FlagError(
            f"argument --batch-size: {args.batch_size} must divide evenly over {context.world_size} processes"
        )
    if args.batch_size // context.world_size < 2:
        raise cli.FlagError(
            "argument --batch-size: each process needs at least 2 images per batch (batch norm); raise it"
        )
    if args.amp_dtype is not None and not args.amp:
        raise cli.FlagError(
            f"argument --amp-dtype: {args.amp_dtype} takes effect only with --amp; add --amp or drop it"
        )
    precision = resolve_precision(args.amp, args.amp_dtype, args.device)
    args.amp_dtype = precision.name
    if precision.dtype == torch.float16 and torch.device(args.device).type == "cpu":
        log.warning("warning: float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16")
    if args.save_dir is None:  # a resumed run continues in its own folder
        args.save_dir = args.resume.parent.parent if args.resume else Path("saved")
    if args.run_name is None:
        args.run_name = args.resume.parent.name if args.resume else f"dlv3p_{args.backbone}_os{args.output_stride}"
    return args, changes


def build_dataloaders(args: argparse.Namespace, context: DistributedContext) -> tuple[DataLoader, DataLoader]:
    """Training loader (crop-first random crops, shuffled, DistributedSampler under DDP, a seed per sample) and
    validation loader (full images). Persistent workers with a deeper prefetch queue; pinned memory on CUDA."""
    cache_root = args.data_root / CACHE_DIR if args.cache else None
    if args.jitter_on_device is None:
        args.jitter_on_device = context.device.type == "cuda"
    transforms = train_transforms(args.crop_size, tuple(args.scale_range), jitter_on_device=args.jitter_on_device)
    train_set = CityscapesSegmentation(args.data_root, "train", transforms, cache_root=cache_root)
    val_set = CityscapesSegmentation(args.data_root, "val", eval_transforms())
    per_process = args.batch_size // context.world_size
    if len(train_set) < args.batch_size:
        raise cli.FlagError(f"{args.data_root}: the train split has {len(train_set)} images, fewer than --batch-size "
                            f"{args.batch_size}")
    if context.enabled:
        train_sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=args.seed,
                                           drop_last=True)
    else:
        train_sampler = RandomSampler(train_set)
    workers = {"num_workers": args.workers, "pin_memory": context.device.type == "cuda"}
    if args.workers > 0:
        workers.update(persistent_workers=True, prefetch_factor=4)
    # the loader's own generator: its workers' base seed is not drawn from the global random state either
    train_loader = DataLoader(train_set, per_process, sampler=SeededSampler(train_sampler, args.seed, context.rank),
                              drop_last=True, generator=torch.Generator().manual_seed(args.seed), **workers)
    val_loader = DataLoader(
        val_set, args.val_batch_size, sampler=ShardSampler(len(val_set), context.rank, context.world_size), **workers
    )
    return train_loader, val_loader


def finish_batch_on_device(train_loader: DataLoader):
    """The batch step of --jitter-on-device: colour jitter + normalisation of the uint8 crops, on their device."""
    transforms = train_loader.dataset.transforms
    return lambda images, meta: transforms.finish_on_device(images, meta["jitter"])


def build_criterion(args: argparse.Namespace) -> nn.Module:
    """Pixel-wise cross-entropy over labelled pixels (0 for a batch without any), plus the auxiliary head's."""
    return SegmentationLoss(IGNORE_INDEX, aux_weight=args.aux_loss_weight)


def clamp_warmup(args: argparse.Namespace, total_iterations: int) -> None:
    """A warm-up as long as the run would never reach the peak LR: shorten it to a tenth of the run, with a warning."""
    if args.warmup_iters >= total_iterations:
        clamped = total_iterations // 10
        log.warning("warning: --warmup-iters %d is not shorter than the run (%d iterations); using %d, a tenth of it",
                    args.warmup_iters, total_iterations, clamped)
        args.warmup_iters = clamped


def validation_protocol(args: argparse.Namespace, val_set: CityscapesSegmentation) -> EvaluationProtocol:
    """How validation during training scores: whole val images, the training's precision, generated masks."""
    return EvaluationProtocol(split="val", images=len(val_set), image_size=image_size_of(val_set.image_sizes()),
                              train_output_stride=args.output_stride, test_output_stride=args.output_stride,
                              amp_dtype=args.amp_dtype, ground_truth=GROUND_TRUTHS["generated"])


def build_optimizer(model: nn.Module, args: argparse.Namespace, total_iterations: int, precision: Precision):
    """SGD over backbone/head parameter groups (fused on CUDA: no host sync per step), poly LR with warm-up
    (stepped per iteration), AMP scaler."""
    groups = parameter_groups(model, args.lr, args.weight_decay, args.backbone_lr_multiplier)
    optimizer = build_sgd(groups, args.lr, args.momentum, args.weight_decay, args.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_lr_factor(iteration, total_iterations, args.power, args.warmup_iters))
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    return optimizer, scheduler, scaler


def load_initial_weights(model: nn.Module, path: Path) -> None:
    """Start from a checkpoint's weights (--init-weights); an auxiliary head it lacks starts from scratch."""
    checkpoint = load_checkpoint(path)
    config = {key: checkpoint["model_config"].get(key, default)
              for key, default in (("backbone", None), ("stem", "7x7"), ("head", "dense"))}
    wanted = {"backbone": model.config["backbone"], "stem": model.config["stem"], "head": model.config["head"]}
    if config != wanted:
        raise CheckpointError(f"{path}: holds a {config} model but the flags ask for {wanted}; pass the matching "
                              "--arch / --backbone")
    state = checkpoint["model"] if model.aux_head is not None else without_aux_head(checkpoint["model"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("aux_head.") for key in missing):
        raise CheckpointError(
            f"{path}: the weights do not fit the model (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )


def resume_state(checkpoint: dict, path: Path, model: nn.Module, optimizer, scheduler, scaler) -> TrainState:
    """Load a training checkpoint into model, optimizer, scheduler and scaler; the saved TrainState."""
    if "optimizer" not in checkpoint:
        raise CheckpointError(f"{path}: has no optimizer state, so training cannot resume from it")
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


RUN_FILES = ("last.pth", "best.pth", "history.csv", "per_class_iou.json", "args.json")


def claim_run_folder(args: argparse.Namespace) -> Path:
    """The run folder, checked before any work: a folder that holds another run is continued with --resume,
    replaced only with --overwrite, and otherwise refused (FlagError naming the three ways on)."""
    run_dir = cli.output_folder(args.save_dir, "--save-dir") / args.run_name
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    resuming_here = args.resume is not None and args.resume.resolve().parent == run_dir.resolve()
    if held and not resuming_here and not args.overwrite:
        raise cli.FlagError(
            f"{run_dir}: already holds a run ({', '.join(held)}); continue it with --resume "
            f"{run_dir / 'last.pth'}, start another with --run-name NAME, or replace it with --overwrite"
        )
    return run_dir


def open_training_log(args: argparse.Namespace, run_dir: Path, iteration: int) -> TrainingLog | None:
    """TensorBoard logs in {run}/tb, unless off or not installed. A run resumed at ``iteration`` appends, and what
    a killed run logged past that iteration is dropped (it is trained again)."""
    if args.tensorboard is False:
        return None
    if not tensorboard_available():
        log.info("TensorBoard logging is off (pip install -r requirements-tensorboard.txt turns it on)")
        return None
    training_log = TrainingLog(run_dir / TB_DIR, purge_step=iteration + 1 if iteration else None)
    log.info("TensorBoard logs in %s; view them with: tensorboard --logdir %s", run_dir / TB_DIR, run_dir.parent)
    return training_log


def show_validation(training_log: TrainingLog, val_set: CityscapesSegmentation, args: argparse.Namespace,
                    device: torch.device, amp_dtype: torch.dtype | None):
    """After each validation: its scores, and image | prediction | ground truth of the first val frames."""
    indices = range(min(args.preview_frames, len(val_set)))

    def show(model: nn.Module, row: dict) -> None:
        training_log.validation(row["iteration"], row, CLASS_NAMES)
        if indices:
            training_log.images(row["iteration"], prediction_frames(model, val_set, indices, device, amp_dtype))
        training_log.flush()

    return show


def report_failure(error: BaseException, run_dir: Path) -> int:
    """One line for a run that stopped, and its exit status: 1 a failure while running (NaN loss, full disk), 2 bad
    data found on the way, 130 Ctrl-C. ``--resume`` is advised only where a last.pth exists."""
    last = run_dir / "last.pth"
    then = (f"continue with python train_dlv3p.py --resume {last}" if last.exists()
            else "no checkpoint was written yet: run the same command again")
    if isinstance(error, KeyboardInterrupt):
        saved = f"{last} holds iteration {load_checkpoint(last)['iteration']}; " if last.exists() else ""
        print(f"interrupted: {saved}{then}", file=sys.stderr)
        return 130
    if isinstance(error, FloatingPointError):
        print(f"error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, OSError):  # a full disk or a permission while writing: the previous files stay as they were
        print(f"error: cannot write {error.filename or run_dir}: {error.strerror}; free space (or fix permissions), "
              f"then {then.removeprefix('no checkpoint was written yet: ')}", file=sys.stderr)
        return 1
    print(f"error: {cli.one_line(error)}", file=sys.stderr)  # a damaged or mismatched file, or data without labels
    return 2


def discard_unstarted_run(run_dir: Path, made: list[Path]) -> None:
    """A new run that stopped before its first checkpoint leaves nothing: its args.json, TensorBoard logs and the
    folders it made."""
    if (run_dir / "last.pth").exists():
        return
    (run_dir / "args.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)
    remove_empty_folders(made)


def plain_args(args: argparse.Namespace) -> dict:
    """The arguments as JSON-able plain values."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def given_flags(args: argparse.Namespace) -> dict:
    """The flags of this invocation that differ from the parser's defaults (what a resume record says was given)."""
    parser = get_args_parser()
    return {key: value for key, value in plain_args(args).items() if value != parser.get_default(key)
            and not (isinstance(value, str) and value == str(parser.get_default(key)))}


def run_record(args: argparse.Namespace, run_dir: Path, protocol: EvaluationProtocol, resume: dict | None) -> dict:
    """args.json: the settings the run uses; a resume keeps the first start's record, updated with the kept and
    length settings, and appends ``resume`` to its ``resumes``."""
    current = {**plain_args(args), "val_protocol": protocol.as_dict()}
    path = run_dir / "args.json"
    if resume is None or not path.exists():
        return {**current, "resumes": [] if resume is None else [resume]}
    previous = json.loads(path.read_text())
    updated = {key: current[key] for key in (*KEPT_DEFAULTS, *LENGTH_KEYS, "val_protocol")}
    return {**previous, **updated, "resumes": [*previous.get("resumes", []), resume]}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    context = init_distributed_mode(args.device)
    try:
        checkpoint = load_checkpoint(args.resume) if args.resume else None
        given = given_flags(args)
        args, changes = resolve_args(args, context, checkpoint)
        if args.tensorboard and not tensorboard_available():
            raise cli.FlagError("argument --tensorboard: the tensorboard package is not installed; pip install -r "
                                "requirements-tensorboard.txt, or drop the flag")
        run_dir = claim_run_folder(args)
        check_before_run(args.data_root, ["train", "val"], needs_masks=["train", "val"])
        train_loader, val_loader = build_dataloaders(args, context)
        total_iterations = args.iters if args.iters is not None else args.epochs * len(train_loader)
        torch.manual_seed(args.seed)
        pretrained = None if args.resume or args.init_weights else args.pretrained_backbone
        clamp_warmup(args, total_iterations)
        model = build_model(args.backbone, args.output_stride, NUM_CLASSES, pretrained,
                            aux_head=args.aux_loss_weight > 0, **ARCHITECTURES[args.arch])
        if args.init_weights and not args.resume:
            load_initial_weights(model, args.init_weights)
        model = model.to(context.device)
        if context.enabled and args.sync_bn and context.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        precision = resolve_precision(args.amp, args.amp_dtype, args.device)  # decided once, passed down
        optimizer, scheduler, scaler = build_optimizer(model, args, total_iterations, precision)
        state = (
            resume_state(checkpoint, args.resume, model, optimizer, scheduler, scaler) if args.resume else TrainState()
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {cli.one_line(error)}", file=sys.stderr)
        return 2
    configure_kernels(context.device, args.deterministic)
    made = missing_folders(run_dir)  # removed again if the run stops before its first checkpoint
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a run killed while writing a checkpoint
        if args.overwrite and not args.resume:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        protocol = validation_protocol(args, val_loader.dataset)
        resume = resume_record(given, state.iteration, changes) if args.resume else None
        write_json(run_dir / "args.json", run_record(args, run_dir, protocol, resume))
        for change in changes:
            log.info("resumed with a change: %s", change)
        log.info("run %s: %d iterations (%d per epoch), batch %d on %d process(es), device %s, from %s",
                 run_dir, total_iterations, len(train_loader), args.batch_size, context.world_size, context.device,
                 f"iteration {state.iteration}" if args.resume else "the start")
    eval_model = torch.compile(model) if args.compile else model
    train_model = (nn.parallel.DistributedDataParallel(eval_model, device_ids=[context.device.index]
                                                       if context.device.type == "cuda" else None)
                   if context.enabled else eval_model)
    training_log = open_training_log(args, run_dir, state.iteration) if context.is_main else None
    config = FitConfig(total_iterations=total_iterations, run_dir=run_dir, num_classes=NUM_CLASSES,
                       class_names=CLASS_NAMES, val_every=args.val_every, val_interval=args.val_interval,
                       seed=args.seed, rank=context.rank,
                       precision=precision,
                       channels_last=args.channels_last, log_every=args.log_every, ignore_index=IGNORE_INDEX,
                       batch_transform=finish_batch_on_device(train_loader) if args.jitter_on_device else None,
                       checkpoint_extra={"args": plain_args(args)},
                       on_log=None if training_log is None else training_log.training,
                       on_validation=None if training_log is None else
                       show_validation(training_log, val_loader.dataset, args, context.device, precision.dtype))
    try:
        state = fit(train_model, build_criterion(args), optimizer, scheduler, scaler, train_loader, val_loader,
                    context.device, config, state)
    except (FloatingPointError, OSError, ValueError, KeyboardInterrupt) as error:
        if training_log is not None:
            training_log.close()
            training_log = None
        if context.is_main and not args.resume:
            discard_unstarted_run(run_dir, made)
        return report_failure(error, run_dir)
    finally:
        if training_log is not None:
            training_log.close()
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main and state.history:
        last = state.history[-1]
        if state.best_miou < 0:
            log.warning(
                "warning: the val split has no labelled pixels (every mask is 255), so no mIoU was computed and "
                "no best.pth written; %s holds the trained model",
                run_dir / "last.pth",
            )
        else:
            log.info("done: best val mIoU %.4f; last: mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f -> %s",
                     state.best_miou, last["miou"], last["mean_dice"], last["pixel_accuracy"], run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
