"""The fake-CUDA tier: the CUDA code path of the real entry points on the CPU (see tests/fake_cuda.py).

Runs in ``make test``; ``pytest -m fake_cuda`` runs it alone. The first part
shows the harness catches the CUDA-only mistakes it is for; the second runs
train, test and predict with ``--device cuda`` and asserts a training step that
never waits on the host.
"""

import json
import shutil
import warnings
import zipfile

import pytest
import torch
import torch.nn.functional as F
from fake_cuda import SYNC_DEBUG_PROTOTYPE_WARNING, SYNC_MESSAGE, FakeCudaTensor
from helpers import interrupt_training_at_epoch, train_args

import predict_dlv3p
import test_dlv3p
import train_dlv3p
from deeplabv3plus import assembly
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.engine import evaluate
from deeplabv3plus.history import read_history
from deeplabv3plus.metrics import ConfusionMatrix

pytestmark = pytest.mark.fake_cuda


# --- the harness catches what it is for: each mistake planted in a small function, run on the fake device ---

def planted_metrics_on_the_host(predictions, targets):
    matrix = torch.zeros(19, 19, dtype=torch.int64)  # the accumulator stays on the CPU
    matrix += torch.bincount(targets.flatten() * 19 + predictions.flatten(), minlength=361).reshape(19, 19)  # planted


def planted_loss_weights_on_the_host(logits, targets):
    weights = torch.ones(19)  # class weights made on the CPU
    return F.cross_entropy(logits, targets, weight=weights)  # planted


def planted_accumulator_on_the_host(losses):
    total = torch.zeros(1)  # a CPU accumulator of GPU losses
    for loss in losses:
        total += loss  # planted


def planted_scalar_accumulator_on_the_host(losses):
    loss_sum = torch.zeros((), dtype=torch.float64)  # a 0-dim float64 accumulator made on the CPU
    for loss in losses:
        loss_sum += loss  # planted: a CPU tensor as the output of an in-place op on device values


def planted_stack_with_a_host_scalar(loss):
    return torch.stack([loss, torch.tensor(0.0)])  # planted: stack/cat take no CPU tensor, 0-dim or not


def planted_blocking_scalar_copy(running):
    running.copy_(torch.tensor(0.0))  # planted: a 0-dim host-to-device copy_ waits for the stream


def planted_host_scalar_in_where(is_first, first_step, step):
    return torch.where(is_first, torch.tensor(step), first_step)  # planted: where copies the CPU scalar in, blocking


def planted_host_indices(values):
    return values[torch.arange(2)]  # planted: CPU indices are copied to the device, blocking


def planted_mask_left_on_the_host(predictions, targets):
    return (predictions == targets.cpu()).sum()  # planted: the mask moved back to the CPU


def planted_integer_matmul(matrix, class_to_category):
    one_hot = F.one_hot(class_to_category, 7)
    return one_hot.T @ matrix @ one_hot  # planted: int64 matmul (CUDA has no integer mm)


def planted_numpy_of_a_gpu_tensor(predictions):
    return predictions.numpy()  # planted


def planted_read_before_synchronize(loss):
    on_host = loss.to("cpu", non_blocking=True)
    return float(on_host)  # planted: read before torch.cuda.synchronize()


def planted_scaler_step_before_backward(model, images):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    loss = model(images).float().mean()
    scaler.step(optimizer)  # planted: before scaler.scale(loss).backward()
    scaler.scale(loss).backward()


def planted_line(function) -> int:
    """The line number of the statement marked ``# planted`` in ``function``."""
    import inspect

    lines, first = inspect.getsourcelines(function)
    return first + next(index for index, line in enumerate(lines) if "# planted" in line)


def cuda_batch(classes=19):
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, classes, (2, 4, 6), generator=generator).to("cuda")
    predictions = torch.randint(0, classes, (2, 4, 6), generator=generator).to("cuda")
    return predictions, targets


