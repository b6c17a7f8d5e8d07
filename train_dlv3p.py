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
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from cityscapes.check import check_before_run
from cityscapes.cache import CACHE_DIR
from cityscapes.dataset import GROUND_TRUTHS, CityscapesSegmentation, SeededSampler
from cityscapes.files import remove_stale_temporaries, write_json
from cityscapes.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cityscapes.transforms import eval_transforms, train_transforms
from deeplabv3plus import cli
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint, unwrap_model
from deeplabv3plus.distributed import DistributedContext, ShardSampler, init_distributed_mode
from deeplabv3plus.engine import FitConfig, TrainState, fit, poly_lr_factor
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import ARCHITECTURES, build_model, parameter_groups, without_aux_head
from deeplabv3plus.optimizer import build_sgd
from deeplabv3plus.precision import AMP_DTYPES, resolve_precision
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of

log = logging.getLogger("train_dlv3p")

RUN_DEFAULTS = {
    "backbone": "resnet50", "output_stride": 8, "crop_size": [768, 768], "scale_range": [0.5, 2.0], "batch_size": 8,
    "lr": 0.01, "backbone_lr_multiplier": 1.0, "momentum": 0.9, "weight_decay": 5e-4, "power": 0.9,
    "warmup_iters": 1000, "amp": False, "amp_dtype": None, "seed": 0, "aux_loss_weight": 0.4, "arch": "deeplabv3plus",
}
"""The recipe's value of every flag that defines a run. The parser leaves them None, so that a resumed run
takes them from its checkpoint and a flag that contradicts the checkpoint is refused by name."""
DEFAULT_ITERATIONS = 80_000


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="train_dlv3p.py", description=__doc__.splitlines()[0],
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    recipe = lambda key: f" (default: {RUN_DEFAULTS[key]}, or the resumed run's)"  # noqa: E731
    data = parser.add_argument_group("Data")
    data.add_argument("--data-root", "--data_root", type=Path, default=Path("data"),
                      help="folder holding leftImg8bit/, gtFine/ and generated_gt/")
    data.add_argument("--crop-size", "--crop_size", type=cli.crop_side, nargs="+", default=None, metavar="SIZE",
                      help="training crop: one size (square) or height width" + recipe("crop_size"))
    data.add_argument("--scale-range", "--scale_range", type=cli.positive_float, nargs=2, default=None,
                      metavar=("MIN", "MAX"), help="random scale range of training images" + recipe("scale_range"))
    data.add_argument("--workers", type=cli.non_negative_int, default=4, help="data loading processes per training process")
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
    model.add_argument("--init-weights", "--init_weights", type=Path, default=None,
                       help="start from the weights of a checkpoint (ours or converted, e.g. mmsegmentation's) to fine-tune")
    model.add_argument("--pretrained-backbone", "--pretrained_backbone", default="imagenet",
                       help="'imagenet' (torchvision download), 'none', or a path to a ResNet state dict")

    optimization = parser.add_argument_group("Optimization")
    length = optimization.add_mutually_exclusive_group()
    length.add_argument("--iters", type=cli.positive_int, default=None,
                        help=f"training iterations (default {DEFAULT_ITERATIONS}, or the resumed run's)")
    length.add_argument("--epochs", type=cli.positive_int, default=None, help="training epochs instead of --iters")
    optimization.add_argument("--lr", type=cli.positive_float, default=None, help="peak learning rate of the head" + recipe("lr"))
    optimization.add_argument("--backbone-lr-multiplier", type=cli.non_negative_float, default=None,
                              help="backbone LR = lr x this" + recipe("backbone_lr_multiplier"))
    optimization.add_argument("--momentum", type=cli.non_negative_float, default=None, help="SGD momentum" + recipe("momentum"))
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
    runtime.add_argument("--seed", type=int, default=None, help="random seed (data order, augmentation, init)" + recipe("seed"))
    runtime.add_argument("--save-dir", "--save_dir", type=Path, default=None,
                         help="folder of runs (default: saved, or the resumed run's parent folder)")
    runtime.add_argument("--run-name", "--run_name", default=None,
                         help="run folder name (default dlv3p_{backbone}_os{stride}, or the resumed run's)")
    runtime.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from (saved/{run}/last.pth)")
    runtime.add_argument("--overwrite", action="store_true",
                         help="replace the run already in the run folder (without it, such a run is never touched)")
    runtime.add_argument("--val-every", "--val_every", type=cli.positive_int, default=10,
                         help="validate every N epochs (and at the end)")
    runtime.add_argument("--log-every", "--log_every", type=cli.positive_int, default=20,
                         help="look at the loss (progress bar, non-finite check) every N iterations")

    distributed = parser.add_argument_group("Distributed (launch with torchrun)")
    distributed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True,
                             help="SyncBatchNorm when training on several CUDA devices")
    return parser


