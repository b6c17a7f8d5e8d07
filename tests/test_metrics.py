import math

import pytest
import torch

from cityscapes.labels import CATEGORY_NAMES, TRAIN_ID_TO_CATEGORY_ID
from deeplabv3plus.metrics import ConfusionMatrix, category_confusion_matrix, scores_from_confusion_matrix


def test_scores_on_a_hand_made_matrix():
    # rows: ground truth, columns: prediction
    matrix = torch.tensor([[8, 2, 0],
                           [1, 3, 0],
                           [0, 0, 0]])
    scores = scores_from_confusion_matrix(matrix)
    assert scores["iou"][:2] == pytest.approx([8 / 11, 3 / 6])
    assert scores["dice"][:2] == pytest.approx([16 / 19, 6 / 9])
    assert scores["class_accuracy"][:2] == pytest.approx([8 / 10, 3 / 4])
    assert all(math.isnan(scores[key][2]) for key in ("iou", "dice", "class_accuracy"))  # absent class
    assert scores["mean_iou"] == pytest.approx((8 / 11 + 3 / 6) / 2)
    assert scores["mean_dice"] == pytest.approx((16 / 19 + 6 / 9) / 2)
    assert scores["mean_class_accuracy"] == pytest.approx((0.8 + 0.75) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(11 / 14)


def test_class_only_predicted_counts_with_zero_iou():
    matrix = torch.tensor([[5, 5], [0, 0]])  # class 1 never in ground truth but predicted
    scores = scores_from_confusion_matrix(matrix)
    assert scores["iou"] == pytest.approx([0.5, 0.0])
    assert scores["mean_iou"] == pytest.approx(0.25)
    assert math.isnan(scores["class_accuracy"][1]) and scores["mean_class_accuracy"] == pytest.approx(0.5)


def test_accumulation_ignores_255_and_sums_batches():
    confusion = ConfusionMatrix(3)
    target = torch.tensor([[[0, 0, 1, 255]], [[2, 2, 255, 1]]])
    prediction = torch.tensor([[[0, 1, 1, 2]], [[2, 0, 0, 1]]])
    confusion.update(target[:1], prediction[:1])
    confusion.update(target[1:], prediction[1:])
    assert confusion.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion.matrix.dtype == torch.int64


def test_whole_split_not_per_image_average():
    confusion = ConfusionMatrix(2)
    confusion.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))  # image IoU class 0: 3/4
    confusion.update(torch.tensor([[1, 1]]), torch.tensor([[1, 1]]))
    scores = confusion.scores()
    assert scores["iou"] == pytest.approx([3 / 4, 2 / 3])  # class 1: 2 TP, 1 FP from image one


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match="outside 0..2"):
        ConfusionMatrix(3).update(torch.tensor([[3]]), torch.tensor([[0]]))


DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_category_merge(device):
    """Integer matrices on every device: CUDA has no integer matmul, so the merge must not use one."""
    matrix = torch.zeros(19, 19, dtype=torch.int64, device=device)
    matrix[0, 1] = 4  # road predicted as sidewalk: both 'flat', a category hit
    matrix[13, 14] = 2  # car as truck: both 'vehicle'
    matrix[11, 13] = 1  # person as car: human -> vehicle, a category miss
    categories = category_confusion_matrix(matrix, torch.as_tensor(TRAIN_ID_TO_CATEGORY_ID), len(CATEGORY_NAMES))
    assert categories.device.type == device and categories.dtype == torch.int64 and categories.shape == (7, 7)
    flat, human, vehicle = (CATEGORY_NAMES.index(name) for name in ("flat", "human", "vehicle"))
    assert categories[flat, flat] == 4 and categories[vehicle, vehicle] == 2 and categories[human, vehicle] == 1
    assert categories.sum() == matrix.sum() and categories.count_nonzero() == 3
