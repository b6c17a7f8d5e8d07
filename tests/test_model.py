import pytest
import torch
from torch import nn
from torchvision.models import resnet50, resnet101, resnet152

from deeplabv3plus.aspp import ASPPConv
from deeplabv3plus.backbone import BACKBONES, ResNetBackbone
from deeplabv3plus.model import build_model
from deeplabv3plus.optimizer import parameter_groups

RESNETS = {"resnet50": resnet50, "resnet101": resnet101, "resnet152": resnet152}


@pytest.fixture(scope="module")
def models():
    """One model per (backbone, output stride), built once."""
    torch.manual_seed(0)
    return {(name, stride): build_model(name, stride) for name in BACKBONES for stride in (8, 16)}


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("stride", [8, 16])
def test_output_has_input_size_on_odd_sizes(models, name, stride):
    model = models[(name, stride)].eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 97, 131))
    assert logits.shape == (1, 19, 97, 131) and logits.dtype == torch.float32


@pytest.mark.parametrize("stride", [8, 16])
def test_feature_strides_and_aspp_rates(models, stride):
    model = models[("resnet50", stride)].eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 192))
    assert features["low_level"].shape == (1, 256, 32, 48)  # stride 4
    assert features["out"].shape == (1, 2048, 128 // stride, 192 // stride)
    rates = {16: (6, 12, 18), 8: (12, 24, 36)}[stride]
    assert model.aspp.rates == rates
    assert [m[0].dilation for m in model.aspp.modules() if isinstance(m, ASPPConv)] == [(r, r) for r in rates]


def independent_parameter_count(name, num_classes=19):
    """torchvision's ResNet without its classifier, plus the head counted layer by layer."""
    resnet = RESNETS[name]()
    backbone = sum(p.numel() for p in resnet.parameters()) - sum(p.numel() for p in resnet.fc.parameters())
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731  (no bias: followed by BN)
    bn = lambda c: 2 * c  # noqa: E731
    aspp = (conv(2048, 256, 1) + bn(256)) + 3 * (conv(2048, 256, 3) + bn(256)) + (conv(2048, 256, 1) + bn(256))
    aspp += conv(5 * 256, 256, 1) + bn(256)
    decoder = conv(256, 48, 1) + bn(48) + conv(304, 256, 3) + bn(256) + conv(256, 256, 3) + bn(256)
    decoder += 256 * num_classes + num_classes
    return backbone + aspp + decoder


@pytest.mark.parametrize("name", list(BACKBONES))
def test_parameter_counts(models, name):
    counts = {stride: sum(p.numel() for p in models[(name, stride)].parameters()) for stride in (8, 16)}
    print(f"{name}: {counts[16]:,} parameters")
    assert counts[8] == counts[16] == independent_parameter_count(name)
    assert counts[16] == {"resnet50": 40_351_667, "resnet101": 59_343_795, "resnet152": 74_987_443}[name]


def test_local_state_dict_is_loaded_exactly(tmp_path):
    torch.manual_seed(1)
    reference = resnet50()
    state = reference.state_dict()
    plain, wrapped = tmp_path / "resnet50.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    for path in (plain, str(wrapped)):
        model = build_model("resnet50", 16, pretrained_backbone=path)
        loaded = model.backbone.body.state_dict()
        assert set(loaded) == {k for k in state if not k.startswith("fc.")}
        for key, value in loaded.items():
            assert torch.equal(value, state[key]), key


def test_pretrained_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.pth: backbone weights file not found"):
        build_model("resnet50", 16, pretrained_backbone=tmp_path / "missing.pth")
    torch.save(resnet101().state_dict(), tmp_path / "r101.pth")
    with pytest.raises(ValueError, match="r101.pth: not a resnet50 state dict"):
        build_model("resnet50", 16, pretrained_backbone=tmp_path / "r101.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a loadable PyTorch state dict"):
        build_model("resnet50", 16, pretrained_backbone=tmp_path / "junk.pth")

    def offline(*args, **kwargs):
        from urllib.error import URLError
        raise URLError("no internet")

    monkeypatch.setattr(type(BACKBONES["resnet50"][1]), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="could not download.*local state-dict file.*pretrained_backbone=None"):
        build_model("resnet50", 16, pretrained_backbone="imagenet")


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="output_stride must be one of"):
        ResNetBackbone("resnet50", 32)
    with pytest.raises(ValueError, match="unknown backbone"):
        ResNetBackbone("resnet18", 16)


def test_gradients_reach_every_parameter(models):
    model = models[("resnet50", 16)].train()
    model.zero_grad()
    logits = model(torch.randn(2, 3, 64, 64))
    nn.functional.cross_entropy(logits, torch.randint(0, 19, (2, 64, 64))).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad(set_to_none=True)


def test_eval_is_deterministic(models):
    model = models[("resnet50", 8)].eval()
    images = torch.randn(1, 3, 65, 77)
    with torch.no_grad():
        assert torch.equal(model(images), model(images))


