"""Fake CUDA: run the CUDA code path on a CPU-only machine, with real values.

A :class:`FakeCudaTensor` wraps a real CPU tensor. Its C++ device stays the CPU,
so autograd, autocast and every kernel run as usual, while Python sees
``cuda:0`` (``.device``, ``.is_cuda``). A :class:`torch.overrides.TorchFunctionMode`
maps ``device="cuda"`` (factories, ``.to``, ``.cuda``, ``Module.to``) onto it.
What the harness adds is what a CPU run cannot show:

- CPU/CUDA mixing raises CUDA's own message. As on CUDA, a 0-dim CPU tensor may
  only be an *input* of an element-wise op: as the output of an in-place op (a CPU
  accumulator of device values), or in ``stack``/``cat``, it is an error, and in
  ``where`` it is copied to the device with a blocking copy (a sync). CPU indices
  of a device tensor are copied to it the same way; device indices of a CPU
  tensor are an error;
- ops CUDA has no kernel for at a dtype (integer matmul, integer pooling and
  convolution, uint8 bilinear/bicubic resize, half histc) raise
  ``"mm_cuda" not implemented for 'Long'``-style errors;
- ``.numpy()`` of a CUDA tensor raises; reading a ``non_blocking`` device-to-host
  copy before a synchronisation raises;
- every host-device synchronisation (``item``/``bool``, ``tolist``, ``nonzero``,
  boolean-mask indexing, ``bincount``, ``unique``, device-to-host copies,
  blocking or pageable host-to-device copies of any size, 0-dim included,
  ``torch.tensor(..., device=cuda)``, CPU scalars and indices copied in by an op)
  is recorded with the project line that caused it.

What it cannot show: numerics of CUDA kernels, cuDNN, TF32, fp16 overflow, OOM,
streams, NCCL/DDP/SyncBN and ``torch.compile`` (``make test-gpu`` covers those).

Use :func:`fake_cuda` as a context manager (the ``fake_cuda`` fixture in
conftest does); it returns the :class:`FakeCuda` harness whose ``syncs`` list
the recorded synchronisations.
"""

from __future__ import annotations

import contextlib
import math
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["SYNC_DEBUG_PROTOTYPE_WARNING", "SYNC_MESSAGE", "FakeCuda", "FakeCudaTensor", "Sync", "fake_cuda"]

REPO = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda", 0)
_HARNESS: list[FakeCuda] = []  # the active harness (a stack of one); the tensors below report to it

SYNC_DEBUG_PROTOTYPE_WARNING = ("Synchronization debug mode is a prototype feature and does not yet detect all "
                                "synchronizing operations")
"""What torch.cuda.set_sync_debug_mode warns when it is turned on (torch/csrc/cuda/Module.cpp)."""
SYNC_MESSAGE = "called a synchronizing CUDA operation"
"""The start of what sync debug mode warns or raises at a synchronizing call (c10/cuda/CUDAFunctions.cpp)."""