PLANTED = {
    "metrics": (lambda: planted_metrics_on_the_host(*cuda_batch()), planted_metrics_on_the_host,
                RuntimeError, "Expected all tensors to be on the same device"),
    "loss": (lambda: planted_loss_weights_on_the_host(torch.randn(2, 19, 4, 6, device="cuda"), cuda_batch()[1]),
             planted_loss_weights_on_the_host, RuntimeError, "Expected all tensors to be on the same device"),
    "accumulator": (lambda: planted_accumulator_on_the_host([torch.ones((), device="cuda")] * 2),
                    planted_accumulator_on_the_host, RuntimeError, "Expected all tensors to be on the same device"),
    "mask": (lambda: planted_mask_left_on_the_host(*cuda_batch()), planted_mask_left_on_the_host, RuntimeError,
             "Expected all tensors to be on the same device"),
    "int64 matmul": (lambda: planted_integer_matmul(torch.ones(19, 19, dtype=torch.int64, device="cuda"),
                                                    torch.arange(19, device="cuda") % 7),
                     planted_integer_matmul, RuntimeError, "\"mm_cuda\" not implemented for 'Long'"),
    "numpy": (lambda: planted_numpy_of_a_gpu_tensor(cuda_batch()[0]), planted_numpy_of_a_gpu_tensor, TypeError,
              "can't convert cuda:0 device type tensor to numpy"),
    "non_blocking read": (lambda: planted_read_before_synchronize(torch.ones((), device="cuda")),
                          planted_read_before_synchronize, RuntimeError,
                          "non_blocking device-to-host copy .* before torch.cuda.synchronize"),
    "0-dim accumulator": (lambda: planted_scalar_accumulator_on_the_host([torch.ones((), device="cuda")] * 2),
                          planted_scalar_accumulator_on_the_host, RuntimeError,
                          "Expected all tensors to be on the same device"),
    "stack with a host scalar": (lambda: planted_stack_with_a_host_scalar(torch.ones((), device="cuda")),
                                 planted_stack_with_a_host_scalar, RuntimeError,
                                 "Expected all tensors to be on the same device"),
    "0-dim blocking copy": (lambda: planted_blocking_scalar_copy(torch.ones((), device="cuda")),
                            planted_blocking_scalar_copy, RuntimeError,
                            "synchronizing CUDA operation: blocking host-to-device copy"),
    "host scalar in where": (lambda: planted_host_scalar_in_where(torch.ones((), dtype=torch.bool, device="cuda"),
                                                                  torch.zeros((), dtype=torch.int64, device="cuda"), 3),
                             planted_host_scalar_in_where, RuntimeError,
                             "synchronizing CUDA operation: blocking host-to-device copy"),
    "host indices": (lambda: planted_host_indices(torch.ones(4, device="cuda")), planted_host_indices, RuntimeError,
                     "synchronizing CUDA operation: blocking host-to-device copy"),
    "scaler order": (lambda: planted_scaler_step_before_backward(torch.nn.Conv2d(3, 2, 1).to("cuda"),
                                                                 torch.randn(1, 3, 4, 4, device="cuda")),
                     planted_scaler_step_before_backward, AssertionError, "_scale is None"),
}


