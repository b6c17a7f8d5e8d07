"""Folder data sets as users bring them: split lists in the "image mask" pair format, JPEG masks, a PNG and a JPEG of
one frame, empty lists and unreadable files, each named in one line; the check groups what repeats."""

import shutil

import numpy as np
import pytest

from cityscapes.synthetic_layouts import STREET_CLASSES, write_folder_dataset
from segdata import check
from segdata.files import write_png
from segdata.folder import FolderSegmentation, find_pairs


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "street"
    write_folder_dataset(root, frames_per_split=4)
    return root


@pytest.fixture
def copy(street, tmp_path):
    shutil.copytree(street, tmp_path / "street")
    return tmp_path / "street"


def test_pair_lists_read_image_mask_lines_relative_to_the_list_or_the_root(copy):
    frames = sorted((copy / "images" / "train").rglob("*.png"))
    # SegNet-style: absolute paths of another machine's root; VOC-style: paths from the root with a leading slash;
    # and paths relative to the list's own folder
    lines = [f"/home/someone/datasets/street/images/train/{frames[0].relative_to(copy / 'images' / 'train')} "
             f"/home/someone/datasets/street/masks/train/{frames[0].relative_to(copy / 'images' / 'train')}",
             f"/images/train/{frames[1].relative_to(copy / 'images' / 'train')} "
             f"/masks/train/{frames[1].relative_to(copy / 'images' / 'train')}",
             f"../images/train/{frames[2].relative_to(copy / 'images' / 'train')} "
             f"../masks/train/{frames[2].relative_to(copy / 'images' / 'train')}"]
    (copy / "splits").mkdir()
    (copy / "splits" / "train.txt").write_text("\n".join(lines) + "\n")
    data = FolderSegmentation(copy, "train", STREET_CLASSES)
    assert data.images == frames[:3] and [mask.name for mask in data.masks] == [frame.name for frame in frames[:3]]
    assert data.stem(0) == frames[0].relative_to(copy).with_suffix("").as_posix()  # outputs mirror the image path
    image, mask = data.read_arrays(2)
    assert image.shape[:2] == mask.shape


def test_a_pair_list_naming_missing_files_says_so_once_per_line(copy):
    (copy / "splits").mkdir()
    (copy / "splits" / "train.txt").write_text("a.png b.png\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt: line 1 names a.png, which is neither under .* nor under "
                                                r".*image mask pairs are relative to the list's folder"):
        FolderSegmentation(copy, "train", STREET_CLASSES)


def test_an_empty_split_list_is_named(copy):
    (copy / "splits").mkdir()
    (copy / "splits" / "train.txt").write_text("\n\n")
    with pytest.raises(FileNotFoundError, match=r"splits/train.txt: lists no frames; write one frame per line"):
        FolderSegmentation(copy, "train", STREET_CLASSES)


def test_a_jpeg_mask_is_named_as_such(copy):
    mask = sorted((copy / "masks" / "train").rglob("*.png"))[0]
    mask.rename(mask.with_suffix(".jpg"))
    problems = find_pairs(copy, "train")[3]
    assert problems == [f"{mask.with_suffix('.jpg')}: a mask saved as JPEG; masks must be lossless PNGs (JPEG changes "
                        "the values at every edge): save it as PNG"]


def test_a_png_and_a_jpeg_of_one_frame_are_refused(copy):
    image = sorted((copy / "images" / "train").rglob("*.png"))[0]
    shutil.copy(image, image.with_suffix(".jpg"))
    with pytest.raises(FileNotFoundError, match=f"{image.with_suffix('')}.(png|jpg): and {image.stem}.(jpg|png) "
                                                "beside it are two files of one frame; keep one"):
        FolderSegmentation(copy, "train", STREET_CLASSES)


def test_an_empty_mask_file_is_named_when_the_split_is_opened(copy):
    from segdata.dataset import file_sizes

    mask = sorted((copy / "masks" / "val").rglob("*.png"))[1]
    mask.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{mask}: is empty \\(0 bytes\\)"):
        file_sizes(FolderSegmentation(copy, "val", STREET_CLASSES).masks)


