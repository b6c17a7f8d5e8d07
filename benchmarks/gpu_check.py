"""The one prepared GPU check: the GPU tier, inference, training throughput and the real training command.

Runs, in one command, for whenever a GPU is at hand for a few minutes (at most
8 on one GPU), each stage in its own process under its own time limit, so a
slow stage never loses the others' figures:

1. data: photo-like full-size synthetic frames (they decode like real
   Cityscapes frames), their masks and decoded cache; a second root whose train
   split repeats them to Cityscapes' 2975 frames (epochs of 371 batches of 8);
2. sync: the GPU tier's sync test, with sync debug mode "error" (the stack of
   any synchronizing call is in sync.log);
3. throughput: benchmarks/train_throughput.py, R50 OS16 batch 8 768x768 bf16
   channels_last: model alone (eager and compiled), the training loader (PNG and
   cache), the loader alone;
4. training: train_dlv3p.py with the defaults a user gets, for 450 iterations on
   the Cityscapes-size root (one epoch end inside): images/s and the pause at
   the epoch end;
5. inference: benchmarks/inference.py at 1024x2048;
6. tier: the rest of the GPU tier (make test-gpu).

Writes six files to --out (gpu_check.md: the table; gpu_check.log: every
stage's output; sync.log; throughput.csv, inference.csv, training_history.csv)
and prints the table at the end. ``--dry-run --device cpu`` runs every stage at a tiny size (the
test suite does, so the script stays runnable).

    make gpu-check                                              # outputs/gpu_check/
    PYTHONPATH=. python3 benchmarks/gpu_check.py --out "$OUT"  # on a machine without the project installed
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CITYSCAPES_TRAIN_FRAMES = 2975


@dataclass
class Sizes:
    """How big each stage runs: the real check, or the dry run."""

    height: int
    width: int
    train_frames: int
    val_frames: int
    repeated_frames: int
    crop: int
    batch: int
    iterations: int
    steps: int
    limits: dict[str, int] = field(default_factory=dict)
    warmup: int = 3


FULL = Sizes(1024, 2048, 8, 4, CITYSCAPES_TRAIN_FRAMES, 768, 8, 450, 30,
             {"data": 60, "sync": 60, "throughput": 130, "training": 90, "inference": 45, "tier": 75})
DRY = Sizes(64, 128, 4, 2, 4, 32, 2, 3, 1,
            {"data": 60, "sync": 120, "throughput": 180, "training": 120, "inference": 60, "tier": 120})


@dataclass
class Stage:
    name: str
    seconds: float
    status: str  # "ok", "failed (exit N)", "timed out after N s"
    figures: list[tuple[str, str]]


def run_stage(command: list[str], log: Path, limit: int, env: dict) -> tuple[str, float]:
    """Run ``command`` with its output appended to ``log``, killed (with its children) after ``limit`` seconds."""
    start = time.perf_counter()
    with open(log, "ab") as stream:
        stream.write(f"$ {' '.join(command)}\n".encode())
        stream.flush()
        process = subprocess.Popen(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"timed out after {limit} s", time.perf_counter() - start
    return ("ok" if code == 0 else f"failed (exit {code})"), time.perf_counter() - start


def python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


def pytest_summary(log: Path) -> str:
    """The last ``N passed, M failed ...`` line pytest printed."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if re.search(r"\d+ (passed|failed|skipped|error|deselected|tests? collected)", line)]
    return lines[-1].strip(" =") if lines else "no summary"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as stream:
        return list(csv.DictReader(stream))


def repeat_train_split(source: Path, target: Path, frames: int) -> None:
    """``target``: ``source``'s val and test as links, and a train split of ``frames`` frames that repeat
    ``source``'s under new names (every file of a frame linked: image, polygons, shipped and generated masks)."""
    from cityscapes.paths import GENERATED_DIR, image_files, stem_of

    for top in ("leftImg8bit", "gtFine", GENERATED_DIR):
        for split in ("val", "test"):
            if (source / top / split).exists():
                (target / top).mkdir(parents=True, exist_ok=True)
                (target / top / split).symlink_to(source / top / split, target_is_directory=True)
    stems = [stem_of(path) for path in image_files(source, "train")]
    for index in range(frames):
        stem = stems[index % len(stems)]
        city, _, frame = stem.split("_")
        new = f"{city}_{100000 + index:06d}_{frame}"
        for top in ("leftImg8bit", "gtFine", GENERATED_DIR):
            for path in sorted((source / top / "train" / city).glob(f"{stem}_*")):
                link = target / top / "train" / city / path.name.replace(stem, new)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)


