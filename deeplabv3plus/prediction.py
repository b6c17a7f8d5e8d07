"""Segmenting image files and videos with a trained model: colour, overlay and id PNGs of images, overlay (or side
by side) MP4s of videos, and the per-class pixel shares of every image and frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from tqdm import tqdm

from deeplabv3plus.inference import InferenceOptions, predict
from deeplabv3plus.media import InputFile, VideoWriter, read_image, read_video
from segdata.classes import ClassTable
from segdata.files import write_csv, write_png
from segdata.flags import FlagError
from segdata.pictures import overlay, side_by_side
from segdata.transforms import eval_transforms

__all__ = ["OutputOptions", "Predictor", "class_shares", "output_paths", "predict_images", "predict_video"]


class Predictor:
    """RGB uint8 frames in, (H, W) train-id predictions out, with the run's inference settings; ``classes``: the
    checkpoint's class table (names, colours, mask values of the outputs); ``ids_name``: what its data set calls its
    masks' own values (``labelIds`` for Cityscapes)."""

    def __init__(self, model: torch.nn.Module, options: InferenceOptions, device: torch.device,
                 classes: ClassTable, ids_name: str = "ids") -> None:
        self.model, self.device, self.classes, self.ids_name = model, device, classes, ids_name
        self.palette = classes.palette()
        self.normalise = eval_transforms()
        self.options = options
        self.channels_last = options.channels_last

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames of one size -> (N, H, W) uint8 trainIds."""
        batch = tv_tensors.Image(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
        images = self.normalise(batch).as_subclass(torch.Tensor).to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return predict(self.model, images, self.options).argmax(1).to(torch.uint8).cpu().numpy()


def _batches(items: Iterator, size: int, key=lambda frame: frame.shape) -> Iterator[list]:
    """Consecutive items grouped in batches of at most ``size`` with the same ``key`` (the frame shape)."""
    batch: list = []
    for item in items:
        if batch and (len(batch) == size or key(item) != key(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def class_shares(train_ids: np.ndarray, classes: ClassTable) -> dict[str, float]:
    """Fraction of the pixels predicted as each class, by name."""
    counts = np.bincount(train_ids.ravel(), minlength=classes.num_classes)[: classes.num_classes]
    return dict(zip(classes.names, (counts / train_ids.size).tolist()))


def _id_pngs(train_ids: np.ndarray, predictor: Predictor) -> dict[str, np.ndarray]:
    """--save-ids: the train ids, and the data set's own mask values (Cityscapes: labelIds)."""
    return {"trainIds": train_ids, predictor.ids_name: predictor.classes.mask_values()[train_ids]}


@dataclass(frozen=True)
class OutputOptions:
    """What is written: the colour mask's opacity in overlays, id PNGs of images, videos side by side, the batch."""

    alpha: float = 0.5
    save_ids: bool = False
    side_by_side: bool = False
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise FlagError(f"argument --alpha: must be from 0 to 1, got {self.alpha}")


def _named(out: Path, entry: InputFile, suffix: str) -> Path:
    """The output of an input file: its path below the folder it was found in, mirrored under ``out``, + suffix."""
    stem = out / entry.relative.with_suffix("")
    return stem.with_name(stem.name + suffix)


def _video_suffix(options: OutputOptions) -> str:
    return f"_{'side_by_side' if options.side_by_side else 'overlay'}.mp4"


def output_paths(inputs: list[InputFile], ids_name: str, options: OutputOptions, out: Path) -> list[Path]:
    """Every file predicting ``inputs`` writes under ``out`` (``ids_name``: see :class:`Predictor`): what must not be
    there already (unless replaced)."""
    paths = []
    for entry in inputs:
        if entry.is_video:
            paths += [_named(out, entry, _video_suffix(options)), _named(out, entry, "_class_shares.csv")]
            continue
        kinds = ["color", "overlay", *(("trainIds", ids_name) if options.save_ids else ())]
        paths += [_named(out, entry, f"_{kind}.png") for kind in kinds]
    if any(not entry.is_video for entry in inputs):
        paths.append(out / "class_shares.csv")
    return paths


def predict_images(images: list[InputFile], predictor: Predictor, options: OutputOptions, out: Path) -> list[str]:
    """Colour, overlay (and id) PNGs of every image, and class_shares.csv; the one-line errors of those skipped."""
    errors, shares = [], []

    def readable() -> Iterator[tuple[InputFile, np.ndarray]]:  # one image in memory at a time (and its batch)
        for entry in tqdm(images, desc="images", unit="image", dynamic_ncols=True):
            try:
                yield entry, read_image(entry.path)
            except ValueError as error:
                errors.append(str(error))

    for batch in _batches(readable(), options.batch_size, key=lambda item: item[1].shape):
        for (entry, image), train_ids in zip(batch, predictor([image for _, image in batch])):
            color = predictor.palette[train_ids]
            write_png(_named(out, entry, "_color.png"), color)
            write_png(_named(out, entry, "_overlay.png"), overlay(image, color, options.alpha))
            for kind, ids in (_id_pngs(train_ids, predictor) if options.save_ids else {}).items():
                write_png(_named(out, entry, f"_{kind}.png"), ids)
            shares.append({"name": str(entry.relative), **class_shares(train_ids, predictor.classes)})
    if shares:
        write_csv(out / "class_shares.csv", shares, ["name", *predictor.classes.names])
    return errors


def predict_video(entry: InputFile, predictor: Predictor, options: OutputOptions, out: Path) -> Path:
    """The overlay (or side-by-side) MP4 of a video and its per-frame class shares; ValueError if unreadable."""
    frames, fps, count = read_video(entry.path)
    video_path = _named(out, entry, _video_suffix(options))
    writer, shares = None, []
    try:
        with tqdm(total=count or None, desc=entry.path.name, unit="frame", dynamic_ncols=True) as bar:
            for batch in _batches(frames, options.batch_size):
                for frame, train_ids in zip(batch, predictor(batch)):
                    picture = (side_by_side(frame, train_ids, None, predictor.palette, ("image", "prediction"))
                               if options.side_by_side else overlay(frame, predictor.palette[train_ids], options.alpha))
                    if writer is None:
                        writer = VideoWriter(video_path, fps, (picture.shape[1], picture.shape[0]))
                    writer.write(picture)
                    shares.append({"name": f"frame {len(shares)}", **class_shares(train_ids, predictor.classes)})
                bar.update(len(batch))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    writer.close()
    write_csv(_named(out, entry, "_class_shares.csv"), shares, ["name", *predictor.classes.names])
    return video_path
