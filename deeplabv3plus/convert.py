"""Other projects' checkpoints -> this project's: mmsegmentation's DeepLabV3+ and its ImageNet ResNetV1c backbones.

    python -m deeplabv3plus.convert --from mmseg \\
        deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth \\
        saved/mmseg_r50_d8_512x1024_80k/best.pth
    python -m deeplabv3plus.convert --from mmseg-backbone resnet50_v1c-2cccc1ad.pth weights/resnet50_v1c.pth

``--from mmseg`` reads an mmsegmentation checkpoint (``state_dict`` with
``backbone.``, ``decode_head.`` and ``auxiliary_head.`` keys; ``meta`` is
ignored) of ``deeplabv3plus_r{50,101}-d8`` (ResNetV1c + DepthwiseSeparableASPPHead
+ FCNHead), picks the depth from the weights, maps every key onto the model's
``mmseg`` variant and writes an ordinary checkpoint of this project (atomically,
with its model config) that test_dlv3p.py, predict_dlv3p.py, the export and
``train_dlv3p.py --init-weights`` load like our own. A checkpoint of another
architecture is refused, naming the first key that has no place.
``--from mmseg-backbone`` turns an ImageNet ResNetV1c checkpoint into a
``--pretrained-backbone`` file for ``--arch mmseg``. Local files only.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import zipfile
from pathlib import Path

import torch

from cityscapes.labels import NUM_CLASSES
from deeplabv3plus import cli
from deeplabv3plus.checkpoint import save_checkpoint
from deeplabv3plus.model import ARCHITECTURES, DeepLabV3Plus, ModelConfig, build_model
from segdata.files import write_bytes_atomic

__all__ = ["OPEN_MMLAB_BACKBONES", "ConversionError", "aligns_corners", "convert_mmseg", "convert_mmseg_backbone",
           "map_mmseg_key", "open_mmlab_backbone"]

OPEN_MMLAB_BACKBONES = {
    "resnet50": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
}
"""mmsegmentation's ImageNet ResNetV1c weights (``open-mmlab://resnet{depth}_v1c``, mmengine's hub table); the part
of a file name after its last ``-`` is the start of its SHA-256, checked after the download."""

DEPTH_BY_LAYER3_BLOCKS = {6: "resnet50", 23: "resnet101", 36: "resnet152"}
KEY_MAP = [  # (mmsegmentation key pattern, our key template), the first match wins
    (r"backbone\.(stem\.\d+\..+)", r"backbone.body.\1"),
    (r"backbone\.(layer[1-4]\..+)", r"backbone.body.\1"),
    (r"decode_head\.(image_pool\..+|aspp_modules\..+|bottleneck\..+)", r"aspp.\1"),
    (r"decode_head\.(c1_bottleneck\..+|sep_bottleneck\..+|conv_seg\..+)", r"decoder.\1"),
    (r"auxiliary_head\.convs\.0\.conv\.(.+)", r"aux_head.0.\1"),
    (r"auxiliary_head\.convs\.0\.bn\.(.+)", r"aux_head.1.\1"),
    (r"auxiliary_head\.conv_seg\.(.+)", r"aux_head.4.\1"),
]


class ConversionError(ValueError):
    """A file that cannot be converted; the message names the file and what is wrong."""


def map_mmseg_key(key: str) -> str | None:
    """Our name of an mmsegmentation DeepLabV3+ parameter or buffer, or None if it has no place in the model."""
    for pattern, template in KEY_MAP:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key)
    return None


def _read(path: Path, trust_pickle: bool) -> object:
    """A checkpoint file as torch.load gives it, loaded with weights_only unless trusted."""
    if not Path(path).is_file():
        raise ConversionError(f"{path}: no such file; download the checkpoint first (see the README's table)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # noqa: BLE001  torch raises many types for foreign or damaged files
        # only a torch.save zip whose pickle holds more than tensors needs trust; random bytes are no checkpoint at all
        if (isinstance(error, pickle.UnpicklingError) and not trust_pickle and "weights_only" in str(error)
                and zipfile.is_zipfile(path)):
            raise ConversionError(f"{path}: holds Python objects besides tensors; if you trust the file (for instance "
                                  "downloaded from the mmsegmentation model zoo), pass --trust-pickle") from None
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({type(error).__name__})") from None
    return checkpoint


def _state_of(checkpoint: object, path: Path) -> dict:
    """The state dict of a loaded checkpoint (unwrapping ``state_dict`` and DDP's ``module.``)."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors (or a checkpoint holding one in 'state_dict')")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _depth(state: dict, path: Path, prefix: str) -> str:
    blocks = {int(match.group(1)) for key in state if (match := re.match(rf"{prefix}layer3\.(\d+)\.", key))}
    depth = DEPTH_BY_LAYER3_BLOCKS.get(max(blocks) + 1 if blocks else 0)
    if depth is None:
        raise ConversionError(f"{path}: not a ResNet-50/101/152 (layer3 has {len(blocks)} blocks)")
    return depth


def aligns_corners(checkpoint: object) -> bool:
    """Whether the config a model-zoo checkpoint carries (``meta["config"]``, mmsegmentation 0.x's text) aligns
    corners, as its 769x769 configs do; False when it carries none."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    config = meta.get("config") if isinstance(meta, dict) else None
    return isinstance(config, str) and re.search(r"align_corners\s*=\s*True", config) is not None


def convert_mmseg(path: Path, out: Path, output_stride: int = 8, trust_pickle: bool = False,
                  align_corners: bool | None = None) -> dict:
    """Convert an mmsegmentation DeepLabV3+ checkpoint; returns the model config written. ``align_corners``: of its
    resizes (None: as the checkpoint's own config says, see :func:`aligns_corners`)."""
    checkpoint = _read(path, trust_pickle)
    state = _state_of(checkpoint, path)
    if not any(key.startswith("decode_head.") for key in state):
        raise ConversionError(f"{path}: no decode_head.* keys; not an mmsegmentation segmentor checkpoint "
                              "(for an ImageNet backbone use --from mmseg-backbone)")
    mapped = {}
    for key, value in state.items():
        ours = map_mmseg_key(key)
        if ours is None:
            raise ConversionError(f"{path}: {key} has no place in mmsegmentation's deeplabv3plus_r*-d8 "
                                  "(ResNetV1c + DepthwiseSeparableASPPHead + FCNHead); another architecture?")
        mapped[ours] = value
    num_classes = mapped["decoder.conv_seg.weight"].shape[0]
    if num_classes != NUM_CLASSES:
        raise ConversionError(
            f"{path}: predicts {num_classes} classes; this project evaluates Cityscapes' {NUM_CLASSES}"
        )
    align_corners = aligns_corners(checkpoint) if align_corners is None else align_corners
    model = DeepLabV3Plus(ModelConfig(_depth(state, path, "backbone."), output_stride, num_classes,
                                      any(key.startswith("aux_head.") for key in mapped), **ARCHITECTURES["mmseg"],
                                      align_corners=align_corners))
    try:
        model.load_state_dict(mapped)
    except RuntimeError as error:
        first = str(error).split("\n\t", 2)[1] if "\n\t" in str(error) else str(error)
        raise ConversionError(f"{path}: the weights do not fit mmsegmentation's DeepLabV3+ ({first.strip()})") from None
    save_checkpoint(out, model, converted_from={"project": "mmsegmentation", "file": str(path)})
    return dict(model.config)


def convert_mmseg_backbone(path: Path, out: Path, trust_pickle: bool = False) -> str:
    """Convert an mmsegmentation ImageNet ResNetV1c checkpoint into a --pretrained-backbone file; returns the depth."""
    state = {key.removeprefix("backbone."): value
             for key, value in _state_of(_read(path, trust_pickle), path).items()}
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    unknown = [key for key in state if not re.match(r"(stem\.\d+|layer[1-4])\.", key)]
    if unknown or not any(key.startswith("stem.") for key in state):
        raise ConversionError(f"{path}: {unknown[0] if unknown else 'no stem.* keys'}: not a ResNetV1c backbone")
    depth = _depth(state, path, "")
    layers = build_model(depth, 8, arch="mmseg").backbone.body
    try:
        layers.load_state_dict(state)
    except RuntimeError as error:
        raise ConversionError(
            f"{path}: the weights do not fit a deep-stem {depth} ({str(error).splitlines()[0]})"
        ) from None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(Path(out), buffer.getvalue())
    return depth


def open_mmlab_backbone(depth: str, urls: dict[str, str] = OPEN_MMLAB_BACKBONES) -> Path:
    """``--pretrained-backbone open-mmlab``: the ImageNet ResNetV1c of ``depth`` mmsegmentation starts from,
    downloaded once into torch's hub cache (its SHA-256 checked against the file name, as torch.hub does) and
    converted there into a --pretrained-backbone file; the converted file's path. ValueError naming the flag when
    there is no such file for the depth, RuntimeError when it cannot be downloaded."""
    if depth not in urls:
        raise ValueError(f"argument --pretrained-backbone: open-mmlab has no ImageNet ResNetV1c for {depth} (it has "
                         f"{', '.join(urls)}); give a local file, imagenet or none")
    url = urls[depth]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    downloaded = folder / Path(url).name
    converted = downloaded.with_name(f"{downloaded.stem}.dlv3p-backbone.pth")
    if converted.is_file():
        return converted
    if not downloaded.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(downloaded), hash_prefix=downloaded.stem.rsplit("-", 1)[-1],
                                           progress=False)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a wrong hash a RuntimeError
            raise RuntimeError(f"could not download mmsegmentation's ImageNet ResNetV1c of {depth} ({url}: "
                               f"{getattr(error, 'reason', None) or error}); download it by hand and pass the file "
                               f"converted by python -m deeplabv3plus.convert --from mmseg-backbone with "
                               "--pretrained-backbone PATH, or start from scratch with --pretrained-backbone none"
                               ) from None
    convert_mmseg_backbone(downloaded, converted)
    return converted


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(description="Convert mmsegmentation checkpoints into this project's.")
    parser.add_argument("--from", dest="source", choices=["mmseg", "mmseg-backbone"], required=True,
                        help="mmseg: a DeepLabV3+ segmentor checkpoint; mmseg-backbone: an ImageNet ResNetV1c")
    parser.add_argument("input", type=Path, help="the downloaded checkpoint")
    parser.add_argument("output", type=Path, help="the checkpoint to write")
    parser.add_argument("--output-stride", type=int, choices=[8, 16], default=8,
                        help="stride the model runs at (mmsegmentation's -d8 models: 8)")
    parser.add_argument("--align-corners", action=argparse.BooleanOptionalAction, default=None,
                        help="--from mmseg: whether the model aligns corners in its resizes (mmsegmentation's 769x769 "
                             "models do; default: as the checkpoint's own config says, else not)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load a checkpoint holding Python objects besides tensors (only for files you trust)")
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        if args.output.resolve() == args.input.resolve():
            raise ConversionError(f"{args.output}: the output would replace the input; name another file")
        cli.output_file(args.output, "output", args.overwrite)
        if args.source == "mmseg":
            config = convert_mmseg(args.input, args.output, args.output_stride, args.trust_pickle,
                                   args.align_corners)
            print(f"wrote {args.output}: mmsegmentation DeepLabV3+ {config['backbone']}, OS{config['output_stride']}, "
                  f"{'with' if config['aux_head'] else 'without'} the auxiliary head, "
                  f"{'aligning' if config.get('align_corners') else 'not aligning'} corners; use it with "
                  f"test_dlv3p.py --model_weights_path {args.output}")
        else:
            depth = convert_mmseg_backbone(args.input, args.output, args.trust_pickle)
            print(f"wrote {args.output}: ImageNet ResNetV1c {depth}; train with --arch mmseg --backbone {depth} "
                  f"--pretrained-backbone {args.output}")
    except (OSError, ValueError) as error:
        return cli.report_error(error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