def test_the_check_groups_a_repeated_problem_and_leaves_an_earlier_figure_alone(copy, tmp_path, capsys):
    figure = tmp_path / "classes.png"
    args = ["--data-root", str(copy), "--classes", str(copy / "classes.json"), "--figure", str(figure)]
    assert check.main(check.get_args_parser().parse_args(args)) == 0
    good = figure.read_bytes()
    assert "(replaced)" not in capsys.readouterr().out
    for path in (copy / "masks").rglob("*.png"):  # every mask holds a value the table lacks
        mask = np.zeros((64, 128), np.uint8)
        mask[:, :4] = 99
        write_png(path, mask)
    assert check.main(check.get_args_parser().parse_args(args)) == 1
    out, err = capsys.readouterr()
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert problems == [line for line in problems if "8 files" in line or "mask values not in" not in line]
    assert len(problems) == 1 and "8 files: mask values not in the class table (99: 256 px)" in problems[0]
    assert problems[0].count(".png") == 5 and "and 3 more" in problems[0]  # five of the eight files named
    assert "train: 4 frames, no pixel counted" in out and "not drawn" in out and f"{figure} is left as it was" in out
    assert figure.read_bytes() == good  # the honest figure of the earlier check stays


def test_the_check_says_when_it_replaces_its_figure(copy, tmp_path, capsys):
    figure = tmp_path / "classes.png"
    args = ["--data-root", str(copy), "--classes", str(copy / "classes.json"), "--figure", str(figure)]
    for _ in range(2):
        assert check.main(check.get_args_parser().parse_args(args)) == 0
    assert f"class frequencies: {figure} (replaced)" in capsys.readouterr().out


def test_group_problems_keeps_single_problems_as_they_are():
    grouped = check.group_problems([f"a{index}.png: mask values not in the class table ({index}: 3 px); add them"
                                    for index in range(2)] + ["b.png: has no mask (expected c.png)"])
    assert grouped == ["2 files: mask values not in the class table (0: 3 px) (the first; the same in a0.png, "
                       "a1.png); add them", "b.png: has no mask (expected c.png)"]



def test_a_listed_path_that_exists_as_written_is_that_file(copy, tmp_path):
    """An absolute path that exists is never swapped for a file of the same tail under --data-root."""
    elsewhere = tmp_path / "elsewhere" / "street"
    shutil.copytree(copy, elsewhere)
    frame = sorted((copy / "images" / "train").rglob("*.png"))[0].relative_to(copy / "images" / "train")
    image, mask = elsewhere / "images" / "train" / frame, elsewhere / "masks" / "train" / frame
    write_png(image, np.full((64, 128, 3), 7, np.uint8))  # other pixels than the root's file of that tail
    (copy / "splits").mkdir()
    (copy / "splits" / "train.txt").write_text(f"{image} {mask}\n")
    data = FolderSegmentation(copy, "train", STREET_CLASSES)
    assert data.images == [image] and data.masks == [mask]
    assert (data.read_arrays(0)[0] == 7).all()


def test_list_paths_with_spaces_and_a_frame_listed_twice(copy):
    frames = sorted((copy / "images" / "train").rglob("*.png"))[:2]
    spaced = []
    for frame in frames:
        relative = frame.relative_to(copy / "images" / "train")
        for top in ("images", "masks"):
            source = copy / top / "train" / relative
            target = source.with_name(source.stem + " copy.png")
            source.rename(target)
        spaced.append(f"images/train/{relative.with_name(relative.stem + ' copy.png')}")
    lines = [f"{spaced[0]} {spaced[0].replace('images/', 'masks/', 1)}",
             f"{spaced[1]}\t{spaced[1].replace('images/', 'masks/', 1)}"]
    (copy / "splits").mkdir()
    (copy / "splits" / "train.txt").write_text("\n".join(lines) + "\n")
    data = FolderSegmentation(copy, "train", STREET_CLASSES)
    assert [image.name for image in data.images] == [f"{frame.stem} copy.png" for frame in frames]
    (copy / "splits" / "train.txt").write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt: line 3 lists .* copy again \(line 1 has it\); remove one: "
                                                r"a frame listed twice is trained on twice as often"):
        FolderSegmentation(copy, "train", STREET_CLASSES)


def test_a_colour_mask_saved_as_a_palette_png_is_read_by_its_colours(copy):
    from PIL import Image

    from segdata.masks import MaskValueError, read_train_ids

    mask = sorted((copy / "masks" / "train").rglob("*.png"))[0]
    train_ids = np.array([[0, 1], [4, 255]], np.uint8)
    palette = [255, 255, 255, *STREET_CLASSES.colors[4], *STREET_CLASSES.colors[1], 0, 0, 0, *STREET_CLASSES.colors[0]]
    indices = np.array([[4, 2], [1, 3]], np.uint8)  # palette slots in another order than the classes
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette)
    picture.save(mask)
    assert read_train_ids(mask, STREET_CLASSES).tolist() == train_ids.tolist()
    picture.putpalette([9, 9, 9] * 5)  # colours of no class: read by its indices, and the error says so
    picture.save(mask)
    with pytest.raises(MaskValueError, match=r"mask values not in the class table .*\(a palette PNG, read by its "
                                             r"indices as PASCAL VOC's: its palette colours are not all the table's"):
        read_train_ids(mask, STREET_CLASSES)


