import pytest
import torch
from torch import nn

from deeplabv3plus.engine import TrainingStep, train_one_epoch
from deeplabv3plus.inference import InferenceOptions, predict
from deeplabv3plus.optimizer import poly_lr, poly_lr_factor
from deeplabv3plus.precision import Precision, native_bfloat16, resolve_precision


def test_poly_schedule_with_warmup():
    assert poly_lr_factor(0, 100) == 1.0
    assert poly_lr_factor(50, 100) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100) == 0.0
    assert poly_lr_factor(0, 100, warmup_iterations=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_lr_factor(5, 100, warmup_iterations=10, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95**0.9)
    assert poly_lr_factor(10, 100, warmup_iterations=10) == pytest.approx(0.9**0.9)


def test_a_poly_schedule_with_a_floor_reaches_it_at_the_last_iteration():
    """mmengine's PolyLR(eta_min): (1 - t / (T - 1)) ** p between the LR and the floor (tests/test_recipes.py compares
    it with mmengine's own at every iteration)."""
    assert poly_lr(0.01, 1e-4, 0, 5) == 0.01
    assert poly_lr(0.01, 1e-4, 2, 5) == pytest.approx(1e-4 + (0.01 - 1e-4) * 0.5**0.9)
    assert poly_lr(0.01, 1e-4, 4, 5) == poly_lr(0.01, 1e-4, 9, 5) == pytest.approx(1e-4)
    assert poly_lr(0.01, 1e-4, 1, 5, warmup_iterations=2) == pytest.approx(1e-4 + (0.01 - 1e-4) * 0.55 * 0.75**0.9)


class FlipEquivariant(nn.Module):
    """A per-pixel classifier: flipping its input flips its output exactly."""

    def __init__(self):
        super().__init__()
        self.classify = nn.Conv2d(3, 4, 1)

    def forward(self, images):
        return self.classify(images)


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing():
    torch.manual_seed(0)
    model = FlipEquivariant().eval()
    images = torch.randn(2, 3, 8, 10)
    plain = predict(model, images)
    assert torch.allclose(predict(model, images, InferenceOptions(flip=True)), plain, atol=1e-6)
    symmetric = torch.cat([images, images.flip(-1)], dim=-1)  # a left-right symmetric image
    flipped_model_output = predict(model, symmetric.flip(-1))
    assert torch.allclose(flipped_model_output.flip(-1), predict(model, symmetric), atol=1e-6)


def test_multi_scale_output_keeps_input_size_and_sums_to_one():
    model = FlipEquivariant().eval()
    probabilities = predict(model, torch.randn(1, 3, 9, 13), InferenceOptions(flip=True, scales=(0.5, 1.0, 1.5)))
    assert probabilities.shape == (1, 4, 9, 13)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 9, 13), atol=1e-5)


def one_batch_loader(batches=1, size=4):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, size, size, generator=generator), torch.zeros(2, size, size, dtype=torch.long), {})
            for _ in range(batches)]


def sgd(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)


def step_of(model, criterion, log_every=20):
    """The training step of a model on the CPU with plain SGD."""
    return TrainingStep(model, criterion, *sgd(model), torch.device("cpu"), log_every=log_every)


class NanAtStep(nn.Module):
    """Cross-entropy, except at one step of the pass, where the loss is NaN."""

    def __init__(self, bad_step):
        super().__init__()
        self.bad_step, self.calls = bad_step, 0

    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if self.calls - 1 == self.bad_step else loss


