"""Per-image latency, peak memory and FLOPs of DeepLabV3+ for backbone x output stride x precision.

Latency: median of --runs forward passes after --warmup (CUDA events on a GPU).
Peak memory: torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on
the CPU; each configuration runs in a fresh process so that peaks do not mix.
FLOPs: torch.utils.flop_counter on the meta device (2 FLOPs per multiply-add).
Prints a table, saves it as CSV and as a bar plot.

    python benchmarks/inference.py                                  # GPU, 1024x2048
    python benchmarks/inference.py --device cpu --height 256 --width 512 --backbones resnet50
    python benchmarks/inference.py --modes whole slide --crop 769 769 --stride 513 513   # the memory slide saves
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_cli import add_device_and_output_flags, default_precisions, run_benchmark
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.cli import crop_side
from deeplabv3plus.inference import sliding_window_logits
from deeplabv3plus.model import build_model
from fresh_process import run_in_fresh_process
from segdata.files import write_csv
from segdata.flags import Parser, non_negative_int, positive_int
from segdata.pictures import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COLUMNS = ["backbone", "output_stride", "precision", "mode", "height", "width", "batch", "params_m", "gflops",
           "median_ms", "peak_memory_mib", "device"]


def count_gflops(backbone: str, output_stride: int, height: int, width: int) -> float:
    """Forward GFLOPs of one image, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = build_model(backbone, output_stride).eval()
        images = torch.empty(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return counter.get_total_flops() / 1e9


def measure(config: dict) -> dict:
    """Latency and peak memory of one configuration (run in its own process)."""
    torch.set_num_threads(config["threads"]) if config["threads"] else None
    device = torch.device(config["device"])
    model = build_model(config["backbone"], config["output_stride"]).eval().to(device)
    images = torch.randn(config["batch"], 3, config["height"], config["width"], device=device)
    if config["channels_last"]:
        model, images = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    dtype = PRECISIONS[config["precision"]]
    if config["mode"] == "slide":
        forward = lambda batch: sliding_window_logits(model, batch, config["crop"], config["stride"])  # noqa: E731
    else:
        forward = model
    timings = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for index in range(config["warmup"] + config["runs"]):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                forward(images)
                end.record()
                torch.cuda.synchronize(device)
                elapsed = start.elapsed_time(end)
            else:
                begin = time.perf_counter()
                forward(images)
                elapsed = 1000 * (time.perf_counter() - begin)
            if index >= config["warmup"]:
                timings.append(elapsed / config["batch"])
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"median_ms": statistics.median(timings), "peak_memory_mib": peak,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def plot(rows: list[dict]) -> Figure:
    """Bars of latency and peak memory per configuration (the seed's inference-time and memory pictures)."""
    figure = new_figure(12, 4.5)
    latency, memory = figure.subplots(1, 2)
    labels = [
        f"{r['backbone'].replace('resnet', 'R')} OS{r['output_stride']} {r['precision']} {r['mode']}" for r in rows
    ]
    for axis, key, title in ((latency, "median_ms", "median latency per image (ms)"),
                             (memory, "peak_memory_mib", "peak memory (MiB)")):
        bars = axis.bar(range(len(rows)), [r[key] for r in rows], color="tab:blue")
        axis.bar_label(bars, fmt="%.0f", fontsize=8)
        axis.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
        axis.set_title(title)
    first = rows[0]
    figure.suptitle(
        f"DeepLabV3+ inference, {first['height']}x{first['width']}, batch {first['batch']}, {first['device']}"
    )
    return figure


def main(args: argparse.Namespace) -> list[dict]:
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    rows = []
    for backbone in args.backbones:
        for output_stride in args.output_strides:
            gflops = count_gflops(backbone, output_stride, args.height, args.width)
            for precision in args.precisions:
                for mode in args.modes:
                    config = {
                        "backbone": backbone,
                        "output_stride": output_stride,
                        "precision": precision,
                        "mode": mode,
                        "height": args.height,
                        "width": args.width,
                        "batch": args.batch,
                        "device": args.device,
                        "warmup": args.warmup,
                        "runs": args.runs,
                        "channels_last": args.channels_last,
                        "threads": args.threads,
                        "crop": tuple(args.crop),
                        "stride": tuple(args.stride),
                    }
                    measured = run_in_fresh_process(measure, config)
                    row = {
                        **{
                            k: config[k]
                            for k in ("backbone", "output_stride", "precision", "mode", "height", "width", "batch")
                        },
                        **measured,
                        "gflops": gflops,
                        "device": device_name,
                    }
                    rows.append(row)
                    print(
                        f"{backbone:<10} OS{output_stride:<3}{precision:<6}{mode:<6}{row['params_m']:>8.1f} M"
                        f"{gflops:>10.1f} GFLOPs{row['median_ms']:>10.1f} ms{row['peak_memory_mib']:>10.0f} MiB",
                        flush=True,
                    )
    write_csv(args.csv, rows, COLUMNS)
    save_figure(plot(rows), args.plot)
    print(f"{device_name}, {args.height}x{args.width}, batch {args.batch}: wrote {args.csv} and {args.plot}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/inference.py", description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES),
                        default=["resnet50", "resnet101", "resnet152"], help="backbones")
    parser.add_argument("--output-strides", type=int, nargs="+", choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                        default=[8, 16], help="output strides")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                        help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on the CPU")
    parser.add_argument("--height", type=crop_side, default=1024, help="image height (Cityscapes: 1024)")
    parser.add_argument("--width", type=crop_side, default=2048, help="image width (Cityscapes: 2048)")
    parser.add_argument("--batch", type=positive_int, default=1, help="images per forward pass")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed passes first")
    parser.add_argument("--runs", type=positive_int, default=10, help="timed passes")
    parser.add_argument("--modes", nargs="+", choices=["whole", "slide"], default=["whole"],
                        help="whole image in one pass, or sliding windows (--crop, --stride); GFLOPs are whole-image")
    parser.add_argument("--crop", type=crop_side, nargs=2, default=[769, 769], metavar=("H", "W"),
                        help="sliding window")
    parser.add_argument("--stride", type=crop_side, nargs=2, default=[513, 513], metavar=("H", "W"),
                        help="window step")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    add_device_and_output_flags(parser, "inference")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked together (exit 2 in one line), with the device's default precisions."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if "slide" in args.modes and any(step > side for step, side in zip(args.stride, args.crop)):
        parser.error(f"argument --stride: {args.stride} leaves gaps between --crop {args.crop} windows")
    if args.precisions is None:
        args.precisions = default_precisions(args.device)
    return args


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, parse_args()))
