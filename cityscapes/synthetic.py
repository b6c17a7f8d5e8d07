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
import math
from pathlib import Path

import cv2
import numpy as np

from cityscapes.labels import LABEL_ID_TO_COLOR, resolve_label
from cityscapes.paths import SPLITS, frame_stem, image_path, polygons_path, provided_mask_path
from segdata.files import OutputError, check_output_folder, write_json, write_png
from segdata.flags import Parser, ignoring_interrupts, positive_int, report_error

__all__ = ["CITIES", "MARKER_FILE", "make_scene", "render_image", "render_provided_masks", "write_dataset"]

CITIES = {
    "train": ("aachen", "bochum", "bremen"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn"),
}
MARKER_FILE = "SYNTHETIC_CITYSCAPES"
"""Written at the data set root; the writer only ever writes into folders that hold it (or are empty)."""

ANNOTATED_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet
TEST_SPLIT_LABELS = ("ego vehicle", "rectification border", "out of roi")
LICENSE_PLATE_APPEARANCE = (235, 235, 225)
PHOTO_GRAIN, PHOTO_GRAIN_BLUR, PHOTO_NOISE = 12.0, 2.5, 1.0
"""--photo-like: correlated grain (std before the blur, blur sigma in pixels) and sensor noise (std), in grey levels:
chosen so that a 1024x2048 frame is about as large and as slow to decode as a real Cityscapes frame."""

# Texture of each class in the camera image: (stripe period in px at width 512, angle in degrees).
TEXTURES = {
    "sky": (0, 0), "building": (9, 90), "vegetation": (5, 45), "terrain": (7, 0), "road": (0, 0),
    "sidewalk": (6, 0), "wall": (8, 0), "fence": (4, 90), "pole": (0, 0), "traffic sign": (0, 0),
    "traffic light": (0, 0), "car": (12, 0), "truck": (14, 90), "bus": (10, 0), "person": (5, 0),
    "rider": (5, 90), "bicycle": (3, 45), "motorcycle": (3, 135), "parking": (5, 90),
    "ego vehicle": (0, 0), "rectification border": (0, 0), "out of roi": (0, 0), "dynamic": (6, 60),
}


def _polygon(points: list[tuple[float, float]], width: int, height: int) -> list[list[int]]:
    """Normalised (u, v) points -> integer pixel coordinates, as Cityscapes stores them."""
    return [[int(round(u * width)), int(round(v * height))] for u, v in points]


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.8, 1.1, n)
    return [(cu + ru * r * math.cos(a), cv + rv * r * math.sin(a)) for a, r in zip(angles, radii)]


def _box(u0: float, v0: float, u1: float, v1: float) -> list[tuple[float, float]]:
    return [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]


def _car(u: float, v: float, w: float, h: float) -> list[tuple[float, float]]:
    """A car silhouette: body with a cabin on top, bottom edge at v."""
    return [(u, v), (u + w, v), (u + w, v - 0.55 * h), (u + 0.8 * w, v - 0.6 * h), (u + 0.7 * w, v - h),
            (u + 0.3 * w, v - h), (u + 0.2 * w, v - 0.6 * h), (u, v - 0.55 * h)]


