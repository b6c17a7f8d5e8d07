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
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from cityscapes.dataset import CityscapesSegmentation
from cityscapes.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cityscapes.transforms import eval_transforms, train_transforms
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint, unwrap_model
from deeplabv3plus.distributed import DistributedContext, ShardSampler, init_distributed_mode
from deeplabv3plus.engine import AMP_DTYPES, FitConfig, TrainState, fit, poly_lr_factor, resolve_amp_dtype
from deeplabv3plus.model import build_model, parameter_groups

log = logging.getLogger("train_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("Data")
    data.add_argument("--data-root", "--data_root", type=Path, default=Path("data"),
                      help="folder holding leftImg8bit/, gtFine/ and generated_gt/")
    data.add_argument("--crop-size", "--crop_size", type=int, nargs=2, default=[768, 768], metavar=("H", "W"),
                      help="training crop (height width)")
    data.add_argument("--scale-range", "--scale_range", type=float, nargs=2, default=[0.5, 2.0], metavar=("MIN", "MAX"),
                      help="random scale range of training images")
    data.add_argument("--workers", type=int, default=4, help="data loading processes per training process")
    data.add_argument("--batch-size", "--batch_size", type=int, default=8,
                      help="training batch size in total, split over the processes")
    data.add_argument("--val-batch-size", "--val_batch_size", type=int, default=1, help="validation batch per process")

    model = parser.add_argument_group("Model")
    model.add_argument("--backbone", choices=list(BACKBONES), default="resnet50", help="ResNet depth")
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=8, help="backbone output stride")
    model.add_argument("--pretrained-backbone", "--pretrained_backbone", default="imagenet",
                       help="'imagenet' (torchvision download), 'none', or a path to a ResNet state dict")

    optimization = parser.add_argument_group("Optimization")
    length = optimization.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, default=None, help="training iterations (default 80000)")
    length.add_argument("--epochs", type=int, default=None, help="training epochs instead of --iters")
    optimization.add_argument("--lr", type=float, default=0.01, help="peak learning rate of the head")
    optimization.add_argument("--backbone-lr-multiplier", type=float, default=1.0, help="backbone LR = lr x this")
    optimization.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optimization.add_argument("--weight-decay", "--weight_decay", type=float, default=5e-4,
                              help="weight decay (not applied to norm weights and biases)")
    optimization.add_argument("--power", type=float, default=0.9, help="poly LR power")
    optimization.add_argument("--warmup-iters", type=int, default=1000, help="linear LR warm-up iterations")
    optimization.add_argument("--amp", action="store_true", help="mixed precision (float16 + GradScaler on CUDA)")
    optimization.add_argument("--amp-dtype", choices=list(AMP_DTYPES), default=None,
                              help="autocast dtype (default: float16 on CUDA, bfloat16 on CPU)")

    runtime = parser.add_argument_group("Runtime")
    runtime.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    runtime.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the model")
    runtime.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, init)")
    runtime.add_argument("--save-dir", "--save_dir", type=Path, default=None,
                         help="folder of runs (default: saved, or the resumed run's parent folder)")
    runtime.add_argument("--run-name", "--run_name", default=None,
                         help="run folder name (default dlv3p_{backbone}_os{stride}, or the resumed run's)")
    runtime.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from (saved/{run}/last.pth)")
    runtime.add_argument("--val-every", "--val_every", type=int, default=10, help="validate every N epochs (and at the end)")

    distributed = parser.add_argument_group("Distributed (launch with torchrun)")
    distributed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True,
                             help="SyncBatchNorm when training on several CUDA devices")
    return parser


def resolve_args(args: argparse.Namespace, context: DistributedContext) -> argparse.Namespace:
    """Check flags against each other and fill derived defaults; ValueError names the fix."""
    if args.batch_size % context.world_size:
        raise ValueError(f"--batch-size {args.batch_size} must divide evenly over {context.world_size} processes")
    if args.batch_size // context.world_size < 2:
        raise ValueError("each process needs at least 2 images per batch (batch norm); raise --batch-size")
    if args.iters is None and args.epochs is None:
        args.iters = 80_000
    if args.amp:
        args.amp_dtype = {dtype: name for name, dtype in AMP_DTYPES.items()}[resolve_amp_dtype(True, args.amp_dtype, args.device)]
    if args.save_dir is None:  # a resumed run continues in its own folder
        args.save_dir = args.resume.parent.parent if args.resume else Path("saved")
    if args.run_name is None:
        args.run_name = args.resume.parent.name if args.resume else f"dlv3p_{args.backbone}_os{args.output_stride}"
    return args


