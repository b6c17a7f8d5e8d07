"""Segmentation metrics from one confusion matrix accumulated over a whole split.

The matrix is accumulated on the device without a host sync (rows: ground
truth, columns: prediction), pixels labelled with the ignore index are left out,
and under DDP the per-process matrices are summed once at the end. Scores are
pure functions of the matrix: a class absent from both ground truth and
prediction has NaN scores and is left out of the means, as in the official
Cityscapes evaluation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from segdata.classes import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "category_confusion_matrix", "scores_from_confusion_matrix"]


class ConfusionMatrix:
    """(num_classes, num_classes) int64 pixel counts, ground truth x prediction."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        """Count (N, H, W) ground-truth trainIds against (N, H, W) predicted class indices.

        Never waits for the device: ignored pixels go to an extra bin that is
        dropped, pixels are counted with ``index_add_`` (``bincount`` must read
        the largest index on the host), and the label check is asynchronous on
        a GPU (a ValueError at once on the CPU).
        """
        n = self.num_classes
        valid = target != self.ignore_index
        in_range = ((target >= 0) & (target < n)) | ~valid
        message = f"target holds labels outside 0..{n - 1} other than the ignore index {self.ignore_index}"
        if target.device.type == "cpu":
            if not bool(in_range.all()):
                raise ValueError(message)
        else:
            torch._assert_async(in_range.all(), message)
        indices = torch.where(valid, target.to(torch.int64) * n + prediction.to(torch.int64), n * n).clamp_(0, n * n)
        counts = torch.zeros(n * n + 1, dtype=torch.int64, device=indices.device)
        counts.index_add_(0, indices.flatten(), torch.ones_like(indices).flatten())
        self.matrix += counts[: n * n].reshape(n, n).to(self.matrix.device)

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all processes (no-op outside DDP)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def scores(self) -> dict[str, object]:
        """See :func:`scores_from_confusion_matrix`."""
        return scores_from_confusion_matrix(self.matrix)


def scores_from_confusion_matrix(matrix: torch.Tensor) -> dict[str, object]:
    """IoU, Dice and accuracy per class and their means, and overall pixel accuracy.

    Returns plain Python values: ``iou``, ``dice``, ``class_accuracy`` (lists, NaN
    for classes without any pixel), ``mean_iou``, ``mean_dice``,
    ``mean_class_accuracy`` (NaN-skipping means), ``pixel_accuracy``.
    """
    matrix = torch.as_tensor(matrix).to(torch.float64)
    true_positive = matrix.diagonal()
    ground_truth = matrix.sum(dim=1)  # TP + FN
    predicted = matrix.sum(dim=0)  # TP + FP
    union = ground_truth + predicted - true_positive
    iou = true_positive / union  # 0/0 -> NaN for classes absent from both
    dice = 2 * true_positive / (ground_truth + predicted)
    class_accuracy = true_positive / ground_truth
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "class_accuracy": class_accuracy.tolist(),
        "mean_iou": iou.nanmean().item(),
        "mean_dice": dice.nanmean().item(),
        "mean_class_accuracy": class_accuracy.nanmean().item(),
        "pixel_accuracy": (true_positive.sum() / matrix.sum()).item(),
    }


def category_confusion_matrix(
    matrix: torch.Tensor, class_to_category: torch.Tensor, num_categories: int
) -> torch.Tensor:
    """Merge a class confusion matrix into categories: ``out[a, b] = sum(matrix[i, j])`` for i in a, j in b.

    Rows and then columns are summed with ``index_add``, which works for integer
    matrices on every device (CUDA has no integer matmul).
    """
    matrix = torch.as_tensor(matrix)
    class_to_category = torch.as_tensor(class_to_category, device=matrix.device).long()
    rows = matrix.new_zeros((num_categories, matrix.shape[1])).index_add_(0, class_to_category, matrix)
    return matrix.new_zeros((num_categories, num_categories)).index_add_(1, class_to_category, rows)
