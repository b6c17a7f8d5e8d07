"""mmsegmentation's DeepLabV3+ in our model: the variant, the converter, checked against mmsegmentation's own code."""

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import train_args

import test_dlv3p
import train_dlv3p
from cityscapes.labels import TRAIN_ID_TO_LABEL_ID
from cityscapes.paths import image_files, stem_of
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.convert import get_args_parser, main, open_mmlab_backbone
from deeplabv3plus.inference import load_trained_model
from deeplabv3plus.model import build_model
from segdata.files import read_png

mmseg_reference = pytest.importorskip("mmseg_reference")
pytest.importorskip("mmseg")


@pytest.fixture(scope="module")
def mmseg_r50(tmp_path_factory):
    """mmsegmentation's R-50-D8 with random weights and BN statistics, saved as a model-zoo style checkpoint."""
    model = mmseg_reference.randomised(mmseg_reference.MmsegDeepLabV3Plus(50))
    path = tmp_path_factory.mktemp("mmseg") / "deeplabv3plus_r50-d8_512x1024_80k_cityscapes.pth"
    torch.save({"meta": {"CLASSES": ["road"] * 19, "mmseg_version": "0.5.0"}, "state_dict": model.state_dict()}, path)
    return model, path


@pytest.fixture(scope="module")
def converted(mmseg_r50, tmp_path_factory):
    path = tmp_path_factory.mktemp("converted") / "mmseg_r50" / "best.pth"
    assert main(get_args_parser().parse_args(["--from", "mmseg", str(mmseg_r50[1]), str(path)])) == 0
    return path


def test_the_variant_has_mmsegmentations_parameter_counts():
    """Measured with mmsegmentation 1.2.2: R50 41.2 M, 43.6 M with the auxiliary head; R101 60.2 M, 62.6 M."""
    counts = {}
    for depth in ("resnet50", "resnet101"):
        for aux in (False, True):
            model = build_model(depth, 8, aux_head=aux, arch="mmseg")
            counts[(depth, aux)] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    assert counts == {("resnet50", False): 41.2, ("resnet50", True): 43.6, ("resnet101", False): 60.2,
                      ("resnet101", True): 62.6}