@pytest.mark.parametrize("mistake", list(PLANTED))
def test_the_harness_catches_a_planted_cuda_only_mistake(fake_cuda, mistake):
    """Each mistake raises where it is made: CUDA's error, or (a sync) the error of sync debug mode "error"."""
    run, function, error, message = PLANTED[mistake]
    if message.startswith("synchronizing"):
        torch.cuda.set_sync_debug_mode("error")
    with pytest.raises(error, match=message) as caught:
        run()
    assert any(entry.lineno + 1 == planted_line(function) for entry in caught.traceback), caught.traceback


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_each_planted_mistake_passes_unnoticed_on_the_cpu():
    """Without the harness the same code runs on the CPU in silence: the mistakes are CUDA-only."""
    predictions, targets = torch.randint(0, 19, (2, 4, 6)), torch.randint(0, 19, (2, 4, 6))
    planted_metrics_on_the_host(predictions, targets)
    planted_loss_weights_on_the_host(torch.randn(2, 19, 4, 6), targets)
    planted_accumulator_on_the_host([torch.ones(())] * 2)
    planted_mask_left_on_the_host(predictions, targets)
    planted_integer_matmul(torch.ones(19, 19, dtype=torch.int64), torch.arange(19) % 7)
    planted_scalar_accumulator_on_the_host([torch.ones(())] * 2)
    planted_stack_with_a_host_scalar(torch.ones(()))
    planted_blocking_scalar_copy(torch.ones(()))
    planted_host_scalar_in_where(torch.ones((), dtype=torch.bool), torch.zeros((), dtype=torch.int64), 3)
    planted_host_indices(torch.ones(4))
    planted_numpy_of_a_gpu_tensor(predictions)
    planted_read_before_synchronize(torch.ones(()))
    planted_scaler_step_before_backward(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4))  # the scaler disables itself


def test_tensors_say_cuda_and_compute_real_values(fake_cuda):
    images = torch.arange(6.0).reshape(2, 3).cuda()
    assert isinstance(images, FakeCudaTensor) and images.device == torch.device("cuda", 0) and images.is_cuda
    assert (images * 2).sum().cpu().item() == 30.0
    assert torch.zeros(2, device="cuda").device.type == "cuda"
    assert (images.cpu() + 1).device.type == "cpu"


def test_turning_sync_debug_mode_on_warns_as_torch_does(fake_cuda):
    """torch warns, in words that say "synchronizing", when the mode is turned on: a sync test that counts every
    warning holding that word fails on that warning alone (the likely cause of the GPU tier's first failure of its
    sync test). A sync is what starts with SYNC_MESSAGE."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        (torch.ones((), device="cuda") + 1).sum()
        torch.cuda.set_sync_debug_mode("default")
    assert [str(warning.message) for warning in caught] == [SYNC_DEBUG_PROTOTYPE_WARNING]
    assert "synchroniz" in SYNC_DEBUG_PROTOTYPE_WARNING and not SYNC_DEBUG_PROTOTYPE_WARNING.startswith(SYNC_MESSAGE)


def count_of(syncs, kind):
    return sum(sync.kind == kind for sync in syncs)


def test_the_harness_counts_host_device_syncs_with_their_line(fake_cuda):
    values = torch.tensor([0.0, 2.0, 3.0]).pin_memory()
    with fake_cuda.count() as syncs:
        on_device = values.to("cuda", non_blocking=True)  # pinned + non_blocking: no wait
        mask = on_device > 1
        on_device.sum().item()
        on_device[mask].sum()  # boolean-mask indexing sizes its output on the host
        torch.bincount(on_device.long())
        on_device.tolist()
        torch.tensor([1.0], device="cuda")
        values.to("cuda")  # blocking
    assert [sync.kind for sync in syncs] == ["item()", "boolean-mask indexing", "bincount()", "tolist()",
                                             "torch.tensor(..., device=cuda)", "blocking host-to-device copy"]
    assert syncs[0].where.startswith("tests/test_fake_cuda.py:")


# --- the real entry points with --device cuda ---

def train(root, save_dir, *extra, iterations=3, run_name="fake", workers: int | None = 0):
    """train_dlv3p with --device cuda at a tiny size; ``workers=None``: the default number of loader workers."""
    return train_dlv3p.main(train_args(root, save_dir, *extra, crop_size=(32, 32), workers=workers, device="cuda",
                                       run_name=run_name, val_every=None, log_every=100, iters=iterations,
                                       val_batch_size=6))


def spy_on_steps(monkeypatch, fake_cuda) -> list[int]:
    """The number of syncs recorded so far at each training step's loss."""
    marks = []
    build_criterion = assembly.build_criterion

    def counting(config):
        criterion = build_criterion(config)

        def loss(outputs, target):
            marks.append(len(fake_cuda.syncs))
            return criterion(outputs, target)

        return loss

    monkeypatch.setattr(assembly, "build_criterion", counting)
    return marks


