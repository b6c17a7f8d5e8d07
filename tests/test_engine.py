import pytest
import torch
from torch import nn

from deeplabv3plus.engine import poly_lr_factor, predict, train_one_epoch


def test_poly_schedule_with_warmup():
    assert poly_lr_factor(0, 100) == 1.0
    assert poly_lr_factor(50, 100) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100) == 0.0
    assert poly_lr_factor(0, 100, warmup_iterations=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_lr_factor(5, 100, warmup_iterations=10, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95**0.9)
    assert poly_lr_factor(10, 100, warmup_iterations=10) == pytest.approx(0.9**0.9)


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
    assert torch.allclose(predict(model, images, flip=True), plain, atol=1e-6)
    symmetric = torch.cat([images, images.flip(-1)], dim=-1)  # a left-right symmetric image
    flipped_model_output = predict(model, symmetric.flip(-1))
    assert torch.allclose(flipped_model_output.flip(-1), predict(model, symmetric), atol=1e-6)


def test_multi_scale_output_keeps_input_size_and_sums_to_one():
    model = FlipEquivariant().eval()
    probabilities = predict(model, torch.randn(1, 3, 9, 13), flip=True, scales=(0.5, 1.0, 1.5))
    assert probabilities.shape == (1, 4, 9, 13)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 9, 13), atol=1e-5)


def test_non_finite_loss_stops_before_the_step():
    model = FlipEquivariant()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    loader = [(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), {})]

    class NanLoss(nn.Module):
        def forward(self, logits, target):
            return logits.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_one_epoch(model, NanLoss(), optimizer, scheduler, loader, torch.device("cpu"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_amp_dtype_defaults_per_device():
    from deeplabv3plus.engine import resolve_amp_dtype

    assert resolve_amp_dtype(False, "float16", "cuda") is None
    assert resolve_amp_dtype(True, None, "cuda") == torch.float16
    assert resolve_amp_dtype(True, None, "cpu") == torch.bfloat16
    assert resolve_amp_dtype(True, "bfloat16", "cuda:1") == torch.bfloat16


def test_cpu_bfloat16_support_guards_the_private_api(monkeypatch):
    import types

    from deeplabv3plus import engine

    def answers(function):
        monkeypatch.setattr(engine.torch, "ops", types.SimpleNamespace(mkldnn=types.SimpleNamespace(**function)))
        return engine.cpu_supports_bfloat16()

    def broken():
        raise RuntimeError("no oneDNN")

    assert answers({"_is_mkldnn_bf16_supported": lambda: True}) is True
    assert answers({"_is_mkldnn_bf16_supported": lambda: False}) is False
    assert answers({"_is_mkldnn_bf16_supported": broken}) is False
    assert answers({}) is False  # a PyTorch without the function