def make_scene(rng: np.random.Generator, height: int, width: int) -> list[dict]:
    """The annotated objects of one frame, in drawing order, as Cityscapes JSON objects."""
    objects: list[tuple[str, list[tuple[float, float]], int]] = []

    def add(label: str, points: list[tuple[float, float]], deleted: int = 0) -> None:
        objects.append((label, points, deleted))

    horizon = rng.uniform(0.42, 0.52)
    add("sky", _box(-0.02, -0.02, 1.02, horizon + 0.02))
    skyline = [(-0.05, horizon + 0.08)]
    u = -0.05
    while u < 1.05:
        top = horizon - rng.uniform(0.08, 0.32)
        step = rng.uniform(0.08, 0.2)
        skyline += [(u, top), (u + step, top)]
        u += step
    skyline.append((1.05, horizon + 0.08))
    add("building", skyline)
    for _ in range(rng.integers(1, 4)):
        add(
            "vegetation",
            _ellipse(rng.uniform(0, 1), horizon - 0.05, rng.uniform(0.05, 0.12), rng.uniform(0.06, 0.12), 14, rng),
        )
    if rng.random() < 0.5:
        add("wall", _box(rng.uniform(0.55, 0.7), horizon - 0.06, 1.05, horizon + 0.06))
    add("terrain", [(-0.05, horizon + 0.05), (0.35, horizon + 0.02), (0.2, horizon + 0.12), (-0.05, horizon + 0.2)])
    vanishing = rng.uniform(0.4, 0.6)
    add("road", [(-0.3, 1.05), (1.3, 1.05), (vanishing + 0.06, horizon), (vanishing - 0.06, horizon)])
    add("sidewalk", [(-0.05, 0.75), (vanishing - 0.07, horizon), (vanishing - 0.1, horizon), (-0.05, horizon + 0.12)])
    add("sidewalk", [(1.05, 0.8), (vanishing + 0.07, horizon), (vanishing + 0.1, horizon), (1.05, horizon + 0.1)])
    if rng.random() < 0.5:
        add("fence", _box(0.7, horizon - 0.02, 1.05, horizon + 0.07))
    if rng.random() < 0.3:
        add("parking", [(0.75, 0.62), (1.05, 0.6), (1.05, 0.7), (0.8, 0.72)])

    for _ in range(rng.integers(1, 3)):  # poles with a sign or a traffic light on top
        pu = rng.uniform(0.05, 0.95)
        add("pole", _box(pu, horizon - 0.25, pu + 0.012, horizon + 0.15))
        head = "traffic sign" if rng.random() < 0.6 else "traffic light"
        add(head, _box(pu - 0.02, horizon - 0.3, pu + 0.03, horizon - 0.22))

    for index in range(rng.integers(1, 4)):  # cars, one of them sometimes a group
        cw, ch = rng.uniform(0.12, 0.25), rng.uniform(0.1, 0.18)
        cu, cv = rng.uniform(-0.1, 1.0 - cw / 2), rng.uniform(horizon + 0.12, 0.85)
        label = "cargroup" if index == 0 and rng.random() < 0.4 else "car"
        add(label, _car(cu, cv, cw, ch))
        add("license plate", _box(cu + 0.4 * cw, cv - 0.2 * ch, cu + 0.6 * cw, cv - 0.08 * ch))
    if rng.random() < 0.6:
        big = "truck" if rng.random() < 0.5 else "bus"
        bu = rng.uniform(0.5, 1.0)
        add(big, _box(bu, horizon - 0.15, bu + rng.uniform(0.15, 0.3), horizon + 0.18))
    for index in range(rng.integers(1, 4)):  # pedestrians
        pu, pv = rng.uniform(-0.02, 0.98), rng.uniform(horizon + 0.1, 0.8)
        label = "persongroup" if index == 0 and rng.random() < 0.3 else "person"
        add(label, [(pu, pv), (pu + 0.012, pv - 0.12), (pu + 0.005, pv - 0.2), (pu + 0.025, pv - 0.22),
                    (pu + 0.045, pv - 0.2), (pu + 0.038, pv - 0.12), (pu + 0.05, pv)])
    if rng.random() < 0.7:  # a cyclist: the bicycle, the rider over it
        ru, rv = rng.uniform(0.1, 0.85), rng.uniform(horizon + 0.15, 0.8)
        add("bicycle" if rng.random() < 0.7 else "motorcycle", _ellipse(ru + 0.04, rv - 0.04, 0.05, 0.04, 10, rng))
        add("rider", _box(ru + 0.025, rv - 0.2, ru + 0.055, rv - 0.05))
    add("car", _car(rng.uniform(0, 0.8), 0.8, 0.2, 0.15), deleted=1)  # annotators' deleted object
    if rng.random() < 0.3:
        du = rng.uniform(0, 0.9)
        add("dynamic", _box(du, 0.7, du + rng.uniform(0.05, 0.1), 0.75))

    ego_top = rng.uniform(0.86, 0.92)
    add(
        "ego vehicle",
        [(-0.05, 1.05), (-0.05, ego_top + 0.04), (0.3, ego_top), (0.7, ego_top), (1.05, ego_top + 0.04), (1.05, 1.05)],
    )
    add("rectification border", [(0, 0), (0.01, 0), (0.01, 1), (0, 1)])
    add("rectification border", [(0.99, 0), (1, 0), (1, 1), (0.99, 1)])
    add("out of roi", [(0, 0.97), (1, 0.97), (1, 1), (0, 1)])

    scene = []
    for label, points, deleted in objects:
        entry = {"label": label, "polygon": _polygon(points, width, height)}
        if deleted:
            entry["deleted"] = 1
        scene.append(entry)
    return scene