_SCALAR_TYPE_NAMES = {
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
    torch.bool: "Bool", torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double",
}
_INTEGERS = {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool}
# aten op -> (the CUDA kernel's name in its error message, dtypes CUDA has no kernel for), after PyTorch's OpInfo
# dtypesIfCUDA
_NO_CUDA_KERNEL = {
    "mm": ("mm_cuda", _INTEGERS), "addmm": ("addmm_cuda", _INTEGERS), "bmm": ("bmm_cuda", _INTEGERS),
    "baddbmm": ("baddbmm_cuda", _INTEGERS), "mv": ("addmv_impl_cuda", _INTEGERS),
    "addmv": ("addmv_impl_cuda", _INTEGERS), "dot": ("dot", _INTEGERS), "vdot": ("vdot", _INTEGERS),
    "max_pool2d_with_indices": ("max_pool2d_with_indices_out_cuda_frame", _INTEGERS),
    "avg_pool2d": ("avg_pool2d_out_cuda_frame", _INTEGERS),
    "convolution": ("slow_conv2d_cuda", {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}),
    "upsample_bilinear2d": ("upsample_bilinear2d_out_frame", {torch.uint8}),
    "_upsample_bilinear2d_aa": ("upsample_bilinear2d_out_frame", {torch.uint8}),
    "upsample_bicubic2d": ("upsample_bicubic2d_out_frame", {torch.uint8}),
    "histc": ("histogram_cuda", {torch.float16, torch.bfloat16}),
}
# aten ops whose result size or value the host must know: they wait for the device
_SYNCING_OPS = {
    "_local_scalar_dense": "item()", "is_nonzero": "bool()", "equal": "equal()", "nonzero": "nonzero()",
    "masked_select": "masked_select()", "bincount": "bincount()", "_unique": "unique()", "_unique2": "unique()",
    "unique_dim": "unique()", "unique_consecutive": "unique()", "repeat_interleave": "repeat_interleave()",
}
# ops that may take CPU tensors beside CUDA ones (copies between devices); indexing has rules of its own
_MIXING_ALLOWED = {"copy_", "_to_copy", "lift_fresh", "_local_scalar_dense"}
_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}
# ops that refuse a CPU tensor of any size beside CUDA ones (CUDA: "Expected all tensors to be on the same device")
_NO_CPU_SCALARS = {"stack", "cat", "_cat", "hstack", "vstack"}
# ops that copy a 0-dim CPU operand to the device with a blocking copy (ATen's where_self_out: ``.to(device)``)
_COPIES_CPU_SCALARS = {"where"}


@dataclass(frozen=True)
class Sync:
    """One host-device synchronisation: what caused it and the project line (file:line) that asked for it."""

    kind: str
    where: str


def _project_line() -> str:
    """The innermost stack frame in this repository's code outside the harness, as ``path:line``."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path.is_relative_to(REPO) and path.name != Path(__file__).name and ".venv" not in path.parts:
            return f"{path.relative_to(REPO)}:{frame.lineno}"
    return "?"


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that says it is on ``cuda:0``; see the module docstring."""

    elem: torch.Tensor
    __slots__ = ["elem"]

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad: bool = False) -> FakeCudaTensor:
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=elem.device, requires_grad=requires_grad)
        wrapper.elem = elem.detach() if requires_grad else elem
        return wrapper

    def __repr__(self) -> str:
        return f"FakeCudaTensor({self.elem}, device='cuda:0')"

    def __reduce_ex__(self, protocol: int):
        # torch.save of a CUDA tensor records its data; ours is loaded with map_location="cpu" anyway
        return self.elem.detach().__reduce_ex__(protocol)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func == torch.Tensor.device.__get__:
            return CUDA
        if func == torch.Tensor.is_cuda.__get__:
            return True
        if func == torch.Tensor.is_cpu.__get__:
            return False
        if name == "get_device":
            return 0
        if name in ("numpy", "__array__"):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        if name == "tolist":
            _record("tolist()")
            return args[0].elem.tolist()
        if name == "is_pinned":
            return False
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = func.overloadpacket.__name__
        flat, _ = tree_flatten((args, kwargs))
        _check_kernel_exists(op, flat)
        if op in _INDEXING:
            _check_indexing(args)
        elif op not in _MIXING_ALLOWED:
            _check_same_device(func, op, args, kwargs)
        if op in _SYNCING_OPS:
            _record(_SYNCING_OPS[op])
        elif op == "index" and any(isinstance(index, torch.Tensor) and index.dtype == torch.bool
                                   for index in (args[1] if len(args) > 1 else [])):
            _record("boolean-mask indexing")
        elif op in ("index_put", "index_put_", "_index_put_impl_") and any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in args[1]):
            _record("boolean-mask assignment")
        if op == "copy_":
            return _copy(args, kwargs)
        # the C++ device of every tensor is the CPU, so a device here (autograd's _to_copy backward) means "the same
        # one": copies between devices are made in _CudaOntoFake, which sees the device the program asked for
        by_elem = {id(arg.elem): arg for arg in flat if isinstance(arg, FakeCudaTensor)}
        result = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        return tree_map(lambda value: by_elem[id(value)] if id(value) in by_elem else _wrap(value), result)


