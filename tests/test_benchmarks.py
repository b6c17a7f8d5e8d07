"""The benchmark scripts run end to end at a tiny size (their figures come from real runs, not from here)."""

import csv

import pytest
import train_throughput  # benchmarks/ is on pytest's pythonpath


def test_train_throughput_model_and_loader(tiny_root, tmp_path):
    args = train_throughput.get_args_parser().parse_args([
        "--device", "cpu", "--backbones", "resnet50", "--output-strides", "16", "--precisions", "fp32",
        "--variants", "eager", "--modes", "model", "loader", "--crop", "32", "64", "--batch", "2", "--warmup", "1",
        "--steps", "2", "--workers", "0", "--data-root", str(tiny_root), "--threads", "1",
        "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")])
    rows = train_throughput.main(args)
    assert [row["mode"] for row in rows] == ["model", "loader"]
    for row in rows:
        assert row["images_per_s"] > 0 and row["peak_memory_mib"] > 100
        assert row["data_ms_per_step"] >= 0 and row["compute_ms_per_step"] > 0
    with open(tmp_path / "t.csv") as stream:
        assert [line["mode"] for line in csv.DictReader(stream)] == ["model", "loader"]
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_loader_mode_needs_a_data_root(tmp_path):
    args = train_throughput.get_args_parser().parse_args(
        ["--device", "cpu", "--modes", "loader", "--precisions", "fp32"]
    )
    with pytest.raises(SystemExit, match="needs --data-root"):
        train_throughput.main(args)


def test_png_decoding_table(tiny_root, tmp_path):
    import png_decoding

    rows = png_decoding.main(png_decoding.get_args_parser().parse_args([
        "--data-root", str(tiny_root), "--files", "2", "--repeats", "1", "--csv", str(tmp_path / "png.csv")]))
    kinds = {row["kind"] for row in rows}
    assert kinds == {"camera image (RGB 8-bit)", "trainId mask (grey 8-bit)", "colour mask (RGBA 8-bit)",
                     "instanceIds (grey 16-bit)"}
    project = [row for row in rows if row["decoder"] == "project (decode_png)"]
    assert len(project) == 4 and all(row["identical_pixels"] == "yes" and row["ms_per_file"] > 0 for row in project)
    with open(tmp_path / "png.csv") as stream:
        assert len(list(csv.DictReader(stream))) == len(rows)


def test_data_loading_table_rebuilds_the_opencv_pipeline(tiny_copy, tmp_path):
    import data_loading

    from cityscapes.cache import build_cache

    build_cache(tiny_copy, ["train"], progress=False)
    rows = data_loading.main(data_loading.get_args_parser().parse_args([
        "--data-root", str(tiny_copy), "--crop", "32", "48", "--samples", "2", "--workers", "0",
        "--csv", str(tmp_path / "d.csv")]))
    names = [row["pipeline"] for row in rows]
    assert names[:2] == ["decode floor, OpenCV (before)", "decode floor (2 PNGs, no transform)"]
    assert set(data_loading.PIPELINES) <= set(names) and all(row["samples_per_s"] > 0 for row in rows)
