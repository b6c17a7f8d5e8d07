import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

from cityscapes import labels as cs


def test_constants_follow_the_official_table():
    assert cs.IGNORE_INDEX == 255
    assert cs.NUM_CLASSES == 19
    assert cs.CLASS_NAMES == tuple(trainId2label[t].name for t in range(19))
    assert cs.CLASS_NAMES[0] == "road" and cs.CLASS_NAMES[18] == "bicycle"
    assert cs.CATEGORY_NAMES == ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


@pytest.mark.parametrize("label", [label for label in labels if label.id >= 0], ids=lambda label: label.name)
def test_label_id_lookups_for_every_label(label):
    expected_train_id = label.trainId if 0 <= label.trainId < 255 else 255
    assert cs.LABEL_ID_TO_TRAIN_ID[label.id] == expected_train_id
    assert tuple(cs.LABEL_ID_TO_COLOR[label.id]) == label.color


def test_ignored_labels_map_to_255():
    ignored = [label.id for label in labels if label.id >= 0 and label.trainId in (255, -1)]
    assert ignored == [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]
    assert (cs.LABEL_ID_TO_TRAIN_ID[ignored] == 255).all()
    assert (cs.LABEL_ID_TO_TRAIN_ID[34:] == 255).all()  # ids the table does not use


def test_train_id_lookups_round_trip():
    train_ids = np.arange(19)
    label_ids = cs.TRAIN_ID_TO_LABEL_ID[train_ids]
    assert [id2label[int(i)].trainId for i in label_ids] == list(range(19))
    assert (cs.LABEL_ID_TO_TRAIN_ID[label_ids] == train_ids).all()
    assert cs.TRAIN_ID_TO_LABEL_ID[255] == 0  # ignore -> 'unlabeled'
    for train_id in range(19):
        assert tuple(cs.TRAIN_ID_TO_COLOR[train_id]) == trainId2label[train_id].color
    assert tuple(cs.TRAIN_ID_TO_COLOR[255]) == (0, 0, 0)


def test_category_of_every_class():
    for train_id, category_id in enumerate(cs.TRAIN_ID_TO_CATEGORY_ID):
        assert cs.CATEGORY_NAMES[category_id] == trainId2label[train_id].category


def test_resolve_label_handles_groups_and_unknown_names():
    assert cs.resolve_label("cargroup").name == "car"
    assert cs.resolve_label("persongroup").name == "person"
    assert cs.resolve_label("polegroup").name == "polegroup"  # a label of its own (id 18)
    assert cs.resolve_label("license plate").id == -1
    assert cs.resolve_label("spaceship") is None