def resolve_run_flags(args: argparse.Namespace, checkpoint: dict | None, path: Path | None) -> None:
    """Fill the run-defining flags: from the resumed checkpoint, else the recipe; FlagError when a flag
    contradicts the run being resumed (its optimizer and schedule could not honour it)."""
    saved = dict(checkpoint.get("args", {})) if checkpoint is not None else {}
    if checkpoint is not None:
        config = checkpoint["model_config"]
        saved.update({key: config[key] for key in ("backbone", "output_stride")})
        # checkpoints written before the auxiliary head and the --arch presets existed
        saved.setdefault("aux_loss_weight", RUN_DEFAULTS["aux_loss_weight"] if config.get("aux_head") else 0.0)
        saved.setdefault("arch", "mmseg" if config.get("stem") == "deep" else "deeplabv3plus")
    for key, default in {**RUN_DEFAULTS, "iters": None, "epochs": None}.items():
        given = getattr(args, key)
        if key == "crop_size" and given is not None:
            given = list(cli.crop_size(given))
        if checkpoint is not None and key in saved:
            if given is not None and given != saved[key] and not (key in ("iters", "epochs") and saved[key] is None):
                flag = "--" + key.replace("_", "-")
                raise cli.FlagError(f"argument {flag}: {given} differs from {saved[key]} of the run in {path}; a resumed "
                                    "run keeps its settings: drop the flag, or start a new run with --run-name")
            if given is None:
                given = saved[key]
        setattr(args, key, default if given is None else given)
    if checkpoint is not None and args.iters is not None and args.epochs is not None:  # one of them was given anew
        raise cli.FlagError(f"argument --iters/--epochs: the run in {path} has its length already; drop the flag")
    if args.iters is None and args.epochs is None:
        args.iters = DEFAULT_ITERATIONS


def resolve_args(args: argparse.Namespace, context: DistributedContext, checkpoint: dict | None = None) -> argparse.Namespace:
    """Check flags against each other and fill derived defaults; FlagError names the flag and the fix."""
    resolve_run_flags(args, checkpoint, args.resume)
    args.scale_range = list(cli.scale_range(args.scale_range))
    if args.batch_size % context.world_size:
        raise cli.FlagError(f"argument --batch-size: {args.batch_size} must divide evenly over {context.world_size} processes")
    if args.batch_size // context.world_size < 2:
        raise cli.FlagError("argument --batch-size: each process needs at least 2 images per batch (batch norm); raise it")
    if args.amp_dtype is not None and not args.amp:
        raise cli.FlagError(f"argument --amp-dtype: {args.amp_dtype} takes effect only with --amp; add --amp or drop it")
    precision = resolve_precision(args.amp, args.amp_dtype, args.device)
    args.amp_dtype = precision.name
    if precision.dtype == torch.float16 and torch.device(args.device).type == "cpu":
        log.warning("warning: float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16")
    if args.save_dir is None:  # a resumed run continues in its own folder
        args.save_dir = args.resume.parent.parent if args.resume else Path("saved")
    if args.run_name is None:
        args.run_name = args.resume.parent.name if args.resume else f"dlv3p_{args.backbone}_os{args.output_stride}"
    return args


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
    train_loader = DataLoader(train_set, per_process, sampler=SeededSampler(train_sampler), drop_last=True, **workers)
    val_loader = DataLoader(val_set, args.val_batch_size, sampler=ShardSampler(len(val_set), context.rank, context.world_size),
                            **workers)
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