def _fill(canvas: np.ndarray, polygon: list[list[int]], value: int) -> None:
    cv2.fillPoly(canvas, [np.asarray(polygon, dtype=np.int32).reshape(-1, 1, 2)], value)


def render_provided_masks(objects: list[dict], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds, instanceIds) as shipped in gtFine, drawn with OpenCV's rasteriser.

    labelIds: (H, W) uint8; instanceIds: (H, W) int32, ``labelId * 1000 + k`` for
    single objects of classes with instances, the labelId elsewhere.
    """
    label_ids = np.zeros((height, width), np.uint8)
    instance_ids = np.zeros((height, width), np.int32)
    next_instance: dict[int, int] = {}
    for obj in objects:
        label = resolve_label(obj["label"])
        if obj.get("deleted") or label is None or label.id < 0:
            continue
        instance = label.id
        if label.hasInstances and label.name == obj["label"]:
            instance = label.id * 1000 + next_instance.setdefault(label.id, 0)
            next_instance[label.id] += 1
        _fill(label_ids, obj["polygon"], label.id)
        _fill(instance_ids, obj["polygon"], instance)
    return label_ids, instance_ids


def _texture(label_name: str, height: int, width: int) -> np.ndarray:
    period, angle = TEXTURES.get(label_name, (0, 0))
    if not period:
        return np.zeros((height, width), np.float32)
    period = max(2.0, period * width / 512)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = math.radians(angle)
    return 18.0 * np.sin(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period)


def render_image(objects: list[dict], height: int, width: int, rng: np.random.Generator,
                 photo_like: bool = False) -> np.ndarray:
    """The camera image of a scene: (H, W, 3) uint8 RGB.

    Every class gets its palette colour, its texture and noise; license plates are
    painted (they are part of the car in the masks); deleted objects are not.
    ``photo_like``: instead of strong pixel noise, the shading, spatially correlated
    grain and mild sensor noise of a photograph, so that a 1024x2048 frame is about
    as large and as slow to decode as a real Cityscapes one (see the README).
    """
    appearance = np.zeros((height, width), np.int32)  # index into `painted`, 0 = background
    painted: list[tuple[str, tuple[int, int, int]]] = [("unlabeled", (20, 20, 20))]
    for obj in objects:
        label = resolve_label(obj["label"])
        if obj.get("deleted") or label is None:
            continue
        colour = LICENSE_PLATE_APPEARANCE if label.id < 0 else tuple(int(c) for c in LABEL_ID_TO_COLOR[label.id])
        if label.name in ("ego vehicle", "rectification border", "out of roi"):
            colour = {"ego vehicle": (35, 30, 40), "rectification border": (0, 0, 0), "out of roi": (10, 10, 10)}[
                label.name
            ]
        painted.append((label.name, colour))
        _fill(appearance, obj["polygon"], len(painted) - 1)

    image = np.zeros((height, width, 3), np.float32)
    for index in np.unique(appearance):
        name, colour = painted[index]
        region = appearance == index
        image[region] = np.asarray(colour, np.float32) + _texture(name, height, width)[region, None]
    image *= rng.uniform(0.85, 1.15)  # frame-wide illumination
    if photo_like:
        image *= np.linspace(1.1, 0.85, height, dtype=np.float32)[:, None, None]  # sky brighter than the road
        grain = cv2.GaussianBlur(rng.normal(0.0, PHOTO_GRAIN, image.shape).astype(np.float32), (0, 0), PHOTO_GRAIN_BLUR)
        image += grain + rng.normal(0.0, PHOTO_NOISE, image.shape).astype(np.float32)
    else:
        image += rng.normal(0.0, 8.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


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
    from cityscapes.synthetic_layouts import write_folder_dataset, write_voc_dataset

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
