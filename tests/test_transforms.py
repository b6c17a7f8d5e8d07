import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segdata.mmseg_pipeline import class_share_allows
from segdata.photometric import PhotometricDistortion
from segdata.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    RandomScale,
    crop_first,
    draw_scale_crop,
    eval_transforms,
    resize_then_crop_transforms,
    train_transforms,
)


def image_and_mask_drawn_from_it(height=72, width=108, block=12):
    """An image whose red channel encodes the mask: mask = red // 10 (0..18)."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 19, (height // block, width // block), generator=generator)
    mask = mask.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.stack([mask * 10 + 5, torch.full_like(mask, 100), torch.full_like(mask, 50)]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask.to(torch.uint8))


def block_interior(mask, size=5):
    """Pixels whose size x size neighbourhood holds one label (and no padding)."""
    values = mask.float()[None, None]
    high = torch.nn.functional.max_pool2d(values, size, stride=1, padding=size // 2)
    low = -torch.nn.functional.max_pool2d(-values, size, stride=1, padding=size // 2)
    return ((high == low) & (values != 255))[0, 0]


def decode_mask(normalised_image):
    red = normalised_image[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return torch.div((red * 255).round(), 10, rounding_mode="floor").long()


def test_train_transforms_keep_image_and_mask_aligned():
    transform = train_transforms((48, 64), (0.5, 2.0), Augmentation(color_jitter=0.0))
    for seed in range(20):
        torch.manual_seed(seed)
        image, mask = transform(*image_and_mask_drawn_from_it())
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert mask.shape == (48, 64) and isinstance(mask, tv_tensors.Mask)
        interior = block_interior(mask)  # the bilinear image blurs block edges; the nearest mask does not
        assert interior.sum() > 200
        agree = (decode_mask(image)[interior] == mask[interior].long()).float().mean()
        assert agree > 0.97, (seed, agree)  # a misaligned mask agrees on about 1/19


def test_padding_uses_the_ignore_index_and_black():
    torch.manual_seed(0)
    transform = train_transforms(crop_size=(200, 200), scale_range=(1.0, 1.0),
                                 augmentation=Augmentation(color_jitter=0.0, flip_probability=0.0))
    image, mask = transform(*image_and_mask_drawn_from_it())
    assert (mask == 255).sum() == 200 * 200 - 72 * 108
    assert torch.equal(mask.unique()[-1:], torch.tensor([255], dtype=mask.dtype))
    padded = mask == 255
    black = (torch.zeros(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(image[:, padded].T, black.expand(int(padded.sum()), 3), atol=1e-5)


def test_random_scale_draws_within_range_and_masks_stay_labels():
    image, mask = image_and_mask_drawn_from_it()
    sizes = set()
    for seed in range(30):
        torch.manual_seed(seed)
        scaled_image, scaled_mask = RandomScale((0.5, 2.0))(image, mask)
        assert scaled_image.shape[-2:] == scaled_mask.shape[-2:]
        assert 36 <= scaled_mask.shape[0] <= 144
        assert set(scaled_mask.unique().tolist()) <= set(mask.unique().tolist())  # nearest: no new values
        sizes.add(tuple(scaled_mask.shape))
    assert len(sizes) > 20


def test_colour_jitter_leaves_the_mask_alone():
    torch.manual_seed(1)
    image, mask = image_and_mask_drawn_from_it()
    _, out_mask = train_transforms(crop_size=(72, 108), scale_range=(1.0, 1.0),
                                   augmentation=Augmentation(flip_probability=0.0, color_jitter=0.5))(
        image, mask
    )
    assert torch.equal(out_mask, mask)


def test_eval_transforms_only_normalise():
    image, mask = image_and_mask_drawn_from_it()
    out_image, out_mask = eval_transforms()(image, mask)
    assert torch.equal(out_mask, mask)
    expected = (image.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    assert torch.allclose(out_image, expected, atol=1e-6)


def smooth_frame(height=120, width=200, seed=0):
    """A frame with low-frequency content (interpolation differences stay small) and a blocky label mask."""
    generator = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(xs / (9 + 4 * c) + ys / (13 + 3 * c) + generator.uniform(0, 6)) for c in range(3)]
    image = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
    mask = generator.integers(0, 19, (height // 10, width // 10), dtype=np.uint8).repeat(10, 0).repeat(10, 1)
    return image, mask


def reference_crop(image, mask, crop, scale_range, seed):
    torch.manual_seed(seed)
    reference = v2.Compose([RandomScale(scale_range), v2.RandomCrop(crop, pad_if_needed=True,
                            fill={tv_tensors.Image: 0, tv_tensors.Mask: 255})])
    out_image, out_mask = reference(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                                    tv_tensors.Mask(torch.from_numpy(mask)))
    return out_image.permute(1, 2, 0).numpy(), out_mask.numpy()


@pytest.mark.parametrize("scale_range,crop", [((1.0, 2.0), (64, 96)), ((0.5, 1.0), (48, 64)), ((0.4, 0.6), (90, 150)),
                                              ((1.0, 1.0), (120, 200))], ids=["up", "down", "padded", "identity"])
def test_crop_first_equals_resize_then_crop_for_the_same_draw(scale_range, crop):
    image, mask = smooth_frame()
    for seed in range(15):
        expected_image, expected_mask = reference_crop(image, mask, crop, scale_range, seed)
        torch.manual_seed(seed)
        params = draw_scale_crop(*image.shape[:2], crop, scale_range)
        out_image, out_mask = crop_first(image, mask, params)
        assert np.array_equal(out_mask, expected_mask), seed  # nearest: exact, padding 255 included
        difference = np.abs(out_image.astype(int) - expected_image.astype(int))
        padded = expected_mask == 255
        assert (out_image[padded] == 0).all()
        # bilinear either way (OpenCV's 1/32-pixel fixed point against torchvision's); torchvision also antialiases
        # when shrinking, OpenCV (like mmsegmentation) does not: measured 0.24 / 1 growing, 0.37 / 4 shrinking
        if scale_range == (1.0, 1.0):
            assert np.array_equal(out_image, expected_image)
        assert difference.mean() < (0.5 if scale_range[0] >= 1 else 0.75), (seed, difference.mean())
        assert difference.max() <= (1 if scale_range[0] >= 1 else 6), (seed, difference.max())


def test_the_training_transform_draws_like_the_reference_pipeline():
    """Same seed, same random calls: flip and jitter land on the same crop (the mask shows it exactly)."""
    image, mask = smooth_frame()
    for seed in range(10):
        torch.manual_seed(seed)
        _, ours = train_transforms((64, 96), (0.5, 2.0))(image, mask)
        torch.manual_seed(seed)
        _, reference = resize_then_crop_transforms((64, 96), (0.5, 2.0))(
            tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(mask)))
        assert torch.equal(ours, reference), seed


class RowRecorder:
    """An array that records which rows are read, as a memory map would page them in."""

    def __init__(self, array):
        self.array, self.rows = array, set()
        self.shape, self.ndim = array.shape, array.ndim

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        self.rows.update(range(*rows.indices(self.shape[0])))
        return self.array[key]


def test_only_the_rows_under_the_window_are_read():
    image, mask = smooth_frame(400, 800)
    recorded_image, recorded_mask = RowRecorder(image), RowRecorder(mask)
    torch.manual_seed(3)
    params = draw_scale_crop(400, 800, (64, 64), (1.0, 1.0))
    crop_first(recorded_image, recorded_mask, params)
    assert len(recorded_image.rows) <= 64 + 4 and len(recorded_mask.rows) == 64


def test_jitter_on_the_device_equals_jitter_in_the_loader():
    """The same draws; the device path jitters and normalises a batch of uint8 crops (here on the CPU)."""
    image, mask = smooth_frame()
    in_loader, on_device = (
        train_transforms((64, 96), (0.5, 2.0), jitter_on_device=False),
        train_transforms((64, 96), (0.5, 2.0), jitter_on_device=True),
    )
    expected, crops, jitters = [], [], []
    for seed in range(4):
        torch.manual_seed(seed)
        expected.append(in_loader(image, mask))
        torch.manual_seed(seed)
        crop, crop_mask, jitter = on_device(image, mask)
        assert crop.dtype == torch.uint8 and jitter.shape == (8,) and torch.equal(crop_mask, expected[-1][1])
        crops.append(crop)
        jitters.append(jitter)
    finished = on_device.finish_on_device(torch.stack(crops), torch.stack(jitters))
    assert finished.dtype == torch.float32 and finished.shape == (4, 3, 64, 96)
    assert torch.allclose(finished, torch.stack([image for image, _ in expected]), atol=1e-6)


def test_the_crop_rule_redraws_windows_that_one_class_dominates():
    """Augmentation(max_class_share=0.75) (mmsegmentation's cat_max_ratio) in the crop-first transform: a frame that is
    class 0 over its left three quarters gives windows of one class most of the time without the rule, rarely with."""
    image, mask = smooth_frame()
    mask[:, :150] = 0
    allowed = {}
    for share in (1.0, 0.75):
        transform = train_transforms((48, 64), (1.0, 1.0), Augmentation(max_class_share=share), jitter_on_device=True)
        allowed[share] = 0
        for seed in range(20):
            torch.manual_seed(seed)
            _, crop_mask, _ = transform(image, mask)
            allowed[share] += class_share_allows(crop_mask.numpy(), 0.75)
    assert allowed[1.0] <= 10 and allowed[0.75] == 20, allowed


def test_photometric_colour_is_mmsegmentations_distortion_of_the_crop(monkeypatch):
    """Augmentation(color="photometric"): the crop and flip of the plain transform, then PhotometricDistortion drawn
    from a numpy state seeded by the sample's torch generator; the mask untouched."""
    from segdata import transforms

    calls = []

    class Recorded(PhotometricDistortion):
        def __call__(self, image, rng):
            state = np.random.RandomState()
            state.set_state(rng.get_state())
            calls.append((image.copy(), super().__call__(image.copy(), state)))
            return super().__call__(image, rng)

    monkeypatch.setattr(transforms, "PhotometricDistortion", Recorded)
    image, _ = smooth_frame()
    _, mask = image_and_mask_drawn_from_it(120, 200, 20)
    plain = train_transforms((64, 96), (0.5, 2.0), Augmentation(color_jitter=0.0), jitter_on_device=True)
    distorted = train_transforms((64, 96), (0.5, 2.0), Augmentation(color="photometric"), jitter_on_device=True)
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        crop, crop_mask, _ = plain(image, mask.numpy())
        torch.manual_seed(seed)
        out, out_mask, _ = distorted(image, mask.numpy())
        given, expected = calls[-1]
        assert np.array_equal(given, crop.permute(1, 2, 0).numpy()) and torch.equal(out_mask, crop_mask), seed
        assert np.array_equal(out.permute(1, 2, 0).numpy(), expected), seed
        changed += not torch.equal(out, crop)
    assert len(calls) == 6 and changed >= 4


def test_a_test_scale_rescales_the_image_within_it_and_leaves_the_mask():
    """eval_transforms(test_scale=(W, H)): mmsegmentation's test Resize(keep_ratio=True), OpenCV bilinear; the mask
    stays at the image's own size, where the scores are computed."""
    image, mask = smooth_frame(100, 200)
    out_image, out_mask = eval_transforms((100, 60))(image, mask)  # fits 100x60 keeping 1:2 -> 50x100
    expected = torch.from_numpy(cv2.resize(image, (100, 50), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    expected = (expected.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None]
    assert out_image.shape == (3, 50, 100) and torch.allclose(out_image, expected, atol=1e-6)
    assert torch.equal(out_mask, torch.from_numpy(mask))

