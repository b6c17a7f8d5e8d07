"""Agreement between generated labelIds masks and the ``gtFine/*_labelIds.png`` a data set ships.

The labelIds PNGs Cityscapes ships were not rendered by cityscapesscripts, so the
two never agree exactly: on real frames about 99.4-99.7% of pixels, the rest
along region boundaries. This module measures that; it does not force it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cityscapes.labels import LABELS
from cityscapes.paths import GENERATED_DIR, generated_mask_path, stem_of
from segdata.files import read_png

__all__ = ["MaskComparison", "compare_split"]

NUM_LABEL_IDS = max(label.id for label in LABELS) + 1
LABEL_NAMES = {label.id: label.name for label in LABELS if label.id >= 0}


@dataclass
class MaskComparison:
    """Pixel counts of provided (rows) against generated (columns) labelIds over a split."""

    split: str
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_LABEL_IDS, NUM_LABEL_IDS), np.int64))
    per_image: list[dict] = field(default_factory=list)

    def add(self, stem: str, provided: np.ndarray, generated: np.ndarray) -> None:
        """Count one image pair of (H, W) labelIds."""
        counts = np.bincount(provided.astype(np.int64).ravel() * NUM_LABEL_IDS + generated.ravel(),
                             minlength=NUM_LABEL_IDS**2).reshape(NUM_LABEL_IDS, NUM_LABEL_IDS)
        self.confusion += counts
        agreeing = int(np.trace(counts))
        self.per_image.append({"image": stem, "pixels": int(provided.size), "agreeing_pixels": agreeing,
                               "agreement": agreeing / provided.size})

    @property
    def pixel_agreement(self) -> float:
        """Fraction of all pixels with the same labelId in both masks."""
        return float(np.trace(self.confusion) / self.confusion.sum())

    def per_class(self) -> list[dict]:
        """One row per labelId present in either mask: pixel counts, IoU and recall of provided pixels."""
        rows = []
        for label_id in range(NUM_LABEL_IDS):
            provided = int(self.confusion[label_id].sum())
            generated = int(self.confusion[:, label_id].sum())
            if provided == 0 and generated == 0:
                continue
            both = int(self.confusion[label_id, label_id])
            rows.append({"label_id": label_id, "name": LABEL_NAMES[label_id], "provided_pixels": provided,
                         "generated_pixels": generated, "iou": both / (provided + generated - both),
                         "recall": both / provided if provided else float("nan")})
        return rows

    def format_table(self) -> str:
        """The per-class table and the overall agreement, as text."""
        lines = [f"{'id':>3}  {'label':<22}{'provided px':>13}{'generated px':>14}{'IoU':>9}{'recall':>9}"]
        for row in self.per_class():
            lines.append(f"{row['label_id']:>3}  {row['name']:<22}{row['provided_pixels']:>13}"
                         f"{row['generated_pixels']:>14}{row['iou']:>9.4f}{row['recall']:>9.4f}")
        worst = min(self.per_image, key=lambda row: row["agreement"])
        lines.append(f"{self.split}: {len(self.per_image)} images, pixel agreement {100 * self.pixel_agreement:.3f}% "
                     f"(lowest {100 * worst['agreement']:.3f}% on {worst['image']})")
        return "\n".join(lines)


def compare_split(data_root: Path, split: str, generated_root: Path | None = None) -> MaskComparison:
    """Compare every provided ``gtFine/{split}/*/*_gtFine_labelIds.png`` with its generated twin."""
    data_root = Path(data_root)
    generated_root = Path(generated_root) if generated_root is not None else data_root / GENERATED_DIR
    provided_files = sorted((data_root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    if not provided_files:
        raise FileNotFoundError(f"{data_root / 'gtFine' / split}: no provided *_gtFine_labelIds.png to compare with")
    comparison = MaskComparison(split)
    for provided_path in provided_files:
        stem = stem_of(provided_path)
        generated_path = generated_mask_path(generated_root, split, stem, "labelIds")
        if not generated_path.exists():
            raise FileNotFoundError(f"{generated_path}: missing; run python -m cityscapes.generate_gt first")
        provided, generated = read_png(provided_path), read_png(generated_path)
        if provided.shape != generated.shape:
            raise ValueError(f"{generated_path}: size {generated.shape} differs from {provided_path} {provided.shape}")
        comparison.add(stem, provided, generated)
    return comparison
