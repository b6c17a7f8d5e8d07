"""Sliding-window inference (mmsegmentation's "slide" mode) against whole-image inference and by hand."""

import pytest
import torch
from torch import nn

from deeplabv3plus.inference import InferenceOptions, predict, sliding_window_logits, window_origins
from deeplabv3plus.model import build_model


class WindowMean(nn.Module):
    """Logits: channel 0 is the mean of the window's first input channel everywhere in the window, channel 1 is 0."""

    def forward(self, images):
        mean = images[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *images.shape[-2:])
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)


def test_window_origins_cover_the_axis_and_stay_inside():
    assert window_origins(10, 6, 4) == [0, 4]
    assert window_origins(1024, 769, 513) == [0, 255]
    assert window_origins(2048, 769, 513) == [0, 513, 1026, 1279]
    assert window_origins(500, 769, 513) == [0]  # smaller than the window: one window, the whole axis
    for size, crop, stride in ((2048, 512, 341), (1000, 300, 300), (17, 5, 2)):
        origins = window_origins(size, crop, stride)
        covered = set()
        for origin in origins:
            assert 0 <= origin and origin + crop <= size
            covered.update(range(origin, origin + crop))
        assert covered == set(range(size)) and origins[-1] + crop == size


def test_overlapping_windows_average_their_logits():
    columns = torch.arange(10, dtype=torch.float32).expand(1, 1, 3, 10).repeat(1, 3, 1, 1)  # value = column index
    logits = sliding_window_logits(WindowMean(), columns, crop=(3, 6), stride=(3, 4))
    first, second = sum(range(0, 6)) / 6, sum(range(4, 10)) / 6  # 2.5 and 6.5
    expected = torch.tensor([first] * 4 + [(first + second) / 2] * 2 + [second] * 4)
    assert torch.allclose(logits[0, 0], expected.expand(3, 10))
    assert torch.equal(logits[0, 1], torch.zeros(3, 10))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet50", 16).eval()


def test_one_window_over_the_whole_image_equals_whole_image_inference(model):
    images = torch.randn(2, 3, 64, 96)
    whole = predict(model, images)
    assert torch.allclose(predict(model, images, InferenceOptions("slide", (64, 96), (64, 96))), whole, atol=1e-6)
    assert torch.allclose(predict(model, images, InferenceOptions("slide", (128, 128), (64, 64))), whole, atol=1e-6)


def test_slide_composes_with_flip_and_scales(model):
    images = torch.randn(1, 3, 64, 96)
    probabilities = predict(model, images, InferenceOptions("slide", (48, 48), (32, 32), flip=True, scales=(0.75, 1.0)))
    assert probabilities.shape == (1, 19, 64, 96)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 64, 96), atol=1e-5)
    assert not torch.allclose(probabilities, predict(model, images), atol=1e-3)  # windows see less context


def test_slide_needs_its_window():
    with pytest.raises(ValueError, match="needs crop"):
        predict(WindowMean(), torch.zeros(1, 3, 4, 4), InferenceOptions(mode="slide", crop=None, stride=None))
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        predict(WindowMean(), torch.zeros(1, 3, 4, 4), InferenceOptions(mode="tiles"))


class PerPixel(nn.Module):
    """A per-pixel classifier that aligns corners (or not) as a model's config says."""

    def __init__(self, align_corners):
        super().__init__()
        self.classify, self.align_corners = nn.Conv2d(3, 4, 1), align_corners

    def forward(self, images):
        return self.classify(images)


@pytest.mark.parametrize("align_corners", [False, True])
def test_logits_of_rescaled_images_are_resized_back_to_the_masks_size(align_corners):
    """--test-scale: the image was shrunk for the model; the probabilities come back at the mask's size, resized as
    the model aligns corners (mmsegmentation resizes its logits to the original shape the same way)."""
    torch.manual_seed(0)
    model, images = PerPixel(align_corners).eval(), torch.randn(2, 3, 8, 12)
    with torch.no_grad():
        probabilities = predict(model, images, InferenceOptions(), size=(16, 24))
        expected = nn.functional.interpolate(model(images), size=(16, 24), mode="bilinear",
                                             align_corners=align_corners).softmax(dim=1)
    assert probabilities.shape == (2, 4, 16, 24) and torch.allclose(probabilities, expected, atol=1e-6)