@pytest.fixture(scope="module")
def steps_root(learn_root, tmp_path_factory):
    """learn_root's 12 train frames (6 steps of 2 in an epoch) with 2 val frames: the end-of-run validation is not
    what these tests look at, and float16 on a CPU is slow."""
    root = tmp_path_factory.mktemp("steps") / "cityscapes"
    shutil.copytree(learn_root, root)
    for image in sorted((root / "leftImg8bit" / "val").rglob("*.png"))[2:]:
        stem = image.name.removesuffix("_leftImg8bit.png")
        for path in root.rglob(f"{stem}_*"):
            if "/val/" in path.as_posix():
                path.unlink()
    return root


@pytest.mark.parametrize("extra", [["--no-amp", "--no-channels-last"], ["--amp-dtype", "float16", "--no-tensorboard"],
                                   ["--no-tensorboard"]],
                         ids=["fp32", "fp16-scaler", "defaults"])  # TensorBoard previews: on fp32 alone
def test_a_training_step_on_cuda_never_waits_on_the_host(fake_cuda, steps_root, tmp_path, monkeypatch, extra):
    marks = spy_on_steps(monkeypatch, fake_cuda)
    assert train(steps_root, tmp_path, *extra, workers=None) == 0  # the default workers, pinned memory
    assert len(marks) == 3  # one epoch of 6 steps cut at --iters 3; the loss is read at its end only
    between_steps = fake_cuda.syncs[marks[0]:marks[-1]]  # step 1's backward and update .. step 3's forward
    assert between_steps == [], between_steps
    history = read_history(tmp_path / "fake")
    assert history[-1]["iteration"] == 3 and torch.isfinite(torch.tensor(history[-1]["train_loss"]))
    checkpoint = load_checkpoint(tmp_path / "fake" / "last.pth")
    assert checkpoint["args"]["device"] == "cuda" and checkpoint["optimizer"]["state"]  # momentum buffers exist
    if "float16" in extra:
        assert checkpoint["scaler"]["_growth_tracker"] >= 0 and checkpoint["optimizer"]["param_groups"][0]["fused"]
    if extra == ["--no-tensorboard"]:  # the defaults on a GPU that runs bfloat16 natively
        assert checkpoint["args"]["amp_dtype"] == "bfloat16" and checkpoint["args"]["channels_last"]


def test_log_every_reads_the_device_once_per_period(fake_cuda, steps_root, tmp_path, monkeypatch):
    marks = spy_on_steps(monkeypatch, fake_cuda)
    assert train(steps_root, tmp_path, "--log-every", "2", "--no-amp", iterations=4) == 0  # fp32: 3x faster here
    period = fake_cuda.syncs[marks[0]:marks[2]]  # steps 1 and 2: the read after step 2
    assert period and all(sync.where.startswith("deeplabv3plus/engine.py") for sync in period), period
    assert fake_cuda.syncs[marks[2]:marks[3]] == []  # step 3 reads nothing


def test_evaluation_syncs_per_batch_are_the_timing_ones(fake_cuda, tiny_root):
    """Per batch: the two torch.cuda.synchronize() calls that time the model, nothing else; per split: the totals."""
    from cityscapes.dataset import CityscapesSegmentation
    from deeplabv3plus.model import build_model
    from segdata.transforms import eval_transforms

    model = build_model("resnet50", 16, 19, None).to("cuda")
    dataset = CityscapesSegmentation(tiny_root, "val", eval_transforms())
    counts = []
    for images in (1, 3):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(images)), pin_memory=True)
        before, synchronizations = len(fake_cuda.syncs), fake_cuda.synchronize_calls
        result = evaluate(model, loader, torch.device("cuda"), 19)
        counts.append((fake_cuda.syncs[before:], fake_cuda.synchronize_calls - synchronizations))
        assert result.images == images and int(result.confusion.matrix.sum()) > 0
    (one_batch, one_timing), (three_batches, three_timing) = counts
    assert len(three_batches) == len(one_batch) <= 3, three_batches  # the split's totals, read once at the end
    assert all(sync.where.startswith("deeplabv3plus/engine.py") for sync in three_batches)
    assert three_timing - one_timing == 2 * 2