def test_bfloat16_autocast_and_channels_last(models):
    model = models[("resnet50", 16)].eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = model(images)
        model.to(memory_format=torch.channels_last)
        channels_last = model(images.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
    assert low_precision.dtype == torch.bfloat16 and low_precision.shape == reference.shape
    assert torch.isfinite(low_precision).all()
    assert (low_precision.float().argmax(1) == reference.argmax(1)).float().mean() > 0.9
    assert torch.allclose(channels_last, reference, atol=1e-4)


def test_compiles_without_graph_breaks(models):
    model = models[("resnet50", 16)].eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(compiled(images), model(images))


def test_sync_batchnorm_conversion(models):
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(build_model("resnet50", 16))
    batch_norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert batch_norms and all(isinstance(m, nn.SyncBatchNorm) for m in batch_norms)


def test_parameter_groups(models):
    model = models[("resnet50", 16)]
    groups = parameter_groups(model, lr=0.01, weight_decay=1e-4, backbone_lr_multiplier=0.1)
    assert [g["name"] for g in groups] == ["backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(set(map(id, grouped))) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone_decay"]["lr"] == pytest.approx(0.001) and by_name["head_decay"]["lr"] == 0.01
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["head_decay"]["weight_decay"] == 1e-4
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_norm = isinstance(module, nn.BatchNorm2d)
            assert (id(p) in no_decay) == (is_norm or name == "bias")
    assert all(p.ndim == 4 for p in by_name["backbone_decay"]["params"])


def test_norm_bias_decay_decays_every_parameter(models):
    """mmsegmentation's configs have no paramwise_cfg: weight decay on norm weights and biases too."""
    groups = parameter_groups(models[("resnet50", 16)], lr=0.01, weight_decay=5e-4, norm_bias_decay=True)
    assert {group["name"]: group["weight_decay"] for group in groups} == {
        "backbone_decay": 5e-4, "backbone_no_decay": 5e-4, "head_decay": 5e-4, "head_no_decay": 5e-4}


def test_auxiliary_head_only_in_training():
    torch.manual_seed(0)
    model = build_model("resnet50", 16, aux_head=True)
    plain = build_model("resnet50", 16)
    aux_parameters = sum(p.numel() for p in model.aux_head.parameters())
    assert aux_parameters == 1024 * 256 * 9 + 2 * 256 + 256 * 19 + 19  # 3x3 conv 1024->256, BN, 1x1 classifier
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) + aux_parameters
    images = torch.randn(2, 3, 64, 96)
    outputs = model.train()(images)
    assert set(outputs) == {"out", "aux"} and outputs["aux"].shape == outputs["out"].shape == (2, 19, 64, 96)
    with torch.no_grad():
        assert model.eval()(images).shape == (2, 19, 64, 96)  # inference: the logits alone
    assert plain.train()(images).shape == (2, 19, 64, 96)  # without the head: a tensor in training too


def test_a_model_trained_with_the_auxiliary_head_loads_without_it(tmp_path):
    from deeplabv3plus.checkpoint import save_checkpoint
    from deeplabv3plus.inference import load_trained_model

    torch.manual_seed(0)
    trained = build_model("resnet50", 16, aux_head=True).eval()
    save_checkpoint(tmp_path / "aux.pth", trained)
    loaded = load_trained_model(tmp_path / "aux.pth")
    assert loaded.aux_head is None
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images), trained(images))


def test_evaluation_at_another_output_stride_uses_the_same_weights(tmp_path):
    """Trained at OS16, tested at OS8 (layer3 dilated too, ASPP rates doubled): same parameters, same output size,
    and the same as rebuilding the model at OS8 and loading the OS16 state dict."""
    from deeplabv3plus.checkpoint import save_checkpoint
    from deeplabv3plus.inference import load_trained_model

    torch.manual_seed(0)
    trained = build_model("resnet50", 16).eval()
    save_checkpoint(tmp_path / "os16.pth", trained)
    at_os8 = load_trained_model(tmp_path / "os16.pth", eval_output_stride=8)
    assert at_os8.config["output_stride"] == 8 and at_os8.aspp.rates == (12, 24, 36)
    trained_state, os8_state = trained.state_dict(), at_os8.state_dict()
    assert trained_state.keys() == os8_state.keys()
    assert all(torch.equal(trained_state[key], os8_state[key]) for key in trained_state)
    rebuilt = build_model("resnet50", 8).eval()
    rebuilt.load_state_dict(trained_state)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        os8_logits, os16_logits = at_os8(images), trained(images)
        assert os8_logits.shape == os16_logits.shape == (1, 19, 64, 96)
        assert torch.equal(os8_logits, rebuilt(images))
        assert not torch.allclose(os8_logits, os16_logits)  # a real change of the receptive field
        features = at_os8.backbone(images)["out"]
    assert features.shape[-2:] == (8, 12)  # stride 8