_SUBCLASSES: dict[type, type] = {}


def _patched_as_subclass(original):
    """``tensor.as_subclass(target)`` (torchvision's ``tv_tensors.Image(tensor)``) of a fake tensor: one that is also
    a ``target`` and stays on the fake device (a plain FakeCudaTensor for torch.Tensor)."""

    def as_subclass(tensor: torch.Tensor, target: type) -> torch.Tensor:
        return _as_subclass(tensor, target) if isinstance(tensor, FakeCudaTensor) else original(tensor, target)

    return as_subclass


def _as_subclass(tensor: FakeCudaTensor, target: type) -> FakeCudaTensor:
    if target is torch.Tensor or issubclass(FakeCudaTensor, target):
        return FakeCudaTensor(tensor.elem)
    if target not in _SUBCLASSES:
        _SUBCLASSES[target] = type(f"FakeCuda{target.__name__}", (FakeCudaTensor, target), {})
    return _SUBCLASSES[target](tensor.elem)


def _unwrap(value):
    return value.elem if isinstance(value, FakeCudaTensor) else value


def _wrap(value):
    return FakeCudaTensor(value) if isinstance(value, torch.Tensor) and not isinstance(value, FakeCudaTensor) else value


def _check_kernel_exists(op: str, flat: list) -> None:
    if op not in _NO_CUDA_KERNEL:
        return
    kernel, missing = _NO_CUDA_KERNEL[op]
    for value in flat:
        if isinstance(value, FakeCudaTensor) and value.dtype in missing:
            raise RuntimeError(f'"{kernel}" not implemented for \'{_SCALAR_TYPE_NAMES[value.dtype]}\'')


def _same_device_error(func) -> RuntimeError:
    return RuntimeError("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and "
                        f"cpu! (when checking argument for {func})")


def _written_arguments(func, args: tuple, kwargs: dict) -> list:
    """The values of the arguments ``func`` writes to (``self`` of an in-place op, ``out=``), after its schema."""
    written = []
    for position, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = args[position] if position < len(args) else kwargs.get(argument.name)
        written.extend(value if isinstance(value, (list, tuple)) else [value])
    return written


def _check_same_device(func, op: str, args: tuple, kwargs: dict) -> None:
    """CUDA's rules for CPU tensors beside CUDA ones (see the module docstring)."""
    tensors = [value for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)]
    if not any(isinstance(value, FakeCudaTensor) for value in tensors):
        return
    on_host = [value for value in tensors if not isinstance(value, FakeCudaTensor)]
    if not on_host:
        return
    if any(value.dim() > 0 for value in on_host) or op in _NO_CPU_SCALARS:
        raise _same_device_error(func)
    written = _written_arguments(func, args, kwargs)
    if any(isinstance(value, torch.Tensor) and not isinstance(value, FakeCudaTensor) for value in written):
        raise _same_device_error(func)  # a CPU tensor as the output of an op on device tensors
    if op in _COPIES_CPU_SCALARS:
        _record(f"blocking host-to-device copy (a CPU scalar tensor in {op})")


def _check_indexing(args: tuple) -> None:
    """``self[indices]`` / ``self[indices] = values``: CPU indices of a device tensor are copied to the device (a
    blocking copy), device indices of a CPU tensor are an error (as on CUDA)."""
    indexed, indices = args[0], [index for index in args[1] if isinstance(index, torch.Tensor)]
    if not isinstance(indexed, FakeCudaTensor):
        if any(isinstance(index, FakeCudaTensor) for index in indices):
            raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        return
    if any(not isinstance(index, FakeCudaTensor) for index in indices):
        _record("blocking host-to-device copy (CPU indices of a device tensor)")
    values = args[2] if len(args) > 2 else None
    if isinstance(values, torch.Tensor) and not isinstance(values, FakeCudaTensor) and values.dim() > 0:
        raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, cuda:0 "
                           "and cpu! (when checking argument for index_put_)")


