"""The training loss: pixel-wise cross-entropy over labelled pixels, plus the auxiliary head's when there is one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdata.classes import IGNORE_INDEX

__all__ = ["SegmentationLoss", "cross_entropy_over_labelled_pixels"]


def cross_entropy_over_labelled_pixels(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy of (N, C, H, W) logits over the pixels of (N, H, W) ``target`` that are not ignored.

    A batch without any labelled pixel gives 0 (and zero gradients), not the NaN of
    ``reduction="mean"``: the sum over labelled pixels is divided by max(1, their count).
    Computed in float32 whatever the autocast dtype of the logits.
    """
    labelled = (target != ignore_index).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / labelled.clamp_min(1)


class SegmentationLoss(nn.Module):
    """Cross-entropy of the main logits, plus ``aux_weight`` x that of the auxiliary logits.

    Takes what the model returns: a logits tensor, or in training with an
    auxiliary head ``{"out": logits, "aux": aux_logits}``.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, aux_weight: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.parts: dict[str, torch.Tensor] = {}
        """The last call's terms, detached, on the device (``main``, and ``aux`` unweighted): read when logged."""

    def forward(self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, dict):
            outputs = {"out": outputs}
        loss = main = cross_entropy_over_labelled_pixels(outputs["out"], target, self.ignore_index)
        self.parts = {"main": main.detach()}
        if "aux" in outputs and self.aux_weight:
            aux = cross_entropy_over_labelled_pixels(outputs["aux"], target, self.ignore_index)
            loss = loss + self.aux_weight * aux
            self.parts["aux"] = aux.detach()
        return loss