@pytest.mark.parametrize("log_every", [1, 4, 100])
def test_non_finite_loss_stops_the_pass_at_the_next_check(log_every):
    """Checked on the device and read every log_every steps and at the end: the pass never returns."""
    criterion = NanAtStep(bad_step=2)
    with pytest.raises(FloatingPointError, match="loss is nan at step 2 of this epoch"):
        train_one_epoch(step_of(FlipEquivariant(), criterion, log_every), one_batch_loader(6))
    checked_at = min(6, (2 // log_every + 1) * log_every)  # the first check at or after the bad step
    assert criterion.calls == checked_at


def test_no_host_sync_between_checks(monkeypatch):
    """Tensor.item() (a host sync on a GPU) only at the checks, not every step."""
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    stats = train_one_epoch(step_of(FlipEquivariant(), nn.CrossEntropyLoss(), log_every=6), one_batch_loader(12))
    monkeypatch.setattr(torch.Tensor, "item", real_item)
    assert stats.steps == 12
    assert len(calls) <= 2 * 3 + 1  # per check: the flag and the bar's loss; one for the epoch's mean loss
    assert stats.data_seconds >= 0 and stats.compute_seconds > 0 and stats.peak_memory_mb > 0


@pytest.mark.parametrize("native_bf16", [True, False], ids=["ampere-or-newer", "older-gpu"])
def test_precision_is_decided_in_one_place(monkeypatch, native_bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    fast = Precision(torch.bfloat16, False)
    assert resolve_precision(False, "float16", "cuda") == Precision(None, False)  # --no-amp: float32, no scaler
    assert resolve_precision(None, None, "cuda") == (fast if native_bf16 else Precision())  # the GPU's default
    assert resolve_precision(True, None, "cuda") == (fast if native_bf16 else Precision(torch.float16, True))
    assert resolve_precision(None, "float16", "cuda") == Precision(torch.float16, True)  # --amp-dtype implies --amp
    assert resolve_precision(True, "bfloat16", "cuda:1") == fast
    assert resolve_precision(None, None, "cpu") == Precision()  # the CPU's default stays float32
    assert resolve_precision(True, None, "cpu") == Precision(torch.bfloat16, False)
    assert resolve_precision(True, "float16", "cpu") == Precision(torch.float16, False)  # no GradScaler off CUDA
    assert resolve_precision(True, None, "cpu").name == "bfloat16" and Precision().name is None
    assert native_bfloat16("cuda") is native_bf16 and native_bfloat16("cpu") is False


def test_cpu_bfloat16_support_guards_the_private_api(monkeypatch):
    import types

    from deeplabv3plus import precision

    def answers(function):
        monkeypatch.setattr(precision.torch, "ops", types.SimpleNamespace(mkldnn=types.SimpleNamespace(**function)))
        return precision.cpu_supports_bfloat16()

    def broken():
        raise RuntimeError("no oneDNN")

    assert answers({"_is_mkldnn_bf16_supported": lambda: True}) is True
    assert answers({"_is_mkldnn_bf16_supported": lambda: False}) is False
    assert answers({"_is_mkldnn_bf16_supported": broken}) is False
    assert answers({}) is False  # a PyTorch without the function


def test_the_epoch_end_line_times_each_epoch_from_its_own_start(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from deeplabv3plus import trainer

    measured = []
    monkeypatch.setattr(trainer.EpochEnds, "add", lambda self, *times: measured.append(times))
    model = FlipEquivariant()
    model.config = {"backbone": "flip-equivariant"}  # what a checkpoint records of a model
    samples = [(torch.randn(3, 4, 4), torch.zeros(4, 4, dtype=torch.long), {"stem": str(index)})
               for index in range(4)]
    step = step_of(model, nn.CrossEntropyLoss())
    step.scaler = torch.amp.GradScaler("cuda", enabled=False)
    trainer.Trainer(step, model, DataLoader(samples, batch_size=2), DataLoader(samples, batch_size=2), tmp_path,
                    tuple("abcd"), trainer.TrainState(), total_iterations=4).fit()
    assert len(measured) == 2  # two epochs, each validated
    for training, pause, validation in measured:
        assert training > 0 and pause >= 0 and validation > 0


def test_the_progress_bar_counts_every_step_and_reads_the_loss_only_at_the_checks(monkeypatch):
    from deeplabv3plus import engine

    bars = []

    class Bar:
        def __init__(self, *args, **kwargs):
            self.n, self.shown = 0, []
            bars.append(self)

        def update(self, count):
            self.n += count
            self.shown.append(("count", self.n))

        def set_postfix(self, **values):
            self.shown.append(("loss", self.n))

        def close(self):
            pass

    monkeypatch.setattr(engine, "tqdm", Bar)
    train_one_epoch(step_of(FlipEquivariant(), nn.CrossEntropyLoss(), log_every=3), one_batch_loader(5))
    assert bars[0].shown == [("count", 1), ("count", 2), ("count", 3), ("loss", 3), ("count", 4), ("count", 5),
                             ("loss", 5)]