def _copy(args, kwargs):
    """``dst.copy_(src)`` between devices: a host-to-device copy waits unless it is non_blocking from pinned memory."""
    destination, source = args[0], args[1]
    non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    if isinstance(destination, FakeCudaTensor) and not isinstance(source, FakeCudaTensor):
        if not (non_blocking and getattr(source, "_fake_pinned", False)):
            _record("blocking host-to-device copy")
    elif not isinstance(destination, FakeCudaTensor) and isinstance(source, FakeCudaTensor):
        _record("device-to-host copy")
    _unwrap(destination).copy_(_unwrap(source))
    return destination


def _record(kind: str) -> None:
    if _HARNESS:
        _HARNESS[-1].record(kind)


class _ToCuda(torch.autograd.Function):
    """A differentiable host-to-device copy (the gradient comes back to the host)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> FakeCudaTensor:
        return FakeCudaTensor(tensor.detach().clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _unwrap(grad)


class _ToHost(torch.autograd.Function):
    """A differentiable device-to-host copy."""

    @staticmethod
    def forward(ctx, tensor: FakeCudaTensor) -> torch.Tensor:
        return tensor.elem.detach().clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _wrap(grad)


class _PendingHostTensor(torch.Tensor):
    """The result of a ``non_blocking`` device-to-host copy: reading it before a synchronisation is an error."""

    def __reduce_ex__(self, protocol: int):
        # torch.save after the synchronisation: a plain CPU tensor, as on CUDA (loadable with weights_only=True)
        return self.as_subclass(torch.Tensor).__reduce_ex__(protocol)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tree_flatten((args, kwargs))[0]:
            if isinstance(value, _PendingHostTensor) and _HARNESS and _HARNESS[-1].syncs_done <= value._sync_epoch:
                raise RuntimeError(f"read of a non_blocking device-to-host copy (made at {value._made_at}) before "
                                   "torch.cuda.synchronize(): its values may not have arrived yet")
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        return tree_map(lambda value: value.as_subclass(torch.Tensor) if isinstance(value, _PendingHostTensor)
                        else value, result)


def _target_of_to(tensor: torch.Tensor, args: tuple, kwargs: dict):
    """(device or None, the remaining arguments, non_blocking) of ``tensor.to(...)``."""
    if args and isinstance(args[0], torch.Tensor):  # .to(other): other's device and dtype
        other = args[0]
        return other.device, {"dtype": other.dtype}, kwargs.get("non_blocking", False)
    parse = {key: value for key, value in kwargs.items() if key != "copy"}
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **parse)
    rest = {"dtype": dtype} if dtype is not None else {}
    if memory_format is not None:
        rest["memory_format"] = memory_format
    if kwargs.get("copy"):
        rest["copy"] = True
    return device, rest, non_blocking


_FACTORY_SYNCS = {"tensor": "torch.tensor(..., device=cuda)", "as_tensor": "torch.as_tensor(..., device=cuda)"}


class _CudaOntoFake(TorchFunctionMode):
    """Maps ``device="cuda"`` onto :class:`FakeCudaTensor` and moves tensors between the fake device and the host."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.to or func is torch.Tensor.cuda or func is torch.Tensor.cpu:
            tensor = args[0]
            if func is torch.Tensor.to:
                device, rest, non_blocking = _target_of_to(tensor, args[1:], kwargs)
            else:
                device = CUDA if func is torch.Tensor.cuda else torch.device("cpu")
                rest, non_blocking = {}, kwargs.get("non_blocking", False)
            return _move(tensor, None if device is None else torch.device(device), rest, non_blocking)
        device = kwargs.get("device")
        if device is not None and _is_cuda(device):
            kwargs = {**kwargs, "device": torch.device("cpu")}
            if name in _FACTORY_SYNCS:
                data = args[0] if args else kwargs.get("data")
                if not isinstance(data, FakeCudaTensor):
                    _record(_FACTORY_SYNCS[name])
            args = tree_map(_unwrap, args)
            result = func(*args, **kwargs)
            return tree_map(lambda value: _wrap_factory_output(value, kwargs), result)
        if name == "one_hot" and args and isinstance(args[0], FakeCudaTensor):
            # a C++ composite: it makes its output with the input's (CPU) options, outside the wrapper
            return _wrap(func(args[0].elem, *args[1:], **kwargs))
        if name == "where" and len(args) == 3 and any(isinstance(arg, FakeCudaTensor) for arg in args):
            # torch.where(condition, 3, tensor) makes the 3 on the tensor's device (ATen's scalar_tensor with its
            # options): no copy, unlike a CPU tensor passed in (a blocking copy, see _check_same_device)
            return func(*_python_scalars_on_the_device(args), **kwargs)
        return func(*args, **kwargs)


