"""The synthetic street scenes: polygons of every class, annotated as Cityscapes annotates them, and their camera
image and masks (what ``cityscapes.synthetic`` writes in the Cityscapes layout and ``cityscapes.synthetic_layouts``
in the others)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from cityscapes.labels import LABEL_ID_TO_COLOR, resolve_label

__all__ = ["PHOTO_GRAIN", "make_scene", "render_image", "render_provided_masks"]

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