def segnet_layout(source, root, lists=True):
    """``source``'s frames as SegNet ships CamVid: ROOT/{split}/ and ROOT/{split}annot/ of flat names, and with
    ``lists`` ROOT/{split}.txt naming them by another machine's absolute paths."""
    for split in ("train", "val", "test"):
        lines = []
        for image in sorted((source / "images" / split).rglob("*.png")):
            name = "_".join(image.relative_to(source / "images" / split).parts)
            (root / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / split / name)
            mask = source / "masks" / split / image.relative_to(source / "images" / split)
            if mask.exists():
                (root / f"{split}annot").mkdir(exist_ok=True)
                shutil.copy(mask, root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        if lists and (root / f"{split}annot").is_dir():
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_segnet_style_root_as_it_ships_opens_by_its_lists_or_its_folders(street, tmp_path):
    shipped = segnet_layout(street, tmp_path / "CamVid")
    data = FolderSegmentation(shipped, "train", STREET_CLASSES)
    assert data.source == f"the list {shipped / 'train.txt'}" and len(data) == 4
    assert data.images[0].parent == shipped / "train" and data.masks[0].parent == shipped / "trainannot"
    image, mask = data.read_arrays(0)
    assert image.shape[:2] == mask.shape and set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 4, 255}
    folders = segnet_layout(street, tmp_path / "NoLists", lists=False)
    data = FolderSegmentation(folders, "val", STREET_CLASSES)
    assert data.source == f"{folders / 'val'}/ and {folders / 'valannot'}/ (SegNet layout)" and data.has_labels
    assert [image.name for image in data.images] == [mask.name for mask in data.masks]


def test_a_wrong_data_root_names_the_likely_one(street, tmp_path):
    shipped = segnet_layout(street, tmp_path / "data" / "CamVid")
    for wrong, likely in ((tmp_path / "data", shipped), (street / "images", street)):
        with pytest.raises(FileNotFoundError, match=f"did you mean --data-root {likely}\\?"):
            FolderSegmentation(wrong, "train", STREET_CLASSES)


def test_list_lines_naming_moved_files_get_the_candidate_and_the_check_names_lines(street, tmp_path, capsys):
    """SegNet's lists copied into splits/ of an images/masks root: each line names train/ and trainannot/."""
    root = tmp_path / "street"
    shutil.copytree(street, root)
    (root / "splits").mkdir()
    names = [path.relative_to(root / "images" / "train") for path in sorted((root / "images" / "train").rglob("*.png"))]
    (root / "splits" / "train.txt").write_text("".join(
        f"/SegNet/CamVid/train/{name} /SegNet/CamVid/trainannot/{name}\n" for name in names))
    problems = find_pairs(root, "train")[3]
    first = (f"line 1 names /SegNet/CamVid/train/{names[0]}, which is neither under {root / 'splits'} nor under "
             f"{root}; did you mean images/train/{names[0]}? (fix the path)")
    assert problems[0] == f"{root / 'splits' / 'train.txt'}: {first}" and len(problems) == 8
    assert problems[1].endswith(f"did you mean masks/train/{names[0]}? (fix the path)")
    args = ["--data-root", str(root), "--classes", str(root / "classes.json"), "--figure", str(tmp_path / "f.png"),
            "--splits", "train"]
    assert check.main(check.get_args_parser().parse_args(args)) == 1
    grouped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: ")]
    assert grouped == [f"problem: {root / 'splits' / 'train.txt'}: 4 lines: {first} (the first; the same at lines 1, "
                       "2, 3, 4)"]


def test_the_check_counts_the_good_frames_of_a_split_with_one_bad_frame(copy, capsys):
    image = sorted((copy / "images" / "train").rglob("*.png"))[0]
    (copy / "masks" / "train" / image.relative_to(copy / "images" / "train")).unlink()
    args = ["--data-root", str(copy), "--classes", str(copy / "classes.json"), "--figure", str(copy / "f.png"),
            "--splits", "train"]
    assert check.main(check.get_args_parser().parse_args(args)) == 1
    out, err = capsys.readouterr()
    assert f"train: read from {copy / 'images' / 'train'}/ and {copy / 'masks' / 'train'}/\ntrain: 3 frames, " in out
    assert f"problem: {image}: has no mask" in err
