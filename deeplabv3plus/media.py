"""Images, folders and videos in; colour masks, overlays, id PNGs and MP4s out (for predict_dlv3p.py).

Inputs are found the way a user names them: files, folders (recursive, sorted)
and glob patterns; a file whose extension is a video format is read frame by
frame with OpenCV. Every output is written atomically.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segdata.files import check_output_file, free_bytes, new_file_mode
from segdata.flags import Parser, non_negative_int, positive_float, report_error

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "InputFile",
    "VideoWriter",
    "find_inputs",
    "images_to_video",
    "read_image",
    "read_video",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class InputFile:
    """A file to predict and the name its outputs mirror (its path below the folder it was found in)."""

    path: Path
    relative: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def find_inputs(arguments: Sequence[str]) -> tuple[list[InputFile], list[str]]:
    """Files to predict from files, folders (recursive) and glob patterns, sorted and without repeats;
    and the arguments that matched nothing."""
    found: dict[Path, InputFile] = {}
    unmatched = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
            )
            entries = [InputFile(p, p.relative_to(path)) for p in files]
        elif path.is_file():
            entries = [InputFile(path, Path(path.name))]
        else:
            entries = [InputFile(Path(p), Path(Path(p).name)) for p in sorted(glob.glob(argument, recursive=True))
                       if Path(p).is_file()]
        if not entries:
            unmatched.append(argument)
        for entry in entries:
            found.setdefault(entry.path.resolve(), entry)
    return list(found.values()), unmatched


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any image OpenCV reads (grey and RGBA become RGB); ValueError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey -> 3 channels, alpha dropped
    if image is None:
        raise ValueError(f"{path}: cannot be read as an image (missing, damaged or not an image format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_video(path: Path) -> tuple[Iterator[np.ndarray], float, int]:
    """(frames as (H, W, 3) uint8 RGB, frames per second, frame count as the container states it)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot be opened as a video (damaged, or a codec OpenCV lacks)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    first_ok, first = capture.read()
    if not first_ok:
        capture.release()
        raise ValueError(f"{path}: holds no readable frame")

    def frames() -> Iterator[np.ndarray]:
        try:
            frame, ok = first, True
            while ok:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = capture.read()
        finally:
            capture.release()

    return frames(), fps, count


class VideoWriter:
    """An MP4 written to a temporary file beside ``path`` and renamed when closed and checked; removed if not.

    OpenCV's writer reports no write error (a full disk leaves a truncated file
    and says nothing), so :meth:`close` reads the file back: it must open as a
    video holding every frame written, or OSError names the file and nothing is
    put in place.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp.mp4")
        os.close(handle)
        self.temporary = Path(temporary)
        self.frames = 0
        width, height = size
        self.writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            self.temporary.unlink(missing_ok=True)
            raise OSError(errno.EIO, "OpenCV cannot write MP4 video here", str(self.path))

    def write(self, frame: np.ndarray) -> None:
        """Append an (H, W, 3) uint8 RGB frame."""
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        """Finish the file, check it holds every frame, and put it in place."""
        self.writer.release()
        readable = _frames_in(self.temporary)
        if readable != self.frames:
            self.temporary.unlink(missing_ok=True)
            space = "the disk may be full" if free_bytes(self.path.parent) < 64 * 2**20 else "the write failed"
            raise OSError(errno.EIO, f"the video came out incomplete ({readable} of {self.frames} frames could be "
                                     f"read back: {space}); nothing was put in place", str(self.path))
        os.chmod(self.temporary, new_file_mode())  # mkstemp makes 0600
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (an interrupted or failed video leaves nothing behind)."""
        self.writer.release()
        self.temporary.unlink(missing_ok=True)


def _frames_in(path: Path) -> int:
    """The frames a video file holds as OpenCV reads its container (0 if it does not open)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def images_to_video(images: Sequence[Path], path: Path, fps: float = 4.0) -> Path:
    """An MP4 of the given images (all of the first one's size), e.g. a short clip of demo frames to predict."""
    if not images:
        raise ValueError(f"{path}: no images to make a video of")
    first = read_image(images[0])
    writer = VideoWriter(path, fps, (first.shape[1], first.shape[0]))
    try:
        for image in images:
            writer.write(read_image(image))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deeplabv3plus.media FOLDER OUT.mp4 [--fps N] [--frames N]``: a clip of a folder's images."""
    parser = Parser(prog="python -m deeplabv3plus.media",
                    description="Make an MP4 of the images in a folder (sorted, recursive).")
    parser.add_argument("folder", type=Path, help="folder of images of one size")
    parser.add_argument("out", type=Path, help="MP4 to write")
    parser.add_argument("--fps", type=positive_float, default=4.0, help="frames per second")
    parser.add_argument("--frames", type=non_negative_int, default=0, help="at most this many images (0: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    inputs, _ = find_inputs([str(args.folder)])
    images = [entry.path for entry in inputs if not entry.is_video][: args.frames or None]
    try:
        replaced = check_output_file(args.out, "out", args.overwrite).exists()
        images_to_video(images, args.out, args.fps)
    except (ValueError, OSError, KeyboardInterrupt) as error:
        return report_error(error, writing=args.out)
    print(f"wrote {args.out}: {len(images)} frames at {args.fps:g} fps" + (" (replaced)" if replaced else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