def _python_scalars_on_the_device(args: tuple) -> tuple:
    """``where``'s arguments with each Python number made a 0-dim tensor on the fake device, of the result's dtype."""
    numbers = [arg for arg in args[1:] if isinstance(arg, (bool, int, float))]
    if not numbers:
        return args
    values = [arg for arg in args[1:] if isinstance(arg, torch.Tensor)]
    dtype = torch.result_type(values[0], numbers[0]) if values else torch.tensor(numbers[0]).dtype
    return tuple(FakeCudaTensor(torch.scalar_tensor(arg, dtype=dtype)) if index and isinstance(arg, (bool, int, float))
                 else arg for index, arg in enumerate(args))


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda" if isinstance(device, (str, torch.device)) else False


def _wrap_factory_output(value, kwargs: dict):
    if not isinstance(value, torch.Tensor) or isinstance(value, FakeCudaTensor):
        return value
    requires_grad = bool(kwargs.get("requires_grad", False))
    return FakeCudaTensor(value, requires_grad=requires_grad) if requires_grad else FakeCudaTensor(value)


def _move(tensor: torch.Tensor, device: torch.device | None, rest: dict, non_blocking: bool) -> torch.Tensor:
    on_cuda = isinstance(tensor, FakeCudaTensor)
    if device is None or (device.type == "cuda") == on_cuda:  # same device: a dtype or layout change at most
        return torch.Tensor.to(tensor, **rest) if rest else tensor
    if device.type == "cuda":
        if not (non_blocking and getattr(tensor, "_fake_pinned", False)):
            _record("blocking host-to-device copy" if getattr(tensor, "_fake_pinned", False)
                    else "host-to-device copy from pageable memory")
        moved = _ToCuda.apply(tensor)
        return torch.Tensor.to(moved, **rest) if rest else moved
    host = _ToHost.apply(tensor)
    host = torch.Tensor.to(host, **rest) if rest else host
    if non_blocking:
        pending = host.as_subclass(_PendingHostTensor)
        pending._sync_epoch = _HARNESS[-1].syncs_done if _HARNESS else 0
        pending._made_at = _project_line()
        return pending
    _record("device-to-host copy")
    return host


def _grouping_on_fake_device(group):
    """torch._C._group_tensors_by_device_and_dtype keyed by the device Python sees (the optimizers' foreach and
    fused paths move scalars "to" each group's device)."""

    def grouped(tensorlistlist, with_indices=False):
        result = {}
        for (device, dtype), (lists, indices) in group(tensorlistlist, with_indices).items():
            first = next((tensor for tensors in lists for tensor in tensors if tensor is not None), None)
            result[(CUDA if isinstance(first, FakeCudaTensor) else device, dtype)] = (lists, indices)
        return result

    return grouped


def _fake_pin_memory(tensor: torch.Tensor, device=None) -> torch.Tensor:
    pinned = tensor.clone()
    pinned._fake_pinned = True
    return pinned


class _FakeEvent:
    """torch.cuda.Event: records wall time; ``elapsed_time`` in milliseconds."""

    def __init__(self, enable_timing: bool = False, **_: object) -> None:
        self.time = 0.0

    def record(self, stream=None) -> None:
        import time

        self.time = time.perf_counter()

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def elapsed_time(self, other: _FakeEvent) -> float:
        return (other.time - self.time) * 1000

    def query(self) -> bool:
        return True


