import shutil

import numpy as np
import pytest
import torch

from cityscapes.dataset import CityscapesSegmentation
from segdata.files import read_png, write_png
from segdata.transforms import eval_transforms


def test_items_are_images_with_their_masks(tiny_root):
    dataset = CityscapesSegmentation(tiny_root, "val")
    assert len(dataset) == 3
    stems = [dataset[i][2]["stem"] for i in range(3)]
    assert stems == sorted(stems)
    image, mask, meta = dataset[0]
    assert image.shape == (3, 64, 128) and image.dtype == torch.uint8
    assert mask.shape == (64, 128) and mask.dtype == torch.uint8  # made int64 on the training device
    expected = read_png(
        tiny_root / "generated_gt" / "val" / meta["stem"].split("_")[0] / f"{meta['stem']}_gtFine_labelTrainIds.png"
    )
    assert np.array_equal(mask.numpy(), expected)
    assert set(mask.unique().tolist()) - {255} <= set(range(19))


def test_transforms_are_applied(tiny_root):
    image, mask, _ = CityscapesSegmentation(tiny_root, "train", eval_transforms())[1]
    assert image.dtype == torch.float32 and type(image) is torch.Tensor and type(mask) is torch.Tensor


def test_test_split_has_images_only(tiny_root):
    image, mask, _ = CityscapesSegmentation(tiny_root, "test")[0]
    assert image.shape == (3, 64, 128) and bool((mask == 255).all())


def test_missing_images_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train: no .*extract leftImg8bit_trainvaltest.zip"):
        CityscapesSegmentation(tmp_path, "train")


def test_missing_masks_say_to_run_generate_gt(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "leftImg8bit", root / "leftImg8bit")
    with pytest.raises(
        FileNotFoundError, match="3 of 3 val masks are missing; generate them with python -m cityscapes.generate_gt"
    ):
        CityscapesSegmentation(root, "val")


def test_size_mismatch_names_the_file(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    dataset = CityscapesSegmentation(root, "val")
    write_png(dataset.masks[1], np.zeros((32, 64), np.uint8))
    dataset[0]
    with pytest.raises(
        ValueError,
        match=f"{dataset.images[1].name}: is 64x128 but its mask .* is 32x64; the image does "
        "not match its annotation: re-extract leftImg8bit_trainvaltest.zip",
    ):
        dataset[1]
