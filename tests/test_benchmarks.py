"""The benchmark scripts run end to end at a tiny size (their figures come from real runs, not from here)."""

import csv
import re

import pytest
import train_throughput  # benchmarks/ is on pytest's pythonpath


def test_train_throughput_model_loader_and_data_modes(tiny_root, tmp_path):
    args = train_throughput.get_args_parser().parse_args([
        "--device", "cpu", "--backbones", "resnet50", "--output-strides", "16", "--precisions", "fp32",
        "--variants", "eager", "--modes", "model", "loader", "data", "--crop", "32", "64", "--batch", "2",
        "--warmup", "1", "--steps", "2", "--workers", "0", "1", "--data-root", str(tiny_root), "--threads", "1",
        "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")])
    rows = train_throughput.main(args)
    assert [(row["mode"], row["workers"]) for row in rows] == [("model", 0), ("loader", 0), ("loader", 1),
                                                               ("data", 0), ("data", 1)]
    for row in rows:
        assert row["images_per_s"] > 0 and row["data_ms_per_step"] >= 0
        if row["mode"] != "data":
            assert row["peak_memory_mib"] > 100 and row["compute_ms_per_step"] > 0
    one_worker = rows[-1]
    assert one_worker["images_per_s_per_worker"] == one_worker["images_per_s"] and rows[-2]["backbone"] == ""
    with open(tmp_path / "t.csv") as stream:
        assert [line["mode"] for line in csv.DictReader(stream)] == ["model", "loader", "loader", "data", "data"]
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_loader_modes_warm_up_until_every_worker_delivered_and_time_a_steady_window():
    args = train_throughput.get_args_parser().parse_args([
        "--device", "cpu", "--backbones", "resnet50", "--output-strides", "16", "--variants", "eager", "--modes",
        "model", "data", "--precisions", "fp32", "--workers", "3", "--warmup", "1",
        "--steps", "2", "--data-root", "x"])
    configs = list(train_throughput.configurations(args))
    assert [(config["mode"], config["warmup"], config["steps"]) for config in configs] == [
        ("model", 1, 2), ("data", 6, 12)]  # data once: it has no model to vary


def test_loader_mode_needs_a_data_root(tmp_path):
    args = train_throughput.get_args_parser().parse_args(
        ["--device", "cpu", "--modes", "loader", "--precisions", "fp32"]
    )
    with pytest.raises(SystemExit, match="need --data-root"):
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


def test_the_gpu_check_runs_every_stage_as_a_dry_run_on_the_cpu(tmp_path):
    """make gpu-check's script at a tiny size on the CPU: every stage runs, six files, one table."""
    import gpu_check

    stages = gpu_check.main(gpu_check.get_args_parser().parse_args(["--dry-run", "--device", "cpu", "--out",
                                                                    str(tmp_path)]))
    assert [stage.name for stage in stages] == ["data", "sync", "throughput", "training", "inference", "tier"]
    assert all(stage.status == "ok" for stage in stages), [(stage.name, stage.status) for stage in stages]
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["gpu_check.log", "gpu_check.md", "inference.csv", "sync.log", "throughput.csv",
                       "training_history.csv"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "(dry run)" in table and "epoch-end pause" in table and "loader alone, cache, 1 workers" in table
    assert "train_dlv3p.py, defaults" in table and "float32, contiguous, 1" in table
    assert re.search(r"\| sync \| ok \| \d+ \| sync tests \| 4/\d+ tests collected", table)  # 4 precisions/formats


def test_checkpoint_write_times_both_ways(tmp_path, capsys):
    import checkpoint_write

    rows = checkpoint_write.main(checkpoint_write.parse_args(["--repeats", "1", "--dir", str(tmp_path)]))
    assert [row["way"] for row in rows] == list(checkpoint_write.WAYS)
    assert all(row["write_s"] > 0 and row["copy_s"] > 0 and row["size_mib"] > 100 for row in rows)  # with momentum
    assert rows[0]["size_mib"] == pytest.approx(rows[1]["size_mib"], rel=0.01)  # the same checkpoint either way
    assert "streamed into the file" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [(["--repeats", "0"], "argument --repeats: must be a positive integer, got 0"),
                                          (["--dir", "missing"], "argument --dir: missing is not a folder")])
def test_checkpoint_write_refuses_bad_flags_in_one_line(argv, message, capsys):
    import checkpoint_write

    with pytest.raises(SystemExit) as stop:
        checkpoint_write.parse_args(argv)
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and "Traceback" not in error


BENCHMARK_FLAGS = [  # (script, flags, what the one line says)
    ("train_throughput", ["--batch", "0"], "argument --batch: must be an integer from 2 to 1024, got 0"),
    ("train_throughput", ["--crop", "0", "64"], "argument --crop: must be an integer from 1 to 4096, got 0"),
    ("train_throughput", ["--backbones", "resnet51"], "argument --backbones: invalid choice: 'resnet51'"),
    ("train_throughput", ["--output-strides", "32"], "argument --output-strides: invalid choice: 32"),
    ("train_throughput", ["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    ("train_throughput", ["--modes", "data", "--data-root", "/no/such/root"], "argument --data-root: /no/such/root: "
                                                                              "no such folder"),
    ("inference", ["--runs", "-1"], "argument --runs: must be a positive integer, got -1"),
    ("inference", ["--modes", "slide", "--crop", "64", "64", "--stride", "128", "128"], "argument --stride: [128,"),
    ("data_loading", ["--data-root", "/no/such/root"], "argument --data-root: /no/such/root: no such folder"),
    ("png_decoding", ["--files", "0"], "argument --files: must be a positive integer, got 0"),
    ("generate_gt", ["--workers", "0"], "argument --workers: must be a positive integer, got 0"),
    ("gpu_check", ["--device", "cpu"], "argument --device: no CUDA GPU to check here"),
    ("gpu_check", ["--dry-run", "--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N, got 'gpu'"),
]


@pytest.mark.parametrize("script, flags, message", BENCHMARK_FLAGS,
                         ids=[f"{script} {' '.join(flags)}" for script, flags, _ in BENCHMARK_FLAGS])
def test_every_benchmark_checks_its_flags_before_any_work(script, flags, message, capsys):
    import importlib

    module = importlib.import_module(script)
    parse = getattr(module, "parse_args", None) or module.get_args_parser().parse_args
    with pytest.raises(SystemExit) as exit_:
        parse(flags)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_the_gpu_check_refuses_a_missing_gpu_and_an_out_that_is_a_file_at_once(tmp_path, capsys):
    import gpu_check
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (tmp_path / "a_file").write_text("")
    for flags, message in ((["--device", "cuda"], "argument --device: cuda: no CUDA GPU is available here"),
                           (["--dry-run", "--device", "cpu", "--out", str(tmp_path / "a_file")],
                            f"argument --out: {tmp_path / 'a_file'} is a file, not a folder")):
        with pytest.raises(SystemExit) as exit_:
            gpu_check.parse_args(flags)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
