"""Reading and atomically writing data-set files (PNG, JSON, CSV), output checks, locks, and staged outputs."""

from __future__ import annotations

import csv
import datetime
import fcntl
import functools
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

try:  # libspng: the fastest PNG decoder measured here (optional: OpenCV decodes without it)
    import pyspng
except ImportError:  # pragma: no cover - the fallback is tested by patching this name
    pyspng = None

__all__ = [
    "TEMPORARY_SUFFIX",
    "LockFile",
    "LockBusy",
    "OutputError",
    "StagedOutput",
    "check_output_file",
    "check_output_folder",
    "decode_png",
    "free_bytes",
    "is_up_to_date",
    "missing_folders",
    "new_file_mode",
    "remove_empty_folders",
    "read_png",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_csv",
    "write_json",
    "write_png",
]

TEMPORARY_SUFFIX = ".tmp"
"""Temporary files are ``.{name}.{random}.tmp`` beside their target until renamed."""


class OutputError(ValueError):
    """An output path that cannot be written, or that holds a file the tool did not make; names the flag and fix."""


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_folder(path: Path, flag: str) -> Path:
    """``path`` is a folder that exists and is writable, or one that can be made; nothing is created here (a run that
    fails before writing leaves no empty folder). OutputError names ``flag`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"argument {flag}: {path} is a file, not a folder; name a folder")
    ancestor = _existing_ancestor(path.absolute())
    if not ancestor.is_dir():
        raise OutputError(f"argument {flag}: {ancestor} is a file, so {path} cannot be made; name another folder")
    try:  # a real write (root passes every os.access check, but not a read-only or virtual file system)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise OutputError(f"argument {flag}: cannot write in {path} ({error.strerror}); choose a writable "
                          "folder") from None
    return path


def check_output_file(path: Path, flag: str, overwrite: bool = False) -> Path:
    """``path`` can be written as a file: its folder is writable (or can be made), it is not a folder, and an
    existing file is replaced only with ``overwrite``. OutputError names ``flag`` and ``--overwrite`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"argument {flag}: {path} is a folder; name a file")
    if path.exists() and not overwrite:
        raise OutputError(f"argument {flag}: {path} exists and is left as it is; name another file, or replace it "
                          "with --overwrite")
    check_output_folder(path.parent, flag)
    return path


def missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what making ``path`` would create."""
    path = Path(path).absolute()
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty: undo a start that wrote nothing."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


class LockBusy(Exception):
    """The lock is held by another process; ``holder`` says which (``pid N, started TIME``)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path}: held by {holder}")
        self.path, self.holder = path, holder


class LockFile:
    """An exclusive lock on ``path`` for as long as this object holds it (``flock``: a second holder is refused, in
    this process too). The system drops it when the process ends, however it ends; processes forked while it is
    held (loader workers) close their copy of the file at once, so a killed command's folder is free the moment it
    dies, not when its workers notice. The file records the holder's pid and start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: list[int | None] = [None]  # shared with the fork hook, which outlives this object
        os.register_at_fork(after_in_child=functools.partial(_close_in_child, self._handle))

    def take(self) -> None:
        """Lock (making the file); LockBusy naming the holder if another process has it; OutputError naming the
        file and the fix where it cannot be made (a folder in its place, a read-only disk)."""
        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except IsADirectoryError:
            raise OutputError(f"{self.path}: is a folder where this project keeps its lock file; remove it (it holds "
                              "nothing of a run) and run again") from None
        except OSError as error:
            raise OutputError(f"{self.path.parent}: cannot be written ({error.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(handle)
            raise LockBusy(self.path, holder) from None
        os.ftruncate(handle, 0)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.pwrite(handle, f"pid {os.getpid()}, started {started}".encode(), 0)
        self._handle[0] = handle

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self._handle[0] is not None

    def release(self) -> None:
        """Remove the file and drop the lock (closing the file drops it)."""
        if self._handle[0] is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._handle[0])
            self._handle[0] = None


def _close_in_child(handle: list[int | None]) -> None:
    """In a forked child: close the inherited copy of a locked file (the lock stays the parent's alone)."""
    if handle[0] is not None:
        os.close(handle[0])
        handle[0] = None


class StagedOutput:
    """A folder's new output written in a staging folder beside it (``.{name}.partial``) and committed, put in place,
    only when complete, so an interrupted or failed run leaves the previous output as it was. One writer at a time:
    :meth:`stage` locks ``.{name}.lock`` beside it, and a second command writing the same output is refused until the
    first ends."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.staging = self.final.with_name(f".{self.final.name}.partial")
        self.made = missing_folders(self.staging.parent)  # removed again if nothing is committed
        self.lock = LockFile(self.final.with_name(f".{self.final.name}.lock"))

    def stage(self) -> Path:
        """The empty staging folder to write into (a killed run's leftovers removed); OutputError while another
        command is writing the same output."""
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.take()
        except LockBusy as busy:
            remove_empty_folders(self.made)
            raise OutputError(f"{self.final}: another command is writing this output right now ({busy.holder}); "
                              "wait for it to end, or write elsewhere with --out DIR") from None
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def commit(self) -> None:
        """Replace the previous output with the complete new one (two renames; the old folder is deleted last)."""
        previous = self.final.with_name(f".{self.final.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if self.final.exists():
            self.final.rename(previous)
        self.staging.rename(self.final)
        shutil.rmtree(previous, ignore_errors=True)
        self.lock.release()

    def discard(self) -> str:
        """Drop what was staged (and the folders made for it); what the user still has, in words."""
        if self.lock.is_locked:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.lock.release()
        remove_empty_folders(self.made)
        return f"{self.final} keeps its previous output" if self.final.exists() else "nothing was written"


def free_bytes(path: Path) -> int:
    """Free disk space (bytes) where ``path`` is or would be made."""
    stats = os.statvfs(_existing_ancestor(Path(path).absolute()))
    return stats.f_bavail * stats.f_frsize


@functools.lru_cache(maxsize=1)
def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 less the process's umask (read from
    /proc/self/status where it can be, without changing it; other threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename (:func:`write_atomic`)."""
    write_atomic(path, lambda stream: stream.write(payload))


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(stream)`` into a temporary file beside ``path``, then rename it to ``path``.

    A reader (or an interrupted run) sees either the old file or the complete new
    one, never a half-written file. An OSError (a full disk) names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            os.fchmod(stream.fileno(), new_file_mode())  # mkstemp makes 0600; others may read what open() would let
        os.replace(temporary, path)
    except OSError as error:  # a full disk or a permission: name the file the caller wanted, not the temporary one
        Path(temporary).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def encode_png(array: np.ndarray, photograph: bool = False) -> bytes:
    """PNG bytes of an (H, W) grey or (H, W, 3|4) RGB(A) uint8/uint16 array.

    zlib's fastest level with the run-length strategy (OpenCV's default): label
    masks are flat regions, so this is several times faster than Pillow's level 6
    for files of similar size. Single-channel masks use the 'up' filter, which
    halves their size at no cost. ``photograph``: zlib level 6 with libpng's
    adaptive filters instead, as camera images are usually written (smaller, and
    as slow to decode as real Cityscapes frames).
    """
    if photograph:
        ok, buffer = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        return buffer.tobytes()
    params = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if array.ndim == 3:
        conversion = cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        array = cv2.cvtColor(array, conversion)
    else:
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buffer = cv2.imencode(".png", array, params)
    if not ok:
        raise ValueError(f"could not encode an array of shape {array.shape} and dtype {array.dtype} as PNG")
    return buffer.tobytes()


def write_png(path: Path, array: np.ndarray, photograph: bool = False) -> None:
    """Write an (H, W) or (H, W, 3|4) RGB(A) array as a PNG, atomically (see :func:`encode_png`)."""
    write_bytes_atomic(path, encode_png(array, photograph))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPNG_CHANNELS = {0: 2, 2: 3, 3: 3, 6: 4}  # colour type -> what libspng returns (2: a 2-D grey array)
"""The PNG kinds pyspng decodes as OpenCV does (tested pixel for pixel): 8-bit or less grey, RGB, palette
(expanded to RGB) and RGBA, not interlaced. 16-bit and grey+alpha files it returns in other shapes: OpenCV reads
those, and interlaced ones."""


def spng_can_decode(data: bytes) -> bool:
    """Whether the PNG header says a kind pyspng decodes exactly as OpenCV (see _SPNG_CHANNELS)."""
    if pyspng is None or len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    return bit_depth <= 8 and colour_type in _SPNG_CHANNELS and interlace == 0 and b"tRNS" not in data[33:4096]


def decode_png(data: bytes, path: Path | str = "PNG") -> np.ndarray:
    """PNG bytes -> (H, W) or (H, W, 3|4) RGB(A) uint8/uint16 array, the pixels OpenCV decodes.

    libspng (pyspng) where it applies, 1.5-1.6x faster than OpenCV's libpng on photographs (see the README's
    decoder table); OpenCV otherwise, or where pyspng is not installed. ValueError naming ``path`` for a file
    that is not a complete PNG.
    """
    if spng_can_decode(data):
        try:
            array = pyspng.load(data)
        except (RuntimeError, ValueError):  # a damaged file: OpenCV's verdict below names it
            array = None
        if array is not None and (array.ndim == 2 or array.shape[2] == _SPNG_CHANNELS[data[25]]):
            return array
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: cannot be decoded (truncated, empty or not a PNG); re-extract or regenerate it "
                         "(the data check finds every such file: python -m cityscapes.check, or segdata.check)")
    if array.ndim == 3:
        conversion = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        array = cv2.cvtColor(array, conversion)
    return array


def read_png(path: Path) -> np.ndarray:
    """Read a PNG as (H, W) or (H, W, 3|4) RGB(A) array (see :func:`decode_png`); a clear error if it cannot be."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{path}: no such file") from None
    return decode_png(data, path)


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=4) + "\n").encode())


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], fieldnames: list[str]) -> None:
    """Write dict rows as a CSV with a header, atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, text.getvalue().encode())


def is_up_to_date(output: Path, source: Path) -> bool:
    """Whether ``output`` exists, is not empty, and is not older than the ``source`` it was made from."""
    try:
        stat = Path(output).stat()
    except FileNotFoundError:
        return False
    source = Path(source)
    return stat.st_size > 0 and (not source.exists() or stat.st_mtime >= source.stat().st_mtime)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.{name}.*.tmp``); the paths removed."""
    stale = sorted(Path(folder).glob(f".*{TEMPORARY_SUFFIX}")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def png_is_complete(path: Path) -> bool:
    """Whether a PNG file ends with its IEND chunk (a truncated or interrupted file does not); reads 12 bytes."""
    try:
        with open(path, "rb") as stream:
            stream.seek(-12, os.SEEK_END)
            return stream.read(12) == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    except OSError:
        return False