class FakeCuda:
    """The active harness: the synchronisations recorded so far, and the ``count`` helper."""

    def __init__(self) -> None:
        self.syncs: list[Sync] = []
        self.syncs_done = 0  # synchronisations so far, torch.cuda.synchronize() included
        self.synchronize_calls = 0  # torch.cuda.synchronize() alone
        self.sync_debug_mode = 0  # torch.cuda.set_sync_debug_mode: 0 quiet, 1 warn, 2 error

    def record(self, kind: str) -> None:
        sync = Sync(kind, _project_line())
        self.syncs.append(sync)
        self.syncs_done += 1
        if self.sync_debug_mode == 2:
            raise RuntimeError(f"{SYNC_MESSAGE}: {kind} at {sync.where}")
        if self.sync_debug_mode == 1:
            warnings.warn(f"{SYNC_MESSAGE}: {kind} at {sync.where}", stacklevel=2)

    def set_sync_debug_mode(self, mode: int | str) -> None:
        """torch.cuda.set_sync_debug_mode: "default"/0, "warn"/1, "error"/2; like torch, a mode other than the default
        warns that the feature is a prototype (a warning whose text says "synchronizing", but is not a sync)."""
        self.sync_debug_mode = {"default": 0, "warn": 1, "error": 2}.get(mode, mode)
        if self.sync_debug_mode:
            warnings.warn(SYNC_DEBUG_PROTOTYPE_WARNING, UserWarning, stacklevel=2)

    def synchronize(self, device=None) -> None:
        self.syncs_done += 1
        self.synchronize_calls += 1

    @contextlib.contextmanager
    def count(self) -> Iterator[list[Sync]]:
        """The synchronisations made inside the block (the list fills as the block runs)."""
        found: list[Sync] = []
        start = len(self.syncs)
        try:
            yield found
        finally:
            found.extend(self.syncs[start:])


class _CudaAutocast(torch.amp.autocast_mode.autocast):
    """``autocast("cuda")`` acts on the CPU's autocast state, where the fake tensors' kernels run."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled=None) -> None:
        super().__init__("cpu" if device_type == "cuda" else device_type, dtype=dtype, enabled=enabled,
                         cache_enabled=cache_enabled)


@contextlib.contextmanager
def fake_cuda(monkeypatch) -> Iterator[FakeCuda]:
    """Make ``cuda`` a fake device for the duration; ``monkeypatch`` (pytest's) undoes the patches afterwards."""
    harness = FakeCuda()
    cuda = torch.cuda
    patches = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "synchronize": harness.synchronize,
        "is_bf16_supported": lambda *a, **k: True,
        "max_memory_allocated": lambda device=None: math.nan,  # unknown, not 0: nothing is measured here
        "memory_allocated": lambda device=None: math.nan,
        "reset_peak_memory_stats": lambda device=None: None,
        "get_device_name": lambda device=None: "fake CUDA (CPU tensors)",
        "get_device_capability": lambda d=None: (9, 0),
        "Event": _FakeEvent,
        "_lazy_init": lambda: None,
        "is_initialized": lambda: True,
        "manual_seed": lambda seed: None,
        "manual_seed_all": lambda seed: None,
        "set_sync_debug_mode": harness.set_sync_debug_mode,
        "get_sync_debug_mode": lambda: harness.sync_debug_mode,
    }
    for name, value in patches.items():
        monkeypatch.setattr(cuda, name, value)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: CUDA)
    monkeypatch.setattr(torch.accelerator, "set_device_index", lambda index: None)
    monkeypatch.setattr(torch.accelerator, "current_device_index", lambda: 0)
    monkeypatch.setattr(torch.Tensor, "pin_memory", _fake_pin_memory)
    monkeypatch.setattr(torch.Tensor, "as_subclass", _patched_as_subclass(torch.Tensor.as_subclass))
    monkeypatch.setattr(torch, "autocast", _CudaAutocast)
    monkeypatch.setattr(torch._C, "_group_tensors_by_device_and_dtype",
                        _grouping_on_fake_device(torch._C._group_tensors_by_device_and_dtype))
    monkeypatch.setattr(torch.amp, "autocast", _CudaAutocast)
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    _HARNESS.append(harness)
    try:
        with _CudaOntoFake():
            yield harness
    finally:
        _HARNESS.pop()
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
