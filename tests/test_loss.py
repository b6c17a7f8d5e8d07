import math

import pytest
import torch

from deeplabv3plus.loss import SegmentationLoss, cross_entropy_over_labelled_pixels


def test_mean_over_labelled_pixels_equals_torch_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, requires_grad=True)
    target = torch.randint(0, 5, (2, 3, 4))
    target[0, 0] = 255
    ours = cross_entropy_over_labelled_pixels(logits, target)
    reference = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)


def test_a_batch_without_labelled_pixels_gives_zero_loss_and_zero_gradients():
    logits = torch.randn(2, 19, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    assert math.isnan(torch.nn.functional.cross_entropy(logits, target, ignore_index=255).item())  # what torch gives
    loss = cross_entropy_over_labelled_pixels(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_low_precision_logits_are_scored_in_float32():
    logits = torch.randn(1, 3, 2, 2).to(torch.bfloat16)
    assert cross_entropy_over_labelled_pixels(logits, torch.zeros(1, 2, 2, dtype=torch.long)).dtype == torch.float32


def test_averaging_over_every_pixel_divides_by_the_ignored_ones_too():
    """--loss-average all (mmsegmentation's avg_non_ignore=False): 3 labelled pixels of 4 at log 2 each -> 3/4 log 2."""
    logits, target = torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 1], [1, 255]]])
    assert cross_entropy_over_labelled_pixels(logits, target).item() == pytest.approx(math.log(2))
    assert cross_entropy_over_labelled_pixels(logits, target, average="all").item() == pytest.approx(
        0.75 * math.log(2))
    assert SegmentationLoss(average="all")(logits, target).item() == pytest.approx(0.75 * math.log(2))


def test_float64_logits_stay_float64():
    logits = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    weights = SegmentationLoss(class_weights=[1.0, 2.0, 1.0])
    assert weights(logits, torch.ones(1, 2, 2, dtype=torch.long)).dtype == torch.float64


def test_auxiliary_logits_are_weighted():
    torch.manual_seed(1)
    main, aux = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    target = torch.randint(0, 4, (1, 3, 3))
    plain = cross_entropy_over_labelled_pixels(main, target)
    assert SegmentationLoss(aux_weight=0.4)(main, target) == plain  # a tensor: the main logits only
    combined = SegmentationLoss(aux_weight=0.4)({"out": main, "aux": aux}, target)
    assert combined.item() == pytest.approx(plain.item() + 0.4 * cross_entropy_over_labelled_pixels(aux, target).item())
    assert SegmentationLoss(aux_weight=0.0)({"out": main, "aux": aux}, target) == plain
