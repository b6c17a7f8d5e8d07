"""mmsegmentation's own DeepLabV3+ (R-D8) built from its code, for the conversion tests (test-only dependency)."""

import sys
import types

import torch


def import_mmseg():
    """mmseg's model modules; ``mmcv.ops`` (compiled ops, absent from mmcv-lite and unused by this model) is stubbed."""
    if "mmcv.ops" not in sys.modules:
        stub = types.ModuleType("mmcv.ops")

        def unavailable(*args, **kwargs):
            raise RuntimeError("mmcv.ops is stubbed in the tests")

        for name in ("point_sample", "sigmoid_focal_loss", "PSAMask", "DeformConv", "CrissCrossAttention",
                     "DeformConv2d", "ModulatedDeformConv2d"):
            setattr(stub, name, unavailable)
        sys.modules["mmcv.ops"] = stub
    from mmseg.models.backbones import ResNetV1c
    from mmseg.models.decode_heads import DepthwiseSeparableASPPHead, FCNHead
    return ResNetV1c, DepthwiseSeparableASPPHead, FCNHead


class MmsegDeepLabV3Plus(torch.nn.Module):
    """``deeplabv3plus_r{depth}-d8``: the modules and settings of mmsegmentation's config, BN instead of SyncBN."""

    def __init__(self, depth=50, num_classes=19, align_corners=False):
        super().__init__()
        ResNetV1c, DepthwiseSeparableASPPHead, FCNHead = import_mmseg()
        norm_cfg = dict(type="BN", requires_grad=True)
        self.backbone = ResNetV1c(depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                                  strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False, style="pytorch",
                                  contract_dilation=True)
        self.decode_head = DepthwiseSeparableASPPHead(
            in_channels=2048,
            in_index=3,
            channels=512,
            dilations=(1, 12, 24, 36),
            c1_in_channels=256,
            c1_channels=48,
            dropout_ratio=0.1,
            num_classes=num_classes,
            norm_cfg=norm_cfg,
            align_corners=align_corners,
        )
        self.auxiliary_head = FCNHead(
            in_channels=1024,
            in_index=2,
            channels=256,
            num_convs=1,
            concat_input=False,
            dropout_ratio=0.1,
            num_classes=num_classes,
            norm_cfg=norm_cfg,
            align_corners=align_corners,
        )

    def forward(self, images):
        """Whole-image logits at the input size, as mmsegmentation's EncoderDecoder computes them."""
        logits = self.decode_head(self.backbone(images))
        return torch.nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear",
                                               align_corners=self.decode_head.align_corners)


def randomised(model, seed=0):
    """Random weights and random batch-norm statistics (so that eval mode is not the identity on them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                elif name.endswith(("running_mean", "bias")):
                    tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
                elif name.endswith("weight") and tensor.ndim == 1:  # BN scale
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:  # conv weights, He-scaled so activations stay in range through 50-101 layers
                    fan_in = tensor[0].numel()
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
    return model.eval()
