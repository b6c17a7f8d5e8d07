"""Masks from ``*_gtFine_polygons.json``, exactly as the official Cityscapes tools draw them.

Every annotation is drawn once, as labelIds, with the rasteriser
``cityscapesscripts.preparation.json2labelImg`` uses (Pillow's polygon fill, in
file order, later polygons over earlier ones, deleted objects and id -1 labels
skipped, ``cargroup`` -> ``car``); trainIds and colours then follow by table
lookup, which gives the same pixels as drawing them again.

CLI::

    python -m cityscapes.generate_gt --data-root data [--splits train val test] [--workers N]
    python -m cityscapes.generate_gt compare --data-root data --split val
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from cityscapes.labels import LABEL_ID_TO_COLOR, LABEL_ID_TO_TRAIN_ID, resolve_label
from cityscapes.paths import (
    GENERATED_DIR,
    MASK_KINDS,
    POLYGONS_SUFFIX,
    SPLITS,
    generated_mask_path,
    image_files,
    image_path,
    polygon_files,
    stem_of,
)
from segdata.files import check_output_folder, is_up_to_date, png_is_complete, write_csv, write_png
from segdata.flags import Parser, positive_int, report_error

__all__ = [
    "AnnotationError",
    "ConversionResult",
    "convert_annotation",
    "draw_label_ids",
    "generate",
    "load_annotation",
    "masks_from_label_ids",
]


class AnnotationError(ValueError):
    """A polygons JSON that cannot be turned into masks; the message names the file and the problem."""


@dataclass(frozen=True)
class Annotation:
    """The parts of a polygons JSON that masks are drawn from."""

    height: int
    width: int
    objects: list[tuple[int, list[tuple[float, float]]]]  # (labelId, polygon) to draw, in order


@dataclass(frozen=True)
class ConversionResult:
    """What happened to one annotation file: ``written``, ``skipped`` (outputs exist) or ``failed``."""

    json_path: Path
    status: str
    error: str = ""


def _parse_annotation(data: object, source: str) -> Annotation:
    if not isinstance(data, dict):
        raise AnnotationError(f"{source}: expected a JSON object with imgHeight, imgWidth and objects")
    missing = [key for key in ("imgHeight", "imgWidth", "objects") if key not in data]
    if missing:
        raise AnnotationError(f"{source}: missing key(s) {', '.join(missing)}; is this a *_gtFine_polygons.json?")
    try:
        height, width = int(data["imgHeight"]), int(data["imgWidth"])
    except (TypeError, ValueError):
        raise AnnotationError(f"{source}: imgHeight and imgWidth must be integers") from None
    if height <= 0 or width <= 0:
        raise AnnotationError(f"{source}: image size {height}x{width} is not positive")
    objects = []
    for index, obj in enumerate(data["objects"]):
        where = f"{source}: object {index}"
        if not isinstance(obj, dict) or "label" not in obj or "polygon" not in obj:
            raise AnnotationError(f"{where} lacks 'label' or 'polygon'")
        label = resolve_label(str(obj["label"]))
        if label is None:
            raise AnnotationError(
                f"{where} has unknown label {obj['label']!r}; use a name of the cityscapesscripts label table"
            )
        if obj.get("deleted") or label.id < 0:  # the official tools skip both
            continue
        try:
            polygon = [(point[0], point[1]) for point in obj["polygon"]]
        except (TypeError, IndexError, KeyError):
            raise AnnotationError(f"{where} ({obj['label']}): polygon must be a list of [x, y] points") from None
        if len(polygon) < 2:
            raise AnnotationError(
                f"{where} ({obj['label']}): a polygon needs at least 2 points, it has {len(polygon)} "
                "(the official tools cannot draw it either); fix or delete the object"
            )
        objects.append((label.id, polygon))
    return Annotation(height, width, objects)


def load_annotation(json_path: Path) -> Annotation:
    """Read and validate a polygons JSON; raises AnnotationError naming the file."""
    try:
        data = json.loads(Path(json_path).read_text())
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{json_path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{json_path}: cannot read the file ({error})") from None
    return _parse_annotation(data, str(json_path))


def draw_label_ids(annotation: Annotation) -> np.ndarray:
    """(H, W) uint8 labelIds, drawn as ``json2labelImg(..., encoding="ids")`` draws them."""
    canvas = Image.new("L", (annotation.width, annotation.height), 0)  # 0 = 'unlabeled'
    drawer = ImageDraw.Draw(canvas)
    for label_id, polygon in annotation.objects:
        drawer.polygon(polygon, fill=label_id)
    return np.asarray(canvas)


def masks_from_label_ids(label_ids: np.ndarray) -> dict[str, np.ndarray]:
    """labelIds -> {"labelIds", "labelTrainIds" (H, W) uint8, "color" (H, W, 4) RGBA uint8}.

    The colour mask is RGBA with opaque alpha, as the official tools save it.
    ``cv2.LUT`` does the lookups: several times faster than numpy indexing.
    """
    rgba = [np.ascontiguousarray(LABEL_ID_TO_COLOR[:, channel]) for channel in range(3)]
    rgba.append(np.full(256, 255, np.uint8))
    return {
        "labelIds": label_ids,
        "labelTrainIds": cv2.LUT(label_ids, LABEL_ID_TO_TRAIN_ID),
        "color": cv2.merge([cv2.LUT(label_ids, table) for table in rgba]),
    }


def _check_image_size(annotation: Annotation, json_path: Path, data_root: Path, split: str) -> None:
    image = image_path(data_root, split, stem_of(json_path))
    if not image.exists():
        return
    with Image.open(image) as opened:  # reads the header only
        width, height = opened.size
    if (height, width) != (annotation.height, annotation.width):
        raise AnnotationError(
            f"{json_path}: imgHeight x imgWidth is {annotation.height}x{annotation.width} but {image.name} is "
            f"{height}x{width}; the annotation does not belong to this image"
        )


def convert_annotation(json_path: Path, data_root: Path, out_root: Path, split: str,
                       overwrite: bool = False) -> ConversionResult:
    """Write the three masks of one annotation; never raises for bad input, reports it."""
    stem = stem_of(json_path)
    outputs = {kind: generated_mask_path(out_root, split, stem, kind) for kind in MASK_KINDS}
    if not overwrite and all(is_up_to_date(path, json_path) and png_is_complete(path) for path in outputs.values()):
        return ConversionResult(json_path, "skipped")
    try:
        annotation = load_annotation(json_path)
        _check_image_size(annotation, json_path, data_root, split)
    except AnnotationError as error:
        return ConversionResult(json_path, "failed", str(error))
    for kind, mask in masks_from_label_ids(draw_label_ids(annotation)).items():
        write_png(outputs[kind], mask)
    return ConversionResult(json_path, "written")


def _convert_job(job: tuple[Path, Path, Path, str, bool]) -> ConversionResult:
    return convert_annotation(*job)


def _check_out_root(data_root: Path, out_root: Path) -> None:
    gt_fine = (data_root / "gtFine").resolve()
    resolved = out_root.resolve()
    if resolved == gt_fine or gt_fine in resolved.parents:
        raise ValueError(
            f"{out_root}: refusing to write inside gtFine/ (the original annotations); choose another --out"
        )


def generate(
    data_root: Path,
    splits: Sequence[str] = SPLITS,
    out_root: Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    skip_absent_splits: bool = False,
) -> list[ConversionResult]:
    """Convert every polygons JSON of ``splits`` under ``data_root``; results sorted by file.

    ``out_root`` defaults to ``{data_root}/generated_gt``; ``workers`` to all cores.
    Masks that exist, are not empty and are not older than their annotation are
    skipped unless ``overwrite``. Raises FileNotFoundError when a split has no
    annotations at all, unless ``skip_absent_splits`` (then it is left out).
    """
    data_root = Path(data_root)
    out_root = Path(out_root) if out_root is not None else data_root / GENERATED_DIR
    _check_out_root(data_root, out_root)
    jobs = []
    for split in splits:
        files = polygon_files(data_root, split)
        if not files and skip_absent_splits:
            continue
        if not files:
            raise FileNotFoundError(
                f"{data_root / 'gtFine' / split}: no *_gtFine_polygons.json found; extract gtFine_trainvaltest.zip "
                f"into {data_root} (or pass --data-root)"
            )
        jobs += [(path, data_root, out_root, split, overwrite) for path in files]
    if not jobs:
        raise FileNotFoundError(f"{data_root / 'gtFine'}: no *_gtFine_polygons.json in {', '.join(splits)}; extract "
                                f"gtFine_trainvaltest.zip into {data_root} (or pass --data-root)")
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="generate_gt", unit="file", disable=not progress)
    if workers == 1:
        results = []
        for job in jobs:
            results.append(_convert_job(job))
            bar.update()
    else:
        with Pool(workers) as pool:
            results = []
            for result in pool.imap_unordered(_convert_job, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                results.append(result)
                bar.update()
    bar.close()
    return sorted(results, key=lambda result: result.json_path)


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m cityscapes.generate_gt",
        description="Generate labelIds / labelTrainIds / color masks from gtFine polygons, "
        "or compare generated masks with the provided ones.",
    )
    commands = parser.add_subparsers(dest="command")
    generate_parser = commands.add_parser("generate", help="write masks (the default command)")
    generate_parser.add_argument("--data-root", "--data_root", type=Path, default=Path("data"),
                                 help="data set root holding gtFine/ and leftImg8bit/ (default: data)")
    generate_parser.add_argument("--splits", nargs="+", choices=SPLITS, default=None,
                                 help="splits to convert (default: those of train/val/test that have annotations)")
    generate_parser.add_argument("--out", type=Path, default=None,
                                 help="output root (default: {data-root}/generated_gt); never inside gtFine/")
    generate_parser.add_argument(
        "--workers", type=positive_int, default=os.cpu_count(), help="processes (default: all cores)"
    )
    generate_parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite every mask (without it, only missing, empty or outdated ones are written)",
    )
    compare_parser = commands.add_parser("compare", help="compare generated labelIds with the provided ones")
    compare_parser.add_argument("--data-root", "--data_root", type=Path, default=Path("data"), help="data set root")
    compare_parser.add_argument("--split", choices=SPLITS, default="val", help="split to compare (default: val)")
    compare_parser.add_argument("--generated", type=Path, default=None,
                                help="generated masks root (default: {data-root}/generated_gt)")
    compare_parser.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the CSVs and the figure")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the CLI; ``generate`` is the command when none is named."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("generate", "compare", "-h", "--help"):
        argv.insert(0, "generate")
    return get_args_parser().parse_args(argv)


def _report_unannotated(data_root: Path, splits: Sequence[str]) -> None:
    """Name the splits without annotations and the images without a polygon file: masks cannot exist for them."""
    annotated_by_split = {split: {stem_of(path) for path in polygon_files(data_root, split)} for split in splits}
    if not any(annotated_by_split.values()):
        return  # nothing to convert at all: generate() says so
    for split, annotated in annotated_by_split.items():
        if not annotated:
            print(f"notice: {data_root / 'gtFine' / split}: no *_gtFine_polygons.json, split skipped "
                  f"(extract gtFine_trainvaltest.zip for it, or name the splits with --splits)", file=sys.stderr)
            continue
        unannotated = [path for path in image_files(data_root, split) if stem_of(path) not in annotated]
        if unannotated:
            print(f"warning: {unannotated[0]}: no {stem_of(unannotated[0])}{POLYGONS_SUFFIX} in gtFine/{split} "
                  f"({len(unannotated)} {split} images have no annotation, so no mask); re-extract "
                  "gtFine_trainvaltest.zip", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    """Write the masks; exit status 1 with a count when any file failed."""
    splits = args.splits or list(SPLITS)
    check_output_folder(args.out or args.data_root / GENERATED_DIR, "--out")  # before any work
    _report_unannotated(args.data_root, splits)
    results = generate(args.data_root, splits, args.out, args.workers, args.overwrite,
                       skip_absent_splits=args.splits is None)
    failed = [result for result in results if result.status == "failed"]
    for result in failed:
        print(f"error: {result.error}", file=sys.stderr)
    counts = {status: sum(result.status == status for result in results) for status in ("written", "skipped")}
    out = args.out or args.data_root / GENERATED_DIR
    print(f"{counts['written']} written, {counts['skipped']} skipped (up to date; --overwrite rewrites), "
          f"{len(failed)} failed -> {out}")
    return 1 if failed else 0


def run_compare(args: argparse.Namespace) -> int:
    """Print the agreement table; write per-image and per-class CSVs and a figure to ``args.out``."""
    from cityscapes.compare_gt import compare_split
    from cityscapes.visualize import plot_mask_agreement
    from segdata.pictures import save_figure

    out = check_output_folder(Path(args.out), "--out")  # before any work
    start = time.perf_counter()
    comparison = compare_split(args.data_root, args.split, args.generated)
    seconds = time.perf_counter() - start
    print(comparison.format_table())
    files = 2 * len(comparison.per_image)  # a generated and a provided mask per image
    print(
        f"compared {len(comparison.per_image)} images ({files} masks) in {seconds:.1f} s: "
        f"{files / max(seconds, 1e-9):.1f} "
        "files/s"
    )
    name = f"generated_vs_provided_{args.split}"
    write_csv(out / f"{name}_images.csv", comparison.per_image, ["image", "pixels", "agreeing_pixels", "agreement"])
    write_csv(out / f"{name}_classes.csv", comparison.per_class(),
              ["label_id", "name", "provided_pixels", "generated_pixels", "iou", "recall"])
    save_figure(plot_mask_agreement(comparison), out / f"{name}.png")
    print(f"wrote {out / name}_images.csv, {name}_classes.csv and {name}.png")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return run_compare(args) if args.command == "compare" else run_generate(args)
    except (OSError, ValueError) as error:  # a write that fails leaves the masks written so far complete
        return report_error(error, writing=args.out, write_advice="free space (or fix permissions), then run again: "
                                                                  "masks already written are kept")


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
