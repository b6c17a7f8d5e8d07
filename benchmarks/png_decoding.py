"""PNG decoders on the files the loader reads: milliseconds per file, and whether the pixels equal OpenCV's.

One thread, best of --repeats passes over the files of each kind, from memory
(no disk time). Kinds: the camera images (``*_leftImg8bit.png``), generated
trainId masks (grey 8-bit), colour masks (RGBA) and instanceIds (grey 16-bit)
of a data root. Decoders: OpenCV (libpng), Pillow, pyspng (libspng),
imagecodecs' libspng and libpng (zlib-ng), each where installed; "project"
is ``segdata.files.decode_png`` (what every hot path calls).

    python -m cityscapes.synthetic --out data/bench --frames-per-split 10 --height 1024 --width 2048 --photo-like
    python -m cityscapes.generate_gt --data-root data/bench
    python benchmarks/png_decoding.py --data-root data/bench
"""

from __future__ import annotations

import argparse
import importlib
import io
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bench_cli import existing_folder, run_benchmark, writable_file
from segdata.files import decode_png, write_csv
from segdata.flags import Parser, positive_int

COLUMNS = ["kind", "files", "mean_mb", "decoder", "ms_per_file", "identical_pixels"]


def kinds(root: Path, limit: int) -> dict[str, list[Path]]:
    patterns = {"camera image (RGB 8-bit)": "leftImg8bit/train/*/*_leftImg8bit.png",
                "trainId mask (grey 8-bit)": "generated_gt/train/*/*_labelTrainIds.png",
                "colour mask (RGBA 8-bit)": "gtFine/train/*/*_gtFine_color.png",
                "instanceIds (grey 16-bit)": "gtFine/train/*/*_gtFine_instanceIds.png"}
    return {kind: sorted(root.glob(pattern))[:limit] for kind, pattern in patterns.items()}


def opencv(data: bytes) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return array


def decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    """Every decoder installed here, by name."""
    from PIL import Image

    found = {"OpenCV (libpng)": opencv, "Pillow": lambda data: np.asarray(Image.open(io.BytesIO(data))),
             "project (decode_png)": decode_png}
    try:
        pyspng = importlib.import_module("pyspng")
        found["pyspng (libspng)"] = pyspng.load
    except ImportError:
        pass
    try:
        imagecodecs = importlib.import_module("imagecodecs")
        found["imagecodecs libspng"] = imagecodecs.spng_decode
        found["imagecodecs libpng + zlib-ng"] = imagecodecs.png_decode
    except ImportError:
        pass
    return found


def measure(decode: Callable[[bytes], np.ndarray], payloads: list[bytes], repeats: int) -> float:
    """Milliseconds per file, the best of ``repeats`` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for data in payloads:
            decode(data)
        best = min(best, (time.perf_counter() - start) / len(payloads))
    return 1000 * best


def identical(decode: Callable[[bytes], np.ndarray], payloads: list[bytes]) -> bool:
    try:
        return all(np.array_equal(decode(data), opencv(data)) and decode(data).shape == opencv(data).shape
                   for data in payloads)
    except Exception:  # noqa: BLE001  a decoder that refuses a kind does not decode it identically
        return False


def main(args: argparse.Namespace) -> list[dict]:
    cv2.setNumThreads(1)
    rows = []
    print(f"{'kind':<28}{'decoder':<32}{'ms/file':>9}  identical")
    for kind, paths in kinds(args.data_root, args.files).items():
        if not paths:
            continue
        payloads = [path.read_bytes() for path in paths]
        mean_mb = sum(map(len, payloads)) / len(payloads) / 1e6
        for name, decode in decoders().items():
            same = identical(decode, payloads)
            milliseconds = measure(decode, payloads, args.repeats) if same else float("nan")
            rows.append({"kind": kind, "files": len(paths), "mean_mb": round(mean_mb, 3), "decoder": name,
                         "ms_per_file": round(milliseconds, 2), "identical_pixels": "yes" if same else "no"})
            print(f"{kind:<28}{name:<32}{milliseconds:>9.2f}  {'yes' if same else 'no'}", flush=True)
    write_csv(args.csv, rows, COLUMNS)
    print(f"{args.data_root}: wrote {args.csv}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/png_decoding.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=existing_folder, default=Path("data/bench"),
                        help="data root with generated masks")
    parser.add_argument("--files", type=positive_int, default=10, help="files of each kind")
    parser.add_argument("--repeats", type=positive_int, default=5, help="passes; the best is kept")
    parser.add_argument("--csv", type=writable_file, default=Path("outputs/benchmark_png_decoding.csv"),
                        help="table as CSV")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, get_args_parser().parse_args()))
