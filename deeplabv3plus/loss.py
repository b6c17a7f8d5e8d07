"""The training loss: pixel-wise cross-entropy over labelled pixels (optionally weighted per class), plus the
auxiliary head's when there is one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdata.classes import IGNORE_INDEX

__all__ = ["LOSS_AVERAGES", "SegmentationLoss", "cross_entropy_over_labelled_pixels"]


LOSS_AVERAGES = ("labelled", "all")
"""How the pixels' cross-entropy is averaged: over the labelled pixels (PyTorch's ``mean``, mmsegmentation's
``avg_non_ignore=True``), or over all pixels of the batch, ignored ones counting zero (mmsegmentation's default)."""


def cross_entropy_over_labelled_pixels(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, weight: torch.Tensor | None = None,
    average: str = "labelled",
) -> torch.Tensor:
    """Mean cross-entropy of (N, C, H, W) logits over the pixels of (N, H, W) ``target`` that are not ignored, each
    pixel's term times its class's ``weight`` (C,) when given (divided by the pixels, not by the weights: as
    mmsegmentation's ``class_weight`` with ``avg_non_ignore``).

    A batch without any labelled pixel gives 0 (and zero gradients), not the NaN of
    ``reduction="mean"``: the sum over labelled pixels is divided by max(1, their count). With ``average="all"``
    it is divided by every pixel of the batch instead (see :data:`LOSS_AVERAGES`).
    Computed in float32 whatever the autocast dtype of the logits (float64 logits stay float64).
    """
    logits = logits if logits.dtype == torch.float64 else logits.float()
    weight = None if weight is None else weight.to(logits.dtype)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")
    if average == "all":
        return total / target.numel()
    return total / (target != ignore_index).sum().clamp_min(1)


class SegmentationLoss(nn.Module):
    """Cross-entropy of the main logits, plus ``aux_weight`` x that of the auxiliary logits.

    Takes what the model returns: a logits tensor, or in training with an
    auxiliary head ``{"out": logits, "aux": aux_logits}``.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, aux_weight: float = 0.0,
                 class_weights: Sequence[float] | None = None, average: str = "labelled") -> None:
        super().__init__()
        self.ignore_index, self.aux_weight, self.average = ignore_index, aux_weight, average
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.parts: dict[str, torch.Tensor] = {}
        """The last call's terms, detached, on the device (``main``, and ``aux`` unweighted): read when logged."""

    def forward(self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, dict):
            outputs = {"out": outputs}
        loss = main = self._cross_entropy(outputs["out"], target)
        self.parts = {"main": main.detach()}
        if "aux" in outputs and self.aux_weight:
            aux = self._cross_entropy(outputs["aux"], target)
            loss = loss + self.aux_weight * aux
            self.parts["aux"] = aux.detach()
        return loss

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_over_labelled_pixels(logits, target, self.ignore_index, self._weights_on(target.device),
                                                  self.average)

    def _weights_on(self, device: torch.device) -> torch.Tensor | None:
        """The class weights on the training device: copied there at the first step, then kept (no copy per step)."""
        if self.class_weights is not None and self.class_weights.device != device:
            self.class_weights = self.class_weights.to(device, non_blocking=True)
        return self.class_weights