@pytest.mark.parametrize("size", [(64, 128), (61, 97)])
def test_converted_logits_equal_mmsegmentations(mmseg_r50, converted, size):
    reference, _ = mmseg_r50
    ours = load_trained_model(converted)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(images), ours(images)
    assert actual.shape == expected.shape == (2, 19, *size)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_a_769x769_model_aligns_corners_as_its_checkpoints_config_says(mmseg_r50, tmp_path, capsys):
    """mmsegmentation's 769x769 models align corners; its 0.x checkpoints carry their config's text in meta."""
    reference = mmseg_reference.MmsegDeepLabV3Plus(50, align_corners=True)
    reference.load_state_dict(mmseg_r50[0].state_dict())
    path = tmp_path / "deeplabv3plus_r50-d8_769x769_80k_cityscapes.pth"
    torch.save({"meta": {"config": "model = dict(\n    decode_head=dict(align_corners=True, num_classes=19))"},
                "state_dict": reference.state_dict()}, path)
    assert main(get_args_parser().parse_args(["--from", "mmseg", str(path), str(tmp_path / "aligned.pth")])) == 0
    assert "not aligning" not in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "aligned.pth")["model_config"]["align_corners"] is True
    images = torch.randn(1, 3, 61, 97, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, actual = reference.eval()(images), load_trained_model(tmp_path / "aligned.pth")(images)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert main(get_args_parser().parse_args(["--from", "mmseg", "--no-align-corners", str(path),
                                              str(tmp_path / "plain.pth")])) == 0
    assert "align_corners" not in load_checkpoint(tmp_path / "plain.pth")["model_config"]
    with torch.no_grad():
        unaligned = load_trained_model(tmp_path / "plain.pth")(images)
    assert not torch.allclose(unaligned, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_the_converted_checkpoint_is_an_ordinary_checkpoint(converted, mmseg_r50):
    checkpoint = load_checkpoint(converted)
    assert checkpoint["model_config"] == {
        "backbone": "resnet50",
        "output_stride": 8,
        "num_classes": 19,
        "aux_head": True,
        "stem": "deep",
        "head": "separable",
    }
    assert checkpoint["converted_from"]["project"] == "mmsegmentation"
    assert torch.load(converted, weights_only=True)["model"].keys() == checkpoint["model"].keys()
    reference = mmseg_r50[0].auxiliary_head.state_dict()
    assert torch.equal(checkpoint["model"]["aux_head.0.weight"], reference["convs.0.conv.weight"])
    assert torch.equal(checkpoint["model"]["aux_head.4.bias"], reference["conv_seg.bias"])


def test_the_same_label_maps_as_mmsegmentation_through_test_dlv3p(mmseg_r50, converted, tiny_root, tmp_path):
    """test_dlv3p.py on the val images against mmsegmentation's whole-image inference with its data preprocessor."""
    from mmseg.models.data_preprocessor import SegDataPreProcessor

    args = test_dlv3p.get_args_parser().parse_args(
        [
            "--model_weights_path",
            str(converted),
            "--data-root",
            str(tiny_root),
            "--out",
            str(tmp_path),
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert test_dlv3p.main(args) == 0
    preprocessor = SegDataPreProcessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
    for image_path in image_files(tiny_root, "val"):
        bgr = torch.from_numpy(np.ascontiguousarray(read_png(image_path)[..., ::-1])).permute(2, 0, 1)  # mmcv loads BGR
        data = preprocessor({"inputs": [bgr], "data_samples": None}, training=False)
        with torch.no_grad():
            train_ids = mmseg_r50[0](data["inputs"]).argmax(1)[0].numpy()
        written = read_png(tmp_path / "mmseg_r50" / "val" / "labelIds" / f"{stem_of(image_path)}_labelIds.png")
        assert np.array_equal(written, TRAIN_ID_TO_LABEL_ID[train_ids])


def test_other_architectures_are_refused_by_their_first_key(tmp_path, capsys):
    foreign = tmp_path / "pspnet.pth"
    torch.save({"state_dict": {"backbone.stem.0.weight": torch.zeros(32, 3, 3, 3),
                               "decode_head.psp_modules.0.1.conv.weight": torch.zeros(512, 2048, 1, 1)}}, foreign)
    assert main(get_args_parser().parse_args(["--from", "mmseg", str(foreign), str(tmp_path / "out.pth")])) == 2
    err = capsys.readouterr().err
    assert "pspnet.pth: decode_head.psp_modules.0.1.conv.weight has no place in mmsegmentation's deeplabv3plus" in err
    assert not (tmp_path / "out.pth").exists()
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert (
        main(get_args_parser().parse_args(["--from", "mmseg", str(tmp_path / "junk.pth"), str(tmp_path / "o.pth")]))
        == 2
    )
    assert "junk.pth: not a PyTorch checkpoint" in capsys.readouterr().err


def test_the_imagenet_backbone_converts_to_a_pretrained_file(mmseg_r50, tmp_path):
    backbone = {key: value for key, value in mmseg_r50[0].backbone.state_dict().items()}
    backbone["fc.weight"] = torch.zeros(1000, 2048)  # the ImageNet classifier is dropped
    torch.save({"state_dict": backbone}, tmp_path / "resnet50_v1c.pth")
    assert main(get_args_parser().parse_args(["--from", "mmseg-backbone", str(tmp_path / "resnet50_v1c.pth"),
                                              str(tmp_path / "r50_v1c_ours.pth")])) == 0
    model = build_model("resnet50", 8, pretrained_backbone=tmp_path / "r50_v1c_ours.pth", arch="mmseg")
    loaded = model.backbone.body.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in backbone.items() if not key.startswith("fc."))
    with pytest.raises(ValueError, match="no ImageNet weights for the deep-stem resnet50; convert mmsegmentation's"):
        build_model("resnet50", 8, pretrained_backbone="imagenet", arch="mmseg")


def test_open_mmlab_backbones_are_downloaded_checked_and_converted_once(mmseg_r50, tmp_path, monkeypatch):
    """--pretrained-backbone open-mmlab, from a file:// URL: the SHA-256 prefix in the name is checked, the converted
    file kept beside the download in torch's hub cache and used again without a download."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # torch.hub.set_dir, undone after the test
    backbone = dict(mmseg_r50[0].backbone.state_dict())
    source = tmp_path / "mirror" / "resnet50_v1c.pth"
    source.parent.mkdir()
    torch.save({"state_dict": backbone}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    named = source.rename(source.with_name(f"resnet50_v1c-{digest[:8]}.pth"))
    converted = open_mmlab_backbone("resnet50", {"resnet50": named.as_uri()})
    assert converted == tmp_path / "hub" / "checkpoints" / f"resnet50_v1c-{digest[:8]}.dlv3p-backbone.pth"
    model = build_model("resnet50", 8, pretrained_backbone=converted, arch="mmseg")
    assert all(torch.equal(model.backbone.body.state_dict()[key], value) for key, value in backbone.items())
    named.unlink()  # no second download
    assert open_mmlab_backbone("resnet50", {"resnet50": named.as_uri()}) == converted
    wrong = named.with_name("resnet101_v1c-00000000.pth")
    torch.save({"state_dict": backbone}, wrong)
    with pytest.raises(RuntimeError, match=r"could not download .*resnet101_v1c-00000000.pth: invalid hash value .*"
                                           r"--pretrained-backbone none"):
        open_mmlab_backbone("resnet101", {"resnet101": wrong.as_uri()})
    assert not (tmp_path / "hub" / "checkpoints" / wrong.name).exists()  # nothing half-written kept
    with pytest.raises(ValueError, match="open-mmlab has no ImageNet ResNetV1c for resnet152"):
        open_mmlab_backbone("resnet152")


def test_open_mmlab_weights_are_refused_for_the_torchvision_architecture(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, pretrained_backbone="open-mmlab")) != 0
    assert "argument --pretrained-backbone: open-mmlab's weights are of ResNetV1c (deep stem): use them with --arch " \
           "mmseg" in capsys.readouterr().err


def test_arch_mmseg_trains_and_fine_tunes_from_a_converted_checkpoint(converted, tiny_root, tmp_path):
    common = ["--data-root", str(tiny_root), "--output-stride", "16", "--batch-size", "2", "--crop-size", "32", "64",
              "--workers", "0", "--device", "cpu", "--save-dir", str(tmp_path), "--warmup-iters", "1", "--iters", "2",
              "--val-every", "2", "--arch", "mmseg", "--pretrained-backbone", "none"]
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([*common, "--run-name", "scratch"])) == 0
    checkpoint = load_checkpoint(tmp_path / "scratch" / "last.pth")
    assert (checkpoint["model_config"]["stem"], checkpoint["model_config"]["head"]) == ("deep", "separable")
    assert any(key.startswith("aux_head.") for key in checkpoint["model"])
    assert load_trained_model(tmp_path / "scratch" / "last.pth").config["head"] == "separable"  # round trip
    fine_tune = [*common, "--run-name", "fine", "--init-weights", str(converted), "--lr", "1e-9"]
    fine_tune[fine_tune.index("--output-stride") + 1] = "8"
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(fine_tune)) == 0
    start, tuned = load_checkpoint(converted)["model"], load_checkpoint(tmp_path / "fine" / "last.pth")["model"]
    assert torch.allclose(start["decoder.conv_seg.weight"], tuned["decoder.conv_seg.weight"], atol=1e-5)
    assert json.loads((tmp_path / "fine" / "args.json").read_text())["init_weights"] == str(converted)