def prepare_data(work: Path, sizes: Sizes, env: dict, log: Path) -> str:
    """Photo-like frames, their masks and cache (``work/frames``) and the Cityscapes-size root (``work/epochs``)."""
    frames = work / "frames"
    code = subprocess.run(python("-c", (
        "import sys; from cityscapes.synthetic import write_dataset; "
        f"write_dataset(sys.argv[1], {sizes.train_frames}, {sizes.height}, {sizes.width}, seed=7, "
        f"splits=('train', 'val'), photo_like=True)"), str(frames)), cwd=REPO, env=env,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT).returncode
    if code:
        return f"failed (exit {code})"
    for command in (python("-m", "cityscapes.generate_gt", "--data-root", str(frames)),
                    python("-m", "cityscapes.cache", "--data-root", str(frames))):
        code = subprocess.run(command, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT).returncode
        if code:
            return f"failed (exit {code})"
    # fewer val frames than train frames: val is scored at every validation
    for path in sorted((frames / "leftImg8bit" / "val").rglob("*.png"))[sizes.val_frames:]:
        stem = "_".join(path.name.split("_")[:3])
        for other in frames.rglob(f"{stem}_*"):
            if "/val/" in other.as_posix():
                other.unlink()
    repeat_train_split(frames, work / "epochs", sizes.repeated_frames)
    return "ok"


def throughput_figures(rows: list[dict]) -> list[tuple[str, str]]:
    figures, model = [], {}
    for row in rows:
        images = float(row["images_per_s"])
        if row["mode"] == "model":
            model[row["variant"]] = images
            figures.append((f"model alone, {row['variant']}", f"{images:.1f} img/s"))
    eager = model.get("channels_last")
    for row in rows:
        images = float(row["images_per_s"])
        source = "cache" if row["cache"] == "True" else "PNG"
        if row["mode"] == "loader":
            share = f" ({100 * images / eager:.0f}% of the model alone)" if eager else ""
            figures.append((f"training loader, {source}, {row['workers']} workers", f"{images:.1f} img/s{share}"))
        elif row["mode"] == "data":
            figures.append((f"loader alone, {source}, {row['workers']} workers",
                            f"{images:.1f} img/s ({float(row['images_per_s_per_worker']):.1f} per worker)"))
    if eager and "channels_last+compile" in model:
        figures.append(("compile / eager, model alone", f"{model['channels_last+compile'] / eager:.2f}x"))
    return figures


def training_figures(run: Path, log: Path, batch: int) -> list[tuple[str, str]]:
    rows = read_rows(run / "history.csv")
    figures = []
    if rows:
        data, compute = float(rows[-1]["data_time"]), float(rows[-1]["compute_time"])
        figures.append(("train_dlv3p.py, defaults", f"{batch / (data + compute):.1f} img/s ({1000 * data:.1f} ms "
                                                     f"data + {1000 * compute:.1f} ms compute per iteration)"))
    text = log.read_text(errors="replace")
    for pattern, name in ((r"run \S+: .*\((\w+), (\w+), (\d+) loader workers\)", "precision, format, workers"),
                          (r"epoch ends: (.*)", "epoch-end pause")):
        found = re.findall(pattern, text)
        if found:
            figures.append((name, ", ".join(found[-1]) if isinstance(found[-1], tuple) else found[-1]))
    return figures


