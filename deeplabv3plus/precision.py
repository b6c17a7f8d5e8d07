"""Mixed precision, decided once: the autocast dtype (or none) and whether a GradScaler runs.

Every script and loop asks :func:`resolve_precision`; nothing else looks at
``--amp`` / ``--amp-dtype``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["AMP_DTYPES", "Precision", "autocast", "cpu_supports_bfloat16", "resolve_precision"]

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype, or None for float32; ``use_scaler``: a GradScaler is needed."""

    dtype: torch.dtype | None = None
    use_scaler: bool = False

    @property
    def name(self) -> str | None:
        """``"float16"`` / ``"bfloat16"``, or None for float32 (what args.json records)."""
        return None if self.dtype is None else {dtype: name for name, dtype in AMP_DTYPES.items()}[self.dtype]


def resolve_precision(amp: bool, amp_dtype: str | None, device: torch.device | str) -> Precision:
    """The precision of ``--amp [--amp-dtype]`` on ``device``.

    Without ``amp`` it is float32 whatever ``amp_dtype`` says. The dtype defaults
    to float16 on CUDA and bfloat16 on the CPU; only float16 on CUDA needs the
    GradScaler (bfloat16 has float32's range).
    """
    if not amp:
        return Precision()
    device_type = torch.device(device).type
    dtype = AMP_DTYPES[amp_dtype or ("float16" if device_type == "cuda" else "bfloat16")]
    return Precision(dtype, use_scaler=dtype == torch.float16 and device_type == "cuda")


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
