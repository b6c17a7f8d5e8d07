"""Training throughput and peak memory of DeepLabV3+ for backbone x output stride x precision x memory format / compile.

Each configuration runs the project's own training step (``engine.train_one_epoch``:
forward, loss, backward, SGD step) in a fresh process, --warmup steps untimed
then --steps timed, either on batches already on the device ("model": the
ceiling) or from the real data loader on --data-root ("loader": what training
gets, random scale + crop + flip + jitter in --workers processes).
Prints a table, saves it as CSV and as a bar plot.

    python benchmarks/train_throughput.py                                  # GPU: 768x768, batch 2 per GPU
    python benchmarks/train_throughput.py --data-root data --modes model loader
    python benchmarks/train_throughput.py --device cpu --crop 128 128 --backbones resnet50 --output-strides 16
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, RandomSampler

from deeplabv3plus.engine import train_one_epoch
from deeplabv3plus.loss import SegmentationLoss
from deeplabv3plus.model import build_model
from deeplabv3plus.optimizer import build_sgd
from deeplabv3plus.precision import resolve_precision
from segdata.files import write_csv
from segdata.flags import Parser
from segdata.pictures import save_figure
from segdata.transforms import RECIPE_CROP_SIZE

PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
VARIANTS = {"eager": (False, False), "channels_last": (True, False), "compile": (False, True),
            "channels_last+compile": (True, True)}
COLUMNS = ["backbone", "output_stride", "precision", "variant", "mode", "crop_height", "crop_width", "batch",
           "images_per_s", "data_ms_per_step", "compute_ms_per_step", "peak_memory_mib", "device"]


def batches(config: dict, device: torch.device, steps: int):
    """``steps`` batches: one random batch already on the device, or the real training loader."""
    height, width = config["crop"]
    if config["mode"] == "model":
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(config["batch"], 3, height, width, generator=generator).to(device)
        masks = torch.randint(0, 19, (config["batch"], height, width), generator=generator).to(device)
        return [(images, masks, {})] * steps
    from cityscapes.dataset import CityscapesSegmentation
    from segdata.transforms import train_transforms

    dataset = CityscapesSegmentation(config["data_root"], "train", train_transforms((height, width)))
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * config["batch"])
    return DataLoader(dataset, config["batch"], sampler=sampler, num_workers=config["workers"],
                      pin_memory=device.type == "cuda", drop_last=True)


def measure(config: dict) -> dict:
    """Images per second and peak memory of one configuration (run in its own process)."""
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    torch.backends.cudnn.benchmark = device.type == "cuda"
    channels_last, compile_model = VARIANTS[config["variant"]]
    model = build_model(config["backbone"], config["output_stride"]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if compile_model else model
    precision = resolve_precision(config["precision"] != "fp32", PRECISIONS[config["precision"]], device)
    optimizer = build_sgd(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0, device=device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    options = {"scaler": scaler, "precision": precision, "channels_last": channels_last, "log_every": 10**9}
    train_one_epoch(train_model, SegmentationLoss(), optimizer, scheduler, batches(config, device, config["warmup"]),
                    device, description="warm-up", **options)
    stats = train_one_epoch(train_model, SegmentationLoss(), optimizer, scheduler,
                            batches(config, device, config["steps"]), device, description="timed", **options)
    step_seconds = stats.data_seconds + stats.compute_seconds
    return {"images_per_s": config["batch"] / step_seconds, "data_ms_per_step": 1000 * stats.data_seconds,
            "compute_ms_per_step": 1000 * stats.compute_seconds, "peak_memory_mib": stats.peak_memory_mb}


def plot(rows: list[dict]) -> Figure:
    """Bars of throughput and peak memory per configuration."""
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    speed, memory = figure.subplots(1, 2)
    labels = [
        f"{r['backbone'].replace('resnet', 'R')} OS{r['output_stride']} {r['precision']} {r['variant']} {r['mode']}"
        for r in rows
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


def main(args: argparse.Namespace) -> list[dict]:
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    if "loader" in args.modes and args.data_root is None:
        raise SystemExit("error: --modes loader needs --data-root (a data set with generated masks)")
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for backbone, output_stride, precision, variant, mode in itertools.product(
            args.backbones, args.output_strides, args.precisions, args.variants, args.modes):
        config = {"backbone": backbone, "output_stride": output_stride, "precision": precision, "variant": variant,
                  "mode": mode, "crop": tuple(args.crop), "batch": args.batch, "device": args.device,
                  "warmup": args.warmup, "steps": args.steps, "threads": args.threads, "workers": args.workers,
                  "data_root": args.data_root}
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            measured = pool.submit(measure, config).result()
        row = {"backbone": backbone, "output_stride": output_stride, "precision": precision, "variant": variant,
               "mode": mode, "crop_height": args.crop[0], "crop_width": args.crop[1], "batch": args.batch,
               **measured, "device": device_name}
        rows.append(row)
        print(
            f"{backbone:<10} OS{output_stride:<3}{precision:<6}{variant:<22}{mode:<7}{row['images_per_s']:>9.2f} img/s"
            f"{row['data_ms_per_step']:>9.1f} ms data{row['compute_ms_per_step']:>9.1f} ms compute"
            f"{row['peak_memory_mib']:>9.0f} MiB",
            flush=True,
        )
    write_csv(args.csv, rows, COLUMNS)
    save_figure(plot(rows), args.plot)
    print(f"{device_name}, {args.crop[0]}x{args.crop[1]} crops, batch {args.batch}: wrote {args.csv} and {args.plot}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/train_throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "resnet101"], help="backbones")
    parser.add_argument("--output-strides", type=int, nargs="+", default=[16, 8], help="output strides")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                        help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on the CPU")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["eager", "channels_last"],
                        help="memory format / torch.compile")
    parser.add_argument("--modes", nargs="+", choices=["model", "loader"], default=["model"],
                        help="model: batches already on the device; loader: the real training loader on --data-root")
    parser.add_argument(
        "--crop", type=int, nargs=2, default=list(RECIPE_CROP_SIZE), metavar=("H", "W"), help="training crop"
    )
    parser.add_argument("--batch", type=int, default=2, help="images per step and process (the recipe: 8 over 4 GPUs)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, compile)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--data-root", type=Path, default=None, help="data set for --modes loader")
    parser.add_argument("--workers", type=int, default=8, help="loader processes for --modes loader")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--csv", type=Path, default=Path("outputs/benchmark_train_throughput.csv"), help="CSV to write")
    parser.add_argument(
        "--plot", type=Path, default=Path("outputs/benchmark_train_throughput.png"), help="plot to write"
    )
    return parser


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    if arguments.precisions is None:
        arguments.precisions = ["fp32", "fp16", "bf16"] if arguments.device.startswith("cuda") else ["fp32", "bf16"]
    main(arguments)
