import torch
from torchvision import tv_tensors

from cityscapes.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomScale, eval_transforms, train_transforms


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
    transform = train_transforms(crop_size=(48, 64), scale_range=(0.5, 2.0), color_jitter=0.0)
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
    transform = train_transforms(crop_size=(200, 200), scale_range=(1.0, 1.0), color_jitter=0.0, flip_probability=0.0)
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
    _, out_mask = train_transforms(crop_size=(72, 108), scale_range=(1.0, 1.0), flip_probability=0.0, color_jitter=0.5)(image, mask)
    assert torch.equal(out_mask, mask)


def test_eval_transforms_only_normalise():
    image, mask = image_and_mask_drawn_from_it()
    out_image, out_mask = eval_transforms()(image, mask)
    assert torch.equal(out_mask, mask)
    expected = (image.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(out_image, expected, atol=1e-6)
