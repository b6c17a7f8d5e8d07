"""The optimizer's whole story: parameter groups (backbone / head, no weight decay on norms and biases), SGD built so
that a step never waits on the host, the poly LR schedule after a linear warm-up, and the AMP scaler.

With float16 + GradScaler the plain SGD step makes the host read the scaler's
inf check (``GradScaler.step`` calls ``.item()``), once per step. torch's fused
SGD takes that check on the device instead, on CUDA and on the CPU. It has one
flaw, met by the fake-CUDA tier (and reported for torch's CUDA kernel
elsewhere): its first step makes the momentum buffers with ``empty_like`` and,
when the scaler finds an inf there (routine in the first fp16 steps), leaves
them unwritten, so the next step adds garbage to the weights. Starting the
buffers at zero fixes that: the first real step then sets them to the gradient,
as the plain SGD does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "build_sgd", "clamp_warmup", "parameter_groups", "poly_lr", "poly_lr_factor"]

log = logging.getLogger(__name__)


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_multiplier: float = 1.0,
                     norm_bias_decay: bool = False) -> list[dict]:
    """Optimizer groups: backbone vs head, with no weight decay on norm weights and biases (unless
    ``norm_bias_decay``: decay on every parameter, as mmsegmentation's configs without ``paramwise_cfg``).

    Each group carries a ``name`` and its own ``lr`` (the backbone's scaled by
    ``backbone_lr_multiplier``); empty groups are left out.
    """
    groups: dict[str, dict] = {}
    for module_name, module in model.named_modules():
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            part = "backbone" if module_name.split(".")[0] == "backbone" else "head"
            is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
            decay = "no_decay" if is_norm or parameter_name == "bias" else "decay"
            name = f"{part}_{decay}"
            group = groups.setdefault(name, {
                "name": name, "params": [],
                "lr": lr * (backbone_lr_multiplier if part == "backbone" else 1.0),
                "weight_decay": weight_decay if decay == "decay" or norm_bias_decay else 0.0,
            })
            group["params"].append(parameter)
    return [groups[name] for name in ("backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay")
            if name in groups]


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


def poly_lr_factor(iteration: int, total_iterations: int, power: float = 0.9, warmup_iterations: int = 0,
                   warmup_ratio: float = 0.1) -> float:
    """LR multiplier: linear warm-up from ``warmup_ratio`` to 1, then ``(1 - it / total) ** power``."""
    poly = max(0.0, 1.0 - iteration / max(1, total_iterations)) ** power
    if iteration < warmup_iterations:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iterations)
    return poly


def poly_lr(base_lr: float, min_lr: float, iteration: int, total_iterations: int, power: float = 0.9,
            warmup_iterations: int = 0) -> float:
    """The LR at ``iteration`` of mmengine's ``PolyLR(eta_min=min_lr, end=total_iterations)``, in closed form:
    ``min_lr + (base_lr - min_lr) (1 - it / (total - 1)) ** power``, so that the last iteration trains at ``min_lr``.

    mmengine updates the LR in a chain, multiplying ``lr - eta_min`` by ``(1 - 1 / (T' - t + 1)) ** p`` at step t
    with ``T' = end - begin - 1``; the product over t steps telescopes to ``(1 - t / T') ** p``.
    """
    factor = poly_lr_factor(iteration, total_iterations - 1, power, warmup_iterations)
    return min_lr + (base_lr - min_lr) * factor


def clamp_warmup(warmup_iters: int, total_iterations: int) -> int:
    """The warm-up of a run, shortened to a tenth of the run (with a warning) where it would never reach the peak
    LR."""
    if warmup_iters < total_iterations:
        return warmup_iters
    clamped = total_iterations // 10
    log.warning("warning: --warmup-iters %d is not shorter than the run (%d iterations); using %d, a tenth of it",
                warmup_iters, total_iterations, clamped)
    return clamped


def build_optimizer(model: nn.Module, config, total_iterations: int) -> tuple:
    """(optimizer, LR scheduler, AMP scaler) of a run's ``config`` (a ``deeplabv3plus.config.RunConfig``): SGD over
    the parameter groups (fused on CUDA; decay on norms and biases too with ``norm_bias_decay``), the poly LR from
    each group's LR down to ``min_lr`` after the warm-up, stepped per iteration for ``total_iterations``, and a
    GradScaler that runs for float16 on CUDA alone."""
    groups = parameter_groups(model, config.lr, config.weight_decay, config.backbone_lr_multiplier,
                              config.norm_bias_decay)
    optimizer = build_sgd(groups, config.lr, config.momentum, config.weight_decay, config.device)

    def factor(base: float):
        if not config.min_lr or not base:  # the plain poly schedule (multiplied by each group's LR)
            return lambda iteration: poly_lr_factor(iteration, total_iterations, config.power, config.warmup_iters)
        return lambda iteration: poly_lr(base, config.min_lr, iteration, total_iterations, config.power,
                                         config.warmup_iters) / base

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(group["lr"]) for group in optimizer.param_groups])
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision.use_scaler)
    return optimizer, scheduler, scaler
