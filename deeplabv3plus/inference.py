"""A trained model from its checkpoint, ready to predict."""

from __future__ import annotations

from pathlib import Path

import torch

from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint
from deeplabv3plus.model import DeepLabV3Plus, build_model

__all__ = ["load_trained_model"]


def load_trained_model(path: Path, device: torch.device | str = "cpu", backbone: str | None = None,
                       output_stride: int | None = None) -> DeepLabV3Plus:
    """Rebuild the model a checkpoint describes and load its weights, in eval mode.

    ``backbone`` / ``output_stride``, when given, must match the checkpoint:
    CheckpointError otherwise (never random weights in silence).
    """
    checkpoint = load_checkpoint(path)
    config = checkpoint["model_config"]
    for flag, key, wanted in (("--backbone", "backbone", backbone), ("--output-stride", "output_stride", output_stride)):
        if wanted is not None and wanted != config[key]:
            raise CheckpointError(f"{path}: was trained with {key}={config[key]} but {flag} is {wanted}; "
                                  "drop the flag or pass the matching checkpoint")
    model = build_model(config["backbone"], config["output_stride"], config["num_classes"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit {config} ({error})") from None
    return model.to(device).eval()