def main(args: argparse.Namespace) -> list[Stage]:
    sizes = DRY if args.dry_run else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    stages: list[Stage] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as temporary:
        work = Path(temporary)
        start = time.perf_counter()
        log = out / "gpu_check.log"
        status = prepare_data(work, sizes, env, log)
        stages.append(Stage("data", time.perf_counter() - start, status,
                            [("frames", f"{sizes.train_frames} train + {sizes.val_frames} val, "
                                        f"{sizes.height}x{sizes.width} photo-like; train repeated to "
                                        f"{sizes.repeated_frames}")]))
        if status != "ok":
            return finish(stages, out, args)
        frames, epochs = work / "frames", work / "epochs"
        tier = python("-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-m", "cuda", "tests/test_cuda.py")
        if args.dry_run:
            tier.append("--collect-only")
        status, seconds = run_stage([*tier, "-k", "synchronizing"], out / "sync.log", sizes.limits["sync"], env)
        stages.append(Stage("sync", seconds, status, [("sync tests", pytest_summary(out / "sync.log"))]))

        crop, batch = str(sizes.crop), str(sizes.batch)
        common = ["--device", args.device, "--backbones", "resnet50", "--output-strides", "16", "--crop", crop, crop,
                  "--batch", batch, "--warmup", str(max(1, sizes.warmup)), "--steps", str(sizes.steps), "--data-root",
                  str(frames),
                  "--plot", str(work / "plot.png")]
        precision = ["--precisions", "bf16" if args.device.startswith("cuda") else "fp32"]
        runs = [["--modes", "model", "--variants", "channels_last", "channels_last+compile"],
                ["--modes", "loader", "data", "--variants", "channels_last"],
                ["--modes", "loader", "data", "--variants", "channels_last", "--cache"]]
        if args.dry_run:  # each path once, at the least cost (the benchmark's own test covers the rest)
            runs = [["--modes", "model", "data", "--variants", "channels_last", "--cache"]]
        rows, statuses, seconds = [], [], 0.0
        for index, extra in enumerate(runs):
            csv_path = work / f"throughput{index}.csv"
            status, spent = run_stage(python("benchmarks/train_throughput.py", *common, *precision, *extra, "--csv",
                                             str(csv_path)), log, sizes.limits["throughput"] // len(runs), env)
            rows += read_rows(csv_path)
            statuses.append(status)
            seconds += spent
        if rows:
            with open(out / "throughput.csv", "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        stages.append(Stage("throughput", seconds, ", ".join(sorted(set(statuses))), throughput_figures(rows)))

        save_dir = work / "saved"
        training_log = work / "training.log"
        status, seconds = run_stage(python(
            "train_dlv3p.py", "--data-root", str(epochs), "--device", args.device, "--save-dir", str(save_dir),
            "--run-name", "gpu_check", "--backbone", "resnet50", "--output-stride", "16", "--pretrained-backbone",
            "none", "--crop-size", crop, "--batch-size", batch, "--iters", str(sizes.iterations), "--val-interval",
            str(10 * sizes.iterations), "--log-every", "50", "--no-tensorboard"), training_log,
            sizes.limits["training"], env)
        with open(log, "ab") as stream:
            stream.write(training_log.read_bytes())
        stages.append(Stage("training", seconds, status,
                            training_figures(save_dir / "gpu_check", training_log, sizes.batch)))
        if (save_dir / "gpu_check" / "history.csv").exists():
            (out / "training_history.csv").write_bytes((save_dir / "gpu_check" / "history.csv").read_bytes())

        height, width = (str(sizes.height), str(sizes.width))
        status, seconds = run_stage(python(
            "benchmarks/inference.py", "--device", args.device, "--height", height, "--width", width,
            "--backbones", "resnet50", *([] if args.dry_run else ["resnet101"]), "--output-strides", "16",
            *([] if args.dry_run else ["8"]), "--precisions", "bf16" if args.device.startswith("cuda") else "fp32",
            "--channels-last", "--warmup", str(sizes.warmup), "--runs", str(sizes.steps), "--csv",
            str(out / "inference.csv"), "--plot",
            str(work / "inference.png")), log, sizes.limits["inference"], env)
        stages.append(Stage("inference", seconds, status, [
            (f"{row['backbone']} OS{row['output_stride']} {row['precision']}",
             f"{float(row['median_ms']):.1f} ms per image")
            for row in read_rows(out / "inference.csv")]))

        tier_log = work / "tier.log"
        status, seconds = run_stage([*tier, "-k", "not synchronizing"], tier_log, sizes.limits["tier"], env)
        with open(log, "ab") as stream:
            stream.write(tier_log.read_bytes())
        stages.append(Stage("tier", seconds, status, [("GPU tier", pytest_summary(tier_log))]))
    return finish(stages, out, args)


def finish(stages: list[Stage], out: Path, args: argparse.Namespace) -> list[Stage]:
    """Print the table and write it to gpu_check.md with the date, the device and the versions."""
    import torch

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [f"# GPU check, {datetime.date.today().isoformat()}", "",
             f"{device}, torch {torch.__version__}, Python {platform.python_version()}, "
             f"{len(os.sched_getaffinity(0))} CPUs{' (dry run)' if args.dry_run else ''}", "",
             "| stage | status | seconds | figure | value |", "|---|---|---|---|---|"]
    for stage in stages:
        for index, (name, value) in enumerate(stage.figures or [("", "")]):
            head = (stage.name, stage.status, f"{stage.seconds:.0f}") if index == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {name} | {value} |")
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    print(text)
    return stages


def get_args_parser() -> argparse.ArgumentParser:
    from bench_cli import writable_folder
    from deeplabv3plus.cli import default_device, device
    from segdata.flags import Parser

    parser = Parser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=writable_folder, default=Path("outputs/gpu_check"),
                        help="folder of the (at most 8) files")
    parser.add_argument("--device", type=device, default=default_device(),
                        help="cuda or cuda:N; cpu only with --dry-run")
    parser.add_argument("--dry-run", action="store_true", help="every stage at a tiny size (tests the script)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked before any work: a GPU to check (the CPU only for the dry run)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda") and not args.dry_run:
        parser.error("argument --device: no CUDA GPU to check here (the check's figures are a GPU's); run it on a "
                     "GPU machine, or add --dry-run to try the script on the CPU")
    return args


if __name__ == "__main__":
    stages = main(parse_args())
    raise SystemExit(0 if all(stage.status == "ok" for stage in stages) else 1)
