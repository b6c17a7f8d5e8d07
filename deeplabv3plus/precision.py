"""Mixed precision, decided once: the autocast dtype (or none) and whether a GradScaler runs.

Every script asks :func:`precision_from_flags` once and passes the result down;
nothing else looks at ``--amp`` / ``--amp-dtype``. On a CUDA GPU that runs
bfloat16 natively (Ampere or newer) the defaults are the fast ones: bfloat16
autocast and channels_last (:func:`native_bfloat16`); elsewhere float32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from segdata.flags import FlagError

__all__ = ["AMP_DTYPES", "Precision", "autocast", "cpu_supports_bfloat16", "dtype_name", "native_bfloat16",
           "precision_from_flags", "resolve_precision"]

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype, or None for float32; ``use_scaler``: a GradScaler is needed."""

    dtype: torch.dtype | None = None
    use_scaler: bool = False

    @property
    def name(self) -> str | None:
        """``"float16"`` / ``"bfloat16"``, or None for float32 (what args.json records)."""
        return dtype_name(self.dtype)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """The flag value of an autocast dtype (``"float16"`` / ``"bfloat16"``), None for float32."""
    return None if dtype is None else {value: name for name, value in AMP_DTYPES.items()}[dtype]


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA GPU that runs bfloat16 natively (compute capability 8.0 or newer): there bfloat16
    autocast and channels_last are the defaults of training, evaluation and prediction."""
    if torch.device(device).type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no including_emulation (and no emulation either)
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(amp: bool | None, amp_dtype: str | None, device: torch.device | str) -> Precision:
    """The precision of ``--amp`` / ``--no-amp`` / neither (``amp`` None) and ``--amp-dtype`` on ``device``.

    Neither: autocast when ``amp_dtype`` is given or the device is :func:`native_bfloat16`, float32 otherwise.
    ``--no-amp`` is float32 whatever ``amp_dtype`` says. The dtype defaults to bfloat16 on the CPU and on a GPU that
    runs it natively, float16 on older GPUs; only float16 on CUDA needs the GradScaler (bfloat16 has float32's range).
    """
    if amp is None:
        amp = amp_dtype is not None or native_bfloat16(device)
    if not amp:
        return Precision()
    device_type = torch.device(device).type
    default = "float16" if device_type == "cuda" and not native_bfloat16(device) else "bfloat16"
    dtype = AMP_DTYPES[amp_dtype or default]
    return Precision(dtype, use_scaler=dtype == torch.float16 and device_type == "cuda")


def precision_from_flags(amp: bool | None, amp_dtype: str | None, device: torch.device | str) -> Precision:
    """:func:`resolve_precision` for a command's flags, the one place they are checked: ``--amp-dtype`` with
    ``--no-amp`` is refused (FlagError: it would be ignored); float16 on the CPU is warned about (many times slower
    than float32 there)."""
    if amp_dtype is not None and amp is False:
        raise FlagError(f"argument --amp-dtype: {amp_dtype} takes effect only with autocast; drop --no-amp or the "
                        "flag")
    precision = resolve_precision(amp, amp_dtype, device)
    if precision.dtype == torch.float16 and torch.device(device).type == "cpu":
        logging.getLogger(__name__).warning(
            "warning: float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16")
    return precision


def cpu_supports_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 or AMX); elsewhere bf16 autocast is slower than
    fp32."""
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # private, so guarded
    try:
        return bool(is_supported and is_supported())
    except RuntimeError:
        return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision on ``device`` when ``dtype`` is given, else nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