def build_optimizer(model: nn.Module, args: argparse.Namespace, total_iterations: int):
    """SGD over backbone/head parameter groups (fused on CUDA: no host sync per step), poly LR with warm-up
    (stepped per iteration), AMP scaler."""
    groups = parameter_groups(model, args.lr, args.weight_decay, args.backbone_lr_multiplier)
    optimizer = build_sgd(groups, args.lr, args.momentum, args.weight_decay, args.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_lr_factor(iteration, total_iterations, args.power, args.warmup_iters))
    scaler = torch.amp.GradScaler("cuda", enabled=resolve_precision(args.amp, args.amp_dtype, args.device).use_scaler)
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
        raise CheckpointError(f"{path}: the weights do not fit the model (missing {missing[:2]}, unexpected {unexpected[:2]})")


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
        raise cli.FlagError(f"{run_dir}: already holds a run ({', '.join(held)}); continue it with --resume "
                            f"{run_dir / 'last.pth'}, start another with --run-name NAME, or replace it with --overwrite")
    return run_dir


def plain_args(args: argparse.Namespace) -> dict:
    """The arguments as JSON-able plain values."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    context = init_distributed_mode(args.device)
    try:
        checkpoint = load_checkpoint(args.resume) if args.resume else None
        args = resolve_args(args, context, checkpoint)
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
        optimizer, scheduler, scaler = build_optimizer(model, args, total_iterations)
        state = resume_state(checkpoint, args.resume, model, optimizer, scheduler, scaler) if args.resume else TrainState()
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {cli.one_line(error)}", file=sys.stderr)
        return 2
    configure_kernels(context.device, args.deterministic)
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a run killed while writing a checkpoint
        if args.overwrite and not args.resume:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        protocol = validation_protocol(args, val_loader.dataset)
        write_json(run_dir / "args.json", {**plain_args(args), "val_protocol": protocol.as_dict()})
        log.info("run %s: %d iterations (%d per epoch), batch %d on %d process(es), device %s, from %s",
                 run_dir, total_iterations, len(train_loader), args.batch_size, context.world_size, context.device,
                 f"iteration {state.iteration}" if args.resume else "the start")
    eval_model = torch.compile(model) if args.compile else model
    train_model = (nn.parallel.DistributedDataParallel(eval_model, device_ids=[context.device.index]
                                                       if context.device.type == "cuda" else None)
                   if context.enabled else eval_model)
    config = FitConfig(total_iterations=total_iterations, run_dir=run_dir, num_classes=NUM_CLASSES,
                       class_names=CLASS_NAMES, val_every=args.val_every, seed=args.seed, rank=context.rank,
                       precision=resolve_precision(args.amp, args.amp_dtype, args.device),
                       channels_last=args.channels_last, log_every=args.log_every,
                       batch_transform=finish_batch_on_device(train_loader) if args.jitter_on_device else None,
                       checkpoint_extra={"args": plain_args(args)})
    resume = f"python train_dlv3p.py --resume {run_dir / 'last.pth'}"
    try:
        state = fit(train_model, build_criterion(args), optimizer, scheduler, scaler, train_loader, val_loader,
                    context.device, config, state)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk or a permission while writing: the previous files stay as they were
        print(f"error: cannot write {error.filename or run_dir}: {error.strerror}; free space (or fix permissions), "
              f"then continue with {resume}", file=sys.stderr)
        return 1
    except ValueError as error:  # a damaged or mismatched file, found when the loader reached it
        print(f"error: {cli.one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = (f"{run_dir / 'last.pth'} holds iteration {load_checkpoint(run_dir / 'last.pth')['iteration']}"
                 if (run_dir / "last.pth").exists() else "no checkpoint was written yet")
        print(f"interrupted: {saved}; continue with {resume}", file=sys.stderr)
        return 130
    finally:
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main and state.history:
        last = state.history[-1]
        if state.best_miou < 0:
            log.warning("warning: the val split has no labelled pixels (every mask is 255), so no mIoU was computed and "
                        "no best.pth written; %s holds the trained model", run_dir / "last.pth")
        else:
            log.info("done: best val mIoU %.4f; last: mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f -> %s",
                     state.best_miou, last["miou"], last["mean_dice"], last["pixel_accuracy"], run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
