"""A small synthetic data set in the exact Cityscapes layout, names and JSON format.

Each frame is a street-like scene built from polygons (sky, buildings, trees,
road, sidewalks, then cars, people, riders, poles, signs... drawn over them, some
running past the border), annotated as Cityscapes annotates: group labels,
deleted objects, license plates (id -1), ego vehicle, rectification border and
out-of-roi regions. The camera image paints every class with its own colour,
texture and noise so that a network can learn it.

Besides the polygons, ``gtFine`` receives ``labelIds``, ``instanceIds`` and
``color`` PNGs like the ones Cityscapes ships. They are drawn by a different
rasteriser (OpenCV) than the official tools' (Pillow), so, as on the real data,
they differ from masks generated from the polygons along region boundaries.

CLI: ``python -m cityscapes.synthetic --out data/demo --frames-per-split 6``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cityscapes.labels import LABEL_ID_TO_COLOR
from cityscapes.paths import SPLITS, frame_stem, image_path, polygons_path, provided_mask_path
from cityscapes.synthetic_layouts import write_folder_dataset, write_voc_dataset
from cityscapes.synthetic_scenes import make_scene, render_image, render_provided_masks
from segdata.files import OutputError, check_output_folder, write_json, write_png
from segdata.flags import Parser, ignoring_interrupts, positive_int, report_error

__all__ = ["CITIES", "MARKER_FILE", "write_dataset"]

CITIES = {
    "train": ("aachen", "bochum", "bremen"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn"),
}
MARKER_FILE = "SYNTHETIC_CITYSCAPES"
"""Written at the data set root; the writer only ever writes into folders that hold it (or are empty)."""

ANNOTATED_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet
TEST_SPLIT_LABELS = ("ego vehicle", "rectification border", "out of roi")
def _check_output_root(out: Path) -> None:
    """OutputError unless ``out`` is a folder this writer may fill: new, empty or written by it before, writable."""
    check_output_folder(out, "--out")
    if out.exists() and any(out.iterdir()) and not (out / MARKER_FILE).exists():
        raise OutputError(
            f"{out}: refusing to write a synthetic data set into a folder that holds other files "
            f"(no {MARKER_FILE} marker there); choose an empty or new folder with --out"
        )


def write_dataset(out: Path, frames_per_split: int = 6, height: int = 256, width: int = 512, seed: int = 0,
                  splits: tuple[str, ...] = SPLITS, photo_like: bool = False) -> list[str]:
    """Write the data set under ``out``; returns the frame stems written, per split in order.

    Deterministic for a seed: the same arguments give byte-identical files. ``photo_like``: camera images that
    cost what real ones cost to decode (for benchmarks; see :func:`render_image`).
    """
    out = Path(out)
    _check_output_root(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("Synthetic Cityscapes-format data written by cityscapes.synthetic\n")
    stems = []
    for split_index, split in enumerate(splits):
        cities = CITIES[split]
        for index in range(frames_per_split):
            rng = np.random.default_rng([seed, split_index, index])
            stem = frame_stem(cities[index % len(cities)], index // len(cities), ANNOTATED_FRAME)
            scene = make_scene(rng, height, width)
            annotated = scene if split != "test" else [obj for obj in scene if obj["label"] in TEST_SPLIT_LABELS]
            write_png(image_path(out, split, stem), render_image(scene, height, width, rng, photo_like),
                      photograph=photo_like)
            write_json(polygons_path(out, split, stem), {"imgHeight": height, "imgWidth": width, "objects": annotated})
            label_ids, instance_ids = render_provided_masks(annotated, height, width)
            write_png(provided_mask_path(out, split, stem, "labelIds"), label_ids)
            write_png(provided_mask_path(out, split, stem, "instanceIds"), instance_ids.astype(np.uint16))
            colour = np.dstack([LABEL_ID_TO_COLOR[label_ids], np.full(label_ids.shape, 255, np.uint8)])
            write_png(provided_mask_path(out, split, stem, "color"), colour)
            stems.append(stem)
    return stems


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m cityscapes.synthetic", description="Write a synthetic data set in the Cityscapes layout."
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/demo"), help="data set root to write (default: data/demo)"
    )
    parser.add_argument(
        "--frames-per-split",
        "--frames_per_split",
        type=positive_int,
        default=6,
        help="frames in each of train/val/test",
    )
    parser.add_argument("--height", type=positive_int, default=256, help="image height in pixels (Cityscapes: 1024)")
    parser.add_argument("--width", type=positive_int, default=512, help="image width in pixels (Cityscapes: 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    parser.add_argument("--photo-like", action="store_true",
                        help="camera images with a photograph's grain and compression, as large and as slow to "
                             "decode as real Cityscapes frames (for benchmarks)")
    parser.add_argument("--layout", choices=["cityscapes", "folder", "voc"], default="cityscapes",
                        help="the same street scenes as a folder data set (images/, masks/, classes.json) or in the "
                             "PASCAL VOC 2012 layout, for own-data training without a download")
    parser.add_argument("--colour-masks", action="store_true", help="--layout folder: colour masks, not index masks")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.frames_per_split < 1 or args.height < 16 or args.width < 16:
        raise SystemExit("error: --frames-per-split must be >= 1 and --height/--width >= 16")
    try:
        if args.layout != "cityscapes":
            return _write_other_layout(args)
        stems = write_dataset(args.out, args.frames_per_split, args.height, args.width, args.seed,
                              photo_like=args.photo_like)
    except (OSError, ValueError, KeyboardInterrupt) as error:  # a bad --out: 2; a full disk: 1; Ctrl-C: 130
        kept = "" if isinstance(error, ValueError) else "the files written so far stay; the same command rewrites them"
        with ignoring_interrupts():
            return report_error(error, kept, writing=args.out, write_advice="free space (or fix permissions) and run "
                                "again")
    print(f"wrote {len(stems)} synthetic frames ({args.height}x{args.width}) to {args.out}")
    return 0


def _write_other_layout(args: argparse.Namespace) -> int:
    _check_output_root(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MARKER_FILE).write_text(f"Synthetic {args.layout}-layout data written by cityscapes.synthetic\n")
    if args.layout == "voc":
        root = write_voc_dataset(args.out, args.frames_per_split, args.height, args.width, args.seed)
        print(f"wrote a synthetic PASCAL VOC 2012 layout to {root}: train with --dataset voc --data-root {args.out}")
        return 0
    table = write_folder_dataset(args.out, args.frames_per_split, args.height, args.width, args.seed,
                                 colour_masks=args.colour_masks)
    print(f"wrote a synthetic folder data set to {args.out}: train with --dataset folder --data-root {args.out} "
          f"--classes {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
