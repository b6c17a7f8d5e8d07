"""The SGD of the recipe, built so that a step never waits on the host.

With ``--amp`` (float16 + GradScaler) the plain SGD step makes the host read
the scaler's inf check (``GradScaler.step`` calls ``.item()``), once per step.
torch's fused SGD takes that check on the device instead, on CUDA and on the
CPU. It has one flaw, met by the fake-CUDA tier (and reported for torch's
CUDA kernel elsewhere): its first step makes the momentum buffers with
``empty_like`` and, when the scaler finds an inf there (routine in the first
fp16 steps), leaves them unwritten, so the next step adds garbage to the
weights. Starting the buffers at zero fixes that: the first real step then
sets them to the gradient, as the plain SGD does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["build_sgd"]


def build_sgd(parameters: Iterable, lr: float, momentum: float, weight_decay: float,
              device: torch.device | str) -> torch.optim.SGD:
    """SGD over ``parameters`` (tensors or parameter groups); fused, with zeroed momentum buffers, on CUDA."""
    fused = torch.device(device).type == "cuda"
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if fused and momentum:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
    return optimizer
