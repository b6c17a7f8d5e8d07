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
from deeplabv3plus.model import build_model
from segdata.files import write_bytes_atomic

__all__ = ["ConversionError", "convert_mmseg", "convert_mmseg_backbone", "map_mmseg_key"]

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


def _load(path: Path, trust_pickle: bool) -> dict:
    """The state dict of a checkpoint file (unwrapping ``state_dict``), loaded with weights_only unless trusted."""
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


def convert_mmseg(path: Path, out: Path, output_stride: int = 8, trust_pickle: bool = False) -> dict:
    """Convert an mmsegmentation DeepLabV3+ checkpoint; returns the model config written."""
    state = _load(path, trust_pickle)
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
    model = build_model(_depth(state, path, "backbone."), output_stride, num_classes,
                        aux_head=any(key.startswith("aux_head.") for key in mapped), arch="mmseg")
    try:
        model.load_state_dict(mapped)
    except RuntimeError as error:
        first = str(error).split("\n\t", 2)[1] if "\n\t" in str(error) else str(error)
        raise ConversionError(f"{path}: the weights do not fit mmsegmentation's DeepLabV3+ ({first.strip()})") from None
    save_checkpoint(out, model, converted_from={"project": "mmsegmentation", "file": str(path)})
    return dict(model.config)


def convert_mmseg_backbone(path: Path, out: Path, trust_pickle: bool = False) -> str:
    """Convert an mmsegmentation ImageNet ResNetV1c checkpoint into a --pretrained-backbone file; returns the depth."""
    state = {key.removeprefix("backbone."): value for key, value in _load(path, trust_pickle).items()}
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(description="Convert mmsegmentation checkpoints into this project's.")
    parser.add_argument("--from", dest="source", choices=["mmseg", "mmseg-backbone"], required=True,
                        help="mmseg: a DeepLabV3+ segmentor checkpoint; mmseg-backbone: an ImageNet ResNetV1c")
    parser.add_argument("input", type=Path, help="the downloaded checkpoint")
    parser.add_argument("output", type=Path, help="the checkpoint to write")
    parser.add_argument("--output-stride", type=int, choices=[8, 16], default=8,
                        help="stride the model runs at (mmsegmentation's -d8 models: 8)")
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
            config = convert_mmseg(args.input, args.output, args.output_stride, args.trust_pickle)
            print(f"wrote {args.output}: mmsegmentation DeepLabV3+ {config['backbone']}, OS{config['output_stride']}, "
                  f"{'with' if config['aux_head'] else 'without'} the auxiliary head; use it with test_dlv3p.py "
                  f"--model_weights_path {args.output}")
        else:
            depth = convert_mmseg_backbone(args.input, args.output, args.trust_pickle)
            print(f"wrote {args.output}: ImageNet ResNetV1c {depth}; train with --arch mmseg --backbone {depth} "
                  f"--pretrained-backbone {args.output}")
    except (OSError, ValueError) as error:
        return cli.report_error(error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
