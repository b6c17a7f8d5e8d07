"""Export a checkpoint to ONNX and check it against PyTorch with onnxruntime.

    python -m deeplabv3plus.export --model_weights_path saved/{run}/best.pth --format onnx --height 1024 --width 2048
    python -m deeplabv3plus.export --model_weights_path saved/{run}/best.pth --dynamic --data-root data --split val

Writes ``{out}/{run}.onnx`` (torch.onnx's dynamo exporter, the TorchScript one
where that fails), then runs onnxruntime and PyTorch on --num-images images of
a split (resized to the export size unless --dynamic) or on random inputs, and
reports the largest absolute logit difference, the share of pixels whose
argmax agrees (the goal: at least 99.99%) and the latency of both; the report
is also saved as ``{run}.onnx.parity.json``. Needs ``pip install -r
requirements-export.txt``.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from deeplabv3plus import cli
from deeplabv3plus.checkpoint import run_name_of
from segdata.files import write_bytes_atomic, write_json
from segdata.flags import log_to_terminal

__all__ = ["export_onnx", "parity_report"]

ARGMAX_GOAL = 0.9999
log = logging.getLogger("deeplabv3plus.export")


class MissingDependency(RuntimeError):
    """onnx / onnxruntime / onnxscript are not installed."""


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependency(f"{', '.join(missing)} not installed; run pip install -r requirements-export.txt")


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int, dynamic: bool = False) -> str:
    """Write the eval-mode model as ONNX (input "images" (N, 3, H, W), output "logits"), atomically; returns the
    exporter used."""
    _require_onnx()
    model = model.eval()
    example = torch.randn(2 if dynamic else 1, 3, height, width)  # a batch of 1 would be specialised to 1
    buffer = io.BytesIO()
    try:
        dynamic_shapes = (
            ({0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},) if dynamic else None
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=dynamic_shapes, verbose=False)
        program.save(buffer)
        exporter = "dynamo"
    except Exception as error:  # noqa: BLE001  the dynamo exporter fails in many ways; fall back, saying so
        log.warning("the dynamo exporter failed (%s: %s); using the TorchScript exporter", type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "")
        buffer = io.BytesIO()
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["images"], output_names=["logits"],
                          dynamic_axes=axes if dynamic else None, opset_version=17)
        exporter = "torchscript"
    write_bytes_atomic(Path(path), buffer.getvalue())
    return exporter


def parity_inputs(dataset, count: int, size: tuple[int, int], resize: bool) -> Iterator[torch.Tensor]:
    """(1, 3, H, W) normalised inputs of the parity check: the first ``count`` images of ``dataset`` (resized to
    ``size`` when ``resize``), or random inputs of ``size`` without a data set."""
    if dataset is None:
        generator = torch.Generator().manual_seed(0)
        for _ in range(count):
            yield torch.randn(1, 3, *size, generator=generator)
        return
    for index in range(min(count, len(dataset))):
        image = dataset[index][0][None]
        if resize and image.shape[-2:] != tuple(size):
            image = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)
        yield image


def _parity_split(run, data_root: Path | None, split: str):
    """The split of the data set the run was trained on (its layout and classes from the checkpoint)."""
    if data_root is None:
        return None
    from deeplabv3plus.datasets import open_split
    from segdata.transforms import eval_transforms

    return open_split(run.dataset, data_root, split, run.classes, eval_transforms())


def _median_ms(run, repeats: int = 3) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(1000 * (time.perf_counter() - start))
    return statistics.median(timings)


def parity_report(model: torch.nn.Module, onnx_path: Path, inputs: Iterator[torch.Tensor]) -> dict:
    """PyTorch against onnxruntime (CPU, or CUDA where onnxruntime has it) on each input."""
    import onnxruntime

    providers = [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if name in onnxruntime.get_available_providers()]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=providers)
    device = torch.device("cuda" if providers[0].startswith("CUDA") and torch.cuda.is_available() else "cpu")
    model = model.eval().to(device)
    max_difference, agreeing, pixels, torch_ms, onnx_ms, images = 0.0, 0, 0, [], [], 0
    for image in inputs:
        with torch.no_grad():
            expected = model(image.to(device)).float().cpu()
            torch_ms.append(_median_ms(lambda: model(image.to(device)).cpu()))
        actual = torch.from_numpy(session.run(["logits"], {"images": image.numpy()})[0])
        onnx_ms.append(_median_ms(lambda: session.run(["logits"], {"images": image.numpy()})))
        max_difference = max(max_difference, (actual - expected).abs().max().item())
        agreeing += int((actual.argmax(1) == expected.argmax(1)).sum())
        pixels += expected[:, 0].numel()
        images += 1
    agreement = agreeing / max(1, pixels)
    return {
        "images": images,
        "pixels": pixels,
        "max_abs_logit_difference": max_difference,
        "argmax_agreement": agreement,
        "meets_goal": agreement >= ARGMAX_GOAL,
        "torch_ms": statistics.median(torch_ms),
        "onnxruntime_ms": statistics.median(onnx_ms),
        "onnxruntime_provider": providers[0],
        "torch_device": str(device),
    }


def onnx_output_path(out: Path | None, checkpoint: Path) -> Path:
    """``--out`` as a file ending in .onnx, or a folder for ``{run}.onnx``; checked before any work (FlagError)."""
    if out is not None and out.suffix.lower() == ".onnx":
        return cli.output_file(out, "--out", overwrite=True)  # a file this tool makes: a new export replaces it
    folder = cli.output_folder(out or checkpoint.parent, "--out")
    return folder / f"{run_name_of(checkpoint)}.onnx"


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(description="Export a DeepLabV3+ checkpoint to ONNX and check it against PyTorch.")
    cli.add_checkpoint_flags(parser, eval_output_stride=False)
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    parser.add_argument("--height", type=cli.crop_side, default=1024, help="input height of a fixed-size export")
    parser.add_argument("--width", type=cli.crop_side, default=2048, help="input width of a fixed-size export")
    parser.add_argument("--dynamic", action="store_true", help="batch, height and width left free in the graph")
    parser.add_argument("--out", type=Path, default=None,
                        help="the .onnx file to write, or a folder for {run}.onnx (default: the checkpoint's folder)")
    parser.add_argument("--data-root", "--data_root", type=Path, default=None,
                        help="images for the parity check (default: random inputs)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="val", help="split of --data-root")
    parser.add_argument("--num-images", type=cli.positive_int, default=4, help="inputs of the parity check")
    return parser


def main(args: argparse.Namespace) -> int:
    log_to_terminal("deeplabv3plus.export")
    from deeplabv3plus.inference import TrainedRun

    try:
        _require_onnx()
        onnx_path = onnx_output_path(args.out, args.model_weights_path)
        run = TrainedRun.load(args.model_weights_path)
        model = run.model("cpu")
        exporter = export_onnx(model, onnx_path, args.height, args.width, args.dynamic)
        inputs = parity_inputs(_parity_split(run, args.data_root, args.split), args.num_images,
                               (args.height, args.width), resize=not args.dynamic)
        report = parity_report(model, onnx_path, inputs)
    except (OSError, ValueError, MissingDependency) as error:
        return cli.report_error(error)
    report = {"onnx": str(onnx_path), "exporter": exporter, "dynamic": args.dynamic,
              "input_size": None if args.dynamic else [args.height, args.width], **report}
    write_json(onnx_path.with_name(onnx_path.name + ".parity.json"), report)
    print(f"wrote {onnx_path} ({exporter} exporter, {'dynamic' if args.dynamic else f'{args.height}x{args.width}'})")
    print(f"parity on {report['images']} {'images' if args.data_root else 'random inputs'}: max |logit difference| "
          f"{report['max_abs_logit_difference']:.2e}, argmax agreement {100 * report['argmax_agreement']:.4f}% "
          f"({'meets' if report['meets_goal'] else 'MISSES'} the {100 * ARGMAX_GOAL:.2f}% goal)")
    print(f"latency per image: PyTorch {report['torch_ms']:.1f} ms ({report['torch_device']}), onnxruntime "
          f"{report['onnxruntime_ms']:.1f} ms ({report['onnxruntime_provider']})")
    return 0 if report["meets_goal"] else 1


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
