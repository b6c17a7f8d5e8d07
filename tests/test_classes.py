"""Class tables: JSON and CSV say the same things, and anything else is refused in one line naming the file."""

import json

import numpy as np
import pytest

from segdata.classes import ClassTableError, load_class_table
from segdata.masks import MaskValueError, to_train_ids

ROAD_SCENE_JSON = {"name": "roads", "ignore": [11], "ignore_colors": [[0, 0, 0]],
                   "classes": [{"name": "sky", "color": [128, 128, 128], "values": [0]},
                               {"name": "road", "color": [128, 64, 128], "values": [1, 2]}]}
ROAD_SCENE_CSV = "name,r,g,b,values,ignore\nsky,128,128,128,0,\nroad,128,64,128,1 2,no\nvoid,0,0,0,11,yes\n"


def test_a_csv_table_says_what_a_json_one_says_ignored_values_and_colours_included(tmp_path):
    (tmp_path / "roads.json").write_text(json.dumps(ROAD_SCENE_JSON))
    (tmp_path / "roads.csv").write_text(ROAD_SCENE_CSV)
    from_json, from_csv = load_class_table(tmp_path / "roads.json"), load_class_table(tmp_path / "roads.csv")
    assert from_json == from_csv
    assert from_csv.names == ("sky", "road") and from_csv.ignore == (11,) and from_csv.ignore_colors == ((0, 0, 0),)
    mask = np.array([[0, 1], [2, 11]], np.uint8)
    assert to_train_ids(mask, from_csv).tolist() == [[0, 1], [1, 255]]
    # and back: the table a checkpoint carries is JSON's form
    (tmp_path / "again.json").write_text(json.dumps(from_csv.as_dict()))
    assert load_class_table(tmp_path / "again.json") == from_csv


def test_a_void_row_without_ignore_would_be_a_class_and_the_error_says_how_to_ignore_it_in_csv(tmp_path):
    (tmp_path / "t.csv").write_text("name,r,g,b,values\nsky,128,128,128,0\nroad,128,64,128,1\n")
    with pytest.raises(MaskValueError, match=r"t.csv, or add a row with ignore yes for them"):
        to_train_ids(np.array([[0, 11]], np.uint8), load_class_table(tmp_path / "t.csv"), "m.png")


@pytest.mark.parametrize("text, message", [
    ("name,r,g,b,values,ignored\nsky,1,2,3,0,\n", "unknown column ignored"),
    ("name,r,g,b,ignore\nsky,1,2,3,maybe\n", "row sky: ignore is yes or empty, got 'maybe'"),
    ("name,r,g,b,values,ignore\nsky,1,2,3,0,\nvoid,,,,,yes\n", "ignored row void names no mask value and no colour"),
    ("name,r,g,b\nsky,1,2,\n", "not a class table"),
])
def test_csv_mistakes_are_named(tmp_path, text, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ClassTableError, match=message):
        load_class_table(tmp_path / "t.csv")


@pytest.mark.parametrize("data, message", [
    ({"classes": ["sky", "road"]}, r'"classes" must be a list of objects, one per class, got a list of str'),
    ({"classes": {"sky": [1, 2, 3]}}, r'"classes" must be a list of objects, one per class, got dict'),
    ({"classes": [{"name": "sky", "color": [1, 2, 3]}], "ignored": [11]}, "unknown key ignored"),
    ({"classes": [{"name": "sky", "colour": [1, 2, 3]}]}, "unknown key of class sky colour"),
    ({"classes": [{"name": "sky", "color": [1, 2]}]}, r"the colour of sky is \[1, 2\]; colours are RGB, three numbers"),
    ({"classes": [{"name": "sky", "color": [1, 2, 300]}]}, "colours are RGB, three numbers 0-255"),
    ({"classes": [{"name": "sky", "color": [1, 2, 3]}], "ignore_colors": [[0, 0]]}, "the colour of ignored is"),
])
def test_json_mistakes_are_named_when_the_table_is_read(tmp_path, data, message):
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(ClassTableError, match=message) as caught:
        load_class_table(tmp_path / "t.json")
    assert str(caught.value).startswith(str(tmp_path / "t.json")) and "\n" not in str(caught.value)


def test_csv_tables_as_spreadsheets_write_them(tmp_path):
    """A byte-order mark, a name line, a short row named by its line, and errors that give CSV's syntax."""
    (tmp_path / "roads.csv").write_bytes(("\ufeff# name: road-scenes\n" + ROAD_SCENE_CSV).encode("utf-8"))
    table = load_class_table(tmp_path / "roads.csv")
    assert table.name == "road-scenes" and table.names == ("sky", "road")
    (tmp_path / "short.csv").write_text("name,r,g,b,values,ignore\nsky,128,128,128,0,\nroad,128,64\n")
    with pytest.raises(ClassTableError, match=r"short.csv: line 3 has 3 fields but the header has 6 "
                                              r"\(name,r,g,b,values,ignore\); give every column of every row"):
        load_class_table(tmp_path / "short.csv")
    (tmp_path / "bad.csv").write_text("name,r,g,b\nsky,1,2,x\n")
    with pytest.raises(ClassTableError, match="not a class table") as caught:
        load_class_table(tmp_path / "bad.csv")
    assert "name,r,g,b,values,ignore" in str(caught.value) and '{"classes"' not in str(caught.value)


def test_a_table_saved_as_csv_is_the_same_classes_as_its_json(tmp_path):
    from deeplabv3plus.datasets import class_table

    (tmp_path / "roads.json").write_text(json.dumps(ROAD_SCENE_JSON | {"name": "my-roads"}))
    (tmp_path / "roads.csv").write_text(ROAD_SCENE_CSV)
    from_json, from_csv = load_class_table(tmp_path / "roads.json"), load_class_table(tmp_path / "roads.csv")
    assert from_json != from_csv and from_json.same_classes(from_csv)  # only the names differ
    assert class_table("folder", tmp_path / "roads.csv", resumed=from_json).same_classes(from_json)
    (tmp_path / "other.csv").write_text(ROAD_SCENE_CSV.replace("1 2,no", "1,no"))
    with pytest.raises(ValueError, match="describes other classes than the run being resumed"):
        class_table("folder", tmp_path / "other.csv", resumed=from_json)


def test_a_table_one_class_short_of_the_masks_says_so(tmp_path):
    (tmp_path / "t.csv").write_text("name,r,g,b\n" + "".join(f"c{index},{index},0,0\n" for index in range(11)))
    with pytest.raises(MaskValueError, match=r"\(11: 2 px\); the table's 11 classes take the values 0-10: one class "
                                             r"short\? add a class \(or an ignored value\) for 11"):
        to_train_ids(np.array([[0, 11, 11, 10]], np.uint8), load_class_table(tmp_path / "t.csv"), "m.png")
