"""Training throughput and peak memory of DeepLabV3+ for backbone x output stride x precision x memory format / compile.

Each configuration runs the project's own training step (``engine.train_one_epoch``:
forward, loss, backward, SGD step) in a fresh process, --warmup steps untimed
then --steps timed, in one of three modes:

- ``model``: batches already on the device (the ceiling);
- ``loader``: the training loader on --data-root (random scale + crop + flip in
  --workers processes of one thread, jitter on the device on CUDA, pinned
  memory, the decoded cache with --cache), as train_dlv3p.py builds it: the
  workers start and the queue fills during the untimed steps of the same
  iterator, so the timed steps see the steady state;
- ``data``: that loader alone, no model (each batch copied to the device and
  jittered there as training does): images per second the loader can give.

--workers and --prefetch take several values (a row each) for the loader modes.
Prints a table, saves it as CSV and as a bar plot.

    python benchmarks/train_throughput.py                                  # GPU: 768x768, batch 8
    python benchmarks/train_throughput.py --data-root data --modes model loader data --precisions bf16
    python benchmarks/train_throughput.py --device cpu --modes data --workers 1 2 --data-root data/bench
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, RandomSampler

from bench_cli import add_device_and_output_flags, default_precisions, run_benchmark
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.cli import crop_side
from deeplabv3plus.config import RunConfig
from deeplabv3plus.engine import TrainingStep, masks_to_device, to_device, train_one_epoch
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import build_model
from deeplabv3plus.optimizer import build_sgd
from deeplabv3plus.precision import resolve_precision
from fresh_process import run_in_fresh_process
from segdata.files import write_csv
from segdata.flags import Parser, bounded_int, non_negative_int, positive_int
from segdata.loading import PREFETCH_BATCHES, default_workers, loader_options
from segdata.pictures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
VARIANTS = {"eager": (False, False), "channels_last": (True, False), "compile": (False, True),
            "channels_last+compile": (True, True)}
MODES = ("model", "loader", "data")
COLUMNS = ["backbone", "output_stride", "precision", "variant", "mode", "workers", "prefetch", "cache", "crop_height",
           "crop_width", "batch", "images_per_s", "images_per_s_per_worker", "data_ms_per_step", "compute_ms_per_step",
           "peak_memory_mib", "device"]


class Batches:
    """``count`` batches of a shared iterator, with a length (what train_one_epoch iterates)."""

    def __init__(self, iterator, count: int) -> None:
        self.iterator, self.count = iterator, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return itertools.islice(self.iterator, self.count)


def training_loader(config: dict, device: torch.device, batches: int) -> tuple[DataLoader, object]:
    """The training loader of train_dlv3p.py over ``batches`` batches, and the batch step it leaves to the device
    (jitter + normalisation on CUDA; None on the CPU, where the workers do it)."""
    from cityscapes.dataset import CityscapesSegmentation
    from segdata.cache import CACHE_DIR
    from segdata.dataset import SeededSampler
    from segdata.transforms import train_transforms

    jitter_on_device = config["jitter_on_device"]
    transforms = train_transforms(config["crop"], RunConfig().scale_range, jitter_on_device=jitter_on_device)
    dataset = CityscapesSegmentation(config["data_root"], "train", transforms,
                                     cache_root=config["data_root"] / CACHE_DIR if config["cache"] else None)
    sampler = SeededSampler(RandomSampler(dataset, replacement=True, num_samples=batches * config["batch"]))
    options = loader_options(config["workers"], device)
    if config["workers"]:
        options["prefetch_factor"] = config["prefetch"]
    loader = DataLoader(dataset, config["batch"], sampler=sampler, drop_last=True, **options)
    return loader, transforms.batch_step() if jitter_on_device else None


def loader_only(config: dict, device: torch.device) -> dict:
    """Images per second of the loader alone: on CUDA each batch copied to the device and jittered there; on the CPU
    the batches as they come (--jitter-on-device: the loader of the GPU path, uint8 crops, the jitter left undone)."""
    loader, batch_step = training_loader(config, device, config["warmup"] + config["steps"])
    batches = iter(loader)

    def consume(count: int) -> None:
        for images, masks, meta in itertools.islice(batches, count):
            if device.type == "cpu":
                continue  # nothing to copy: the loader's batches are what the model would take
            images = to_device(images, device, False)
            if batch_step is not None:
                images = batch_step(images, meta)
            masks_to_device(masks, device)

    consume(config["warmup"])  # workers started, queue filled: not timed
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    consume(config["steps"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / config["steps"]
    return {"images_per_s": config["batch"] / seconds, "data_ms_per_step": 1000 * seconds,
            "compute_ms_per_step": 0.0, "peak_memory_mib": float("nan")}


def measure(config: dict) -> dict:
    """Images per second and peak memory of one configuration (run in its own process)."""
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if config["mode"] == "data":
        return loader_only(config, device)
    channels_last, compile_model = VARIANTS[config["variant"]]
    model = build_model(config["backbone"], config["output_stride"]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if compile_model else model
    precision = resolve_precision(config["precision"] != "fp32", PRECISIONS[config["precision"]], device)
    optimizer = build_sgd(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0, device=device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    batch_transform = None
    if config["mode"] == "model":
        generator = torch.Generator().manual_seed(0)
        height, width = config["crop"]
        images = torch.randn(config["batch"], 3, height, width, generator=generator).to(device)
        masks = torch.randint(0, 19, (config["batch"], height, width), generator=generator).to(device)
        batches = itertools.repeat((images, masks, {}))
    else:  # one loader, one iterator: the warm-up steps start its workers and fill its queue
        loader, batch_transform = training_loader(config, device, config["warmup"] + config["steps"])
        batches = iter(loader)
    step = TrainingStep(train_model, SegmentationLoss(), optimizer, scheduler, device, scaler, precision,
                        channels_last, batch_transform, log_every=10**9)
    train_one_epoch(step, Batches(batches, config["warmup"]), description="warm-up")
    stats = train_one_epoch(step, Batches(batches, config["steps"]), description="timed")
    step_seconds = stats.data_seconds + stats.compute_seconds
    return {"images_per_s": config["batch"] / step_seconds, "data_ms_per_step": 1000 * stats.data_seconds,
            "compute_ms_per_step": 1000 * stats.compute_seconds, "peak_memory_mib": stats.peak_memory_mb}


def plot(rows: list[dict]) -> Figure:
    """Bars of throughput and peak memory per configuration."""
    figure = new_figure(12, 4.5)
    speed, memory = figure.subplots(1, 2)
    labels = [
        f"{r['backbone'].replace('resnet', 'R')} OS{r['output_stride']} {r['precision']} {r['variant']} {r['mode']}"
        + (f" {r['workers']}w" if r["mode"] != "model" else "") for r in rows
    ]
    for axis, key, title in ((speed, "images_per_s", "training images per second"),
                             (memory, "peak_memory_mib", "peak memory (MiB)")):
        bars = axis.bar(range(len(rows)), [r[key] for r in rows], color="tab:green")
        axis.bar_label(bars, fmt="%.1f", fontsize=7)
        axis.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=7)
        axis.set_title(title)
    first = rows[0]
    figure.suptitle(f"DeepLabV3+ training, {first['crop_height']}x{first['crop_width']} crops, batch {first['batch']}, "
                    f"{first['device']}")
    return figure


def configurations(args: argparse.Namespace):
    """Every configuration to measure: backbone x stride x precision x variant x mode, and for the loader modes
    x workers x prefetch (the data mode has no model: one row per workers x prefetch)."""
    seen = set()
    for backbone, output_stride, precision, variant, mode in itertools.product(
            args.backbones, args.output_strides, args.precisions, args.variants, args.modes):
        for workers, prefetch in itertools.product(args.workers, args.prefetch) if mode != "model" else [(0, 0)]:
            model = (backbone, output_stride, precision, variant) if mode != "data" else ()
            key = (*model, mode, workers, prefetch)
            if key in seen:
                continue
            seen.add(key)
            # a loader mode warms up until every worker has delivered twice and times four rounds of them: the
            # queue's first burst is not the steady state
            warmup, steps = (args.warmup, args.steps) if mode == "model" else (
                max(args.warmup, 2 * workers), max(args.steps, 4 * max(1, workers)))
            yield {"backbone": backbone, "output_stride": output_stride, "precision": precision, "variant": variant,
                   "mode": mode, "crop": tuple(args.crop), "batch": args.batch, "device": args.device,
                   "warmup": warmup, "steps": steps, "threads": args.threads, "workers": workers,
                   "prefetch": prefetch, "cache": args.cache, "data_root": args.data_root,
                   "jitter_on_device": args.device.startswith("cuda") if args.jitter_on_device is None
                   else args.jitter_on_device}


def main(args: argparse.Namespace) -> list[dict]:
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    if set(args.modes) - {"model"} and args.data_root is None:
        raise SystemExit("error: --modes loader / data need --data-root (a data set with generated masks)")
    if args.workers is None:
        args.workers = [default_workers(torch.device(args.device).type)]
    rows = []
    for config in configurations(args):
        measured = run_in_fresh_process(measure, config)
        row = {**{key: config[key] for key in ("backbone", "output_stride", "precision", "variant", "mode")},
               "workers": config["workers"], "prefetch": config["prefetch"], "cache": config["cache"],
               "crop_height": args.crop[0], "crop_width": args.crop[1], "batch": args.batch, **measured,
               "images_per_s_per_worker": measured["images_per_s"] / config["workers"] if config["workers"] else None,
               "device": device_name}
        if config["mode"] == "data":
            row.update(backbone="", output_stride="", precision="", variant="")
        rows.append(row)
        loader = f"{config['workers']:>3} workers x{config['prefetch']}" if config["mode"] != "model" else " " * 14
        print(
            f"{row['backbone']:<10} OS{row['output_stride']!s:<3}{row['precision']:<6}{row['variant']:<22}"
            f"{row['mode']:<7}{loader}{row['images_per_s']:>9.2f} img/s{row['data_ms_per_step']:>9.1f} ms data"
            f"{row['compute_ms_per_step']:>9.1f} ms compute{row['peak_memory_mib']:>9.0f} MiB",
            flush=True,
        )
    write_csv(args.csv, rows, COLUMNS)
    save_figure(plot(rows), args.plot)
    print(f"{device_name}, {args.crop[0]}x{args.crop[1]} crops, batch {args.batch}: wrote {args.csv} and {args.plot}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/train_throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=["resnet50", "resnet101"],
                        help="backbones")
    parser.add_argument("--output-strides", type=int, nargs="+", choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                        default=[16, 8], help="output strides")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                        help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on the CPU")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["eager", "channels_last"],
                        help="memory format / torch.compile")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["model"],
                        help="model: batches already on the device; loader: the training loader on --data-root; "
                             "data: that loader alone, no model")
    parser.add_argument("--crop", type=crop_side, nargs=2, default=list(RunConfig().crop_size), metavar=("H", "W"),
                        help="training crop")
    parser.add_argument("--batch", type=bounded_int(2, 1024), default=8,
                        help="images per step and process (the recipe: 8; batch norm needs 2)")
    parser.add_argument("--warmup", type=non_negative_int, default=5,
                        help="untimed steps first (cuDNN autotuning, compile)")
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps")
    parser.add_argument("--data-root", type=Path, default=None, help="data set for --modes loader")
    parser.add_argument("--workers", type=non_negative_int, nargs="+", default=None,
                        help="loader processes for the loader modes, one row each (default: train_dlv3p.py's)")
    parser.add_argument("--prefetch", type=positive_int, nargs="+", default=[PREFETCH_BATCHES],
                        help="batches each worker keeps ready (DataLoader's prefetch_factor), one row each")
    parser.add_argument("--jitter-on-device", action=argparse.BooleanOptionalAction, default=None,
                        help="the loader ships uint8 crops and the colour jitter runs on the training device, as "
                             "train_dlv3p.py does on CUDA (default: on CUDA)")
    parser.add_argument("--cache", action="store_true", help="the loader reads the decoded cache (python -m "
                                                             "cityscapes.cache) instead of the PNGs")
    add_device_and_output_flags(parser, "train_throughput")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked together (exit 2 in one line), with the device's default precisions."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if set(args.modes) - {"model"} and args.data_root is None:
        parser.error("argument --modes: loader and data need --data-root (a data set with generated masks)")
    if args.data_root is not None and not args.data_root.is_dir():
        parser.error(f"argument --data-root: {args.data_root}: no such folder")
    if args.precisions is None:
        args.precisions = default_precisions(args.device)
    return args


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, parse_args()))