def build_dataloaders(args: argparse.Namespace, context: DistributedContext) -> tuple[DataLoader, DataLoader]:
    """Training loader (random crops, shuffled, DistributedSampler under DDP) and validation loader (full images)."""
    train_set = CityscapesSegmentation(args.data_root, "train", train_transforms(args.crop_size, tuple(args.scale_range)))
    val_set = CityscapesSegmentation(args.data_root, "val", eval_transforms())
    per_process = args.batch_size // context.world_size
    if len(train_set) < args.batch_size:
        raise ValueError(f"{args.data_root}: the train split has {len(train_set)} images, fewer than --batch-size "
                         f"{args.batch_size}")
    if context.enabled:
        train_sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=args.seed,
                                           drop_last=True)
    else:
        train_sampler = RandomSampler(train_set)
    pin = context.device.type == "cuda"
    train_loader = DataLoader(train_set, per_process, sampler=train_sampler, num_workers=args.workers,
                              pin_memory=pin, drop_last=True)
    val_loader = DataLoader(val_set, args.val_batch_size, sampler=ShardSampler(len(val_set), context.rank, context.world_size),
                            num_workers=args.workers, pin_memory=pin)
    return train_loader, val_loader


def build_criterion(args: argparse.Namespace) -> nn.Module:
    """Pixel-wise cross-entropy that skips the ignore label."""
    return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)


def build_optimizer(model: nn.Module, args: argparse.Namespace, total_iterations: int):
    """SGD over backbone/head parameter groups, poly LR with warm-up (stepped per iteration), AMP scaler."""
    groups = parameter_groups(model, args.lr, args.weight_decay, args.backbone_lr_multiplier)
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: poly_lr_factor(iteration, total_iterations, args.power, args.warmup_iters))
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp_dtype == "float16" and args.device.startswith("cuda"))
    return optimizer, scheduler, scaler


def resume_state(path: Path, args: argparse.Namespace, model: nn.Module, optimizer, scheduler, scaler) -> TrainState:
    """Load a training checkpoint into model, optimizer, scheduler and scaler; the saved TrainState."""
    checkpoint = load_checkpoint(path)
    expected = {"backbone": args.backbone, "output_stride": args.output_stride, "num_classes": NUM_CLASSES}
    if checkpoint["model_config"] != expected:
        raise CheckpointError(f"{path}: holds {checkpoint['model_config']} but the flags ask for {expected}; "
                              "pass the matching --backbone / --output-stride")
    if "optimizer" not in checkpoint:
        raise CheckpointError(f"{path}: has no optimizer state, so training cannot resume from it")
    unwrap_model(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    fields = TrainState().as_dict()
    return TrainState(**{key: checkpoint[key] for key in fields})


def plain_args(args: argparse.Namespace) -> dict:
    """The arguments as JSON-able plain values."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    context = init_distributed_mode(args.device)
    try:
        args = resolve_args(args, context)
        train_loader, val_loader = build_dataloaders(args, context)
        total_iterations = args.iters if args.iters is not None else args.epochs * len(train_loader)
        torch.manual_seed(args.seed)
        pretrained = None if args.resume else args.pretrained_backbone
        model = build_model(args.backbone, args.output_stride, NUM_CLASSES, pretrained).to(context.device)
        if context.enabled and args.sync_bn and context.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer, scheduler, scaler = build_optimizer(model, args, total_iterations)
        state = resume_state(args.resume, args, model, optimizer, scheduler, scaler) if args.resume else TrainState()
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = args.save_dir / args.run_name
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "args.json").write_text(json.dumps(plain_args(args), indent=2) + "\n")
        log.info("run %s: %d iterations (%d per epoch), batch %d on %d process(es), device %s, from %s",
                 run_dir, total_iterations, len(train_loader), args.batch_size, context.world_size, context.device,
                 f"iteration {state.iteration}" if args.resume else "the start")
    eval_model = torch.compile(model) if args.compile else model
    train_model = (nn.parallel.DistributedDataParallel(eval_model, device_ids=[context.device.index]
                                                       if context.device.type == "cuda" else None)
                   if context.enabled else eval_model)
    config = FitConfig(total_iterations=total_iterations, run_dir=run_dir, num_classes=NUM_CLASSES,
                       class_names=CLASS_NAMES, val_every=args.val_every, seed=args.seed, rank=context.rank,
                       amp_dtype=resolve_amp_dtype(args.amp, args.amp_dtype, args.device), channels_last=args.channels_last,
                       checkpoint_extra={"args": plain_args(args)})
    try:
        state = fit(train_model, build_criterion(args), optimizer, scheduler, scaler, train_loader, val_loader,
                    context.device, config, state)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main and state.history:
        last = state.history[-1]
        log.info("done: best val mIoU %.4f; last: mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f -> %s",
                 state.best_miou, last["miou"], last["mean_dice"], last["pixel_accuracy"], run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