def test_confusion_matrix_on_cuda_waits_for_nothing(fake_cuda):
    confusion = ConfusionMatrix(3, 255, "cuda")
    target = torch.tensor([[0, 1, 255], [2, 2, 1]]).cuda()
    prediction = torch.tensor([[0, 2, 1], [2, 0, 1]]).cuda()
    with fake_cuda.count() as syncs:
        confusion.update(target, prediction)
    assert syncs == []
    assert confusion.matrix.cpu().tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    with pytest.raises(RuntimeError, match="outside 0..2"):  # asynchronous on a GPU, raised here at once
        confusion.update(torch.tensor([[3]]).cuda(), torch.tensor([[0]]).cuda())


def test_resume_on_cuda(fake_cuda, tiny_root, tmp_path, monkeypatch):
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    common = ["--amp", "--amp-dtype", "bfloat16", "--val-every", "1", "--val-frames", "1"]  # bf16: slow on a CPU
    assert train(tiny_root, tmp_path, *common, iterations=2) == 130  # one step per epoch: 3 frames, batch 2
    undo()
    last = tmp_path / "fake" / "last.pth"
    assert load_checkpoint(last)["iteration"] == 1
    args = train_dlv3p.get_args_parser().parse_args(["--data-root", str(tiny_root), "--workers", "0", "--device",
                                                     "cuda", "--resume", str(last), "--val-every", "1"])
    assert train_dlv3p.main(args) == 0
    assert load_checkpoint(last)["iteration"] == 2
    assert [row["iteration"] for row in read_history(tmp_path / "fake")] == [1, 2]


def test_evaluation_and_submission_on_cuda(fake_cuda, trained_run, tiny_root, tmp_path):
    common = ["--model_weights_path", str(trained_run / "best.pth"), "--data-root", str(tiny_root), "--out",
              str(tmp_path), "--workers", "0", "--device", "cuda"]
    val = test_dlv3p.get_args_parser().parse_args([*common, "--split", "val", "--flip", "--mode", "slide", "--crop",
                                                   "64", "64", "--stride", "48", "48", "--official-eval"])
    assert test_dlv3p.main(val) == 0
    metrics = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 3 and metrics["mean_iou"] == pytest.approx(metrics["official_mean_iou"], abs=1e-6)
    test = test_dlv3p.get_args_parser().parse_args([*common, "--split", "test", "--batch-size", "2", "--amp",
                                                    "--amp-dtype", "bfloat16", "--scales", "0.75", "1.0"])
    assert test_dlv3p.main(test) == 0
    with zipfile.ZipFile(tmp_path / "tiny" / "test" / "tiny_test_labelIds.zip") as archive:
        assert len(archive.namelist()) == 3


def test_predict_on_cuda(fake_cuda, trained_run, tiny_root, tmp_path):
    args = predict_dlv3p.get_args_parser().parse_args([
        "--model_weights_path", str(trained_run / "best.pth"), str(tiny_root / "leftImg8bit" / "test"), "--out",
        str(tmp_path), "--device", "cuda", "--batch-size", "2", "--save-ids", "--channels-last"])
    assert predict_dlv3p.main(args) == 0
    assert len(list(tmp_path.rglob("*_color.png"))) == 3


def test_save_predictions_gif_on_cuda(fake_cuda, trained_run, tiny_root, tmp_path):
    from deeplabv3plus.figures import GifOptions, save_prediction_gif

    gif = save_prediction_gif(trained_run / "best.pth", tiny_root, tmp_path / "fake.gif",
                              GifOptions(num_frames=2, device="cuda"))
    assert gif.stat().st_size > 1000
