"""Plain networks (no Lightning): the original CNN, the NPR trace network, and the DCGAN's
generator and discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fakeface.errors import ConfigError

G_NORMS = ("none", "batch")


def _seed_features(in_channels: int = 3) -> nn.Sequential:
    """The original's three conv blocks ("valid" padding, ReLU before BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(64),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 5),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(128),
        nn.MaxPool2d(2),
        nn.Dropout(0.2),
        nn.Conv2d(128, 64, 3),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(64),
        nn.MaxPool2d(2),
        nn.Dropout(0.3),
    )


def _feature_side(image_size: int) -> int:
    """Spatial side after the conv blocks: 128 -> 126 -> 63 -> 59 -> 29 -> 27 -> 13."""
    side = image_size
    for kernel in (3, 5, 3):
        side = (side - kernel + 1) // 2
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for SeedCNN (needs >= 26)")
    return side


class SeedCNN(nn.Module):
    """The original Keras CNN: 1,666,114 trainable parameters at 128x128 with 2 outputs.

    Args:
        num_outputs: 2 logits for the classifier, 1 for the GAN discriminator.
        image_size: input side in pixels; sets the width of the first dense layer.
    """

    def __init__(self, num_outputs: int = 2, image_size: int = 128) -> None:
        super().__init__()
        side = _feature_side(image_size)
        self.features = _seed_features()
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(128),
            nn.Dropout(0.2),
            nn.Linear(128, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x H x W in [0, 1] -> N x num_outputs logits (no softmax: losses take logits)
        return self.head(self.features(x))


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """The image minus its nearest-neighbour down-up copy (NPR, Tan et al. CVPR 2024).

    Each 2x2 block loses its top-left pixel's value, so what remains is how neighbouring pixels
    differ inside a block: where a generator's x2 upsampling leaves its trace, and nearly
    nothing of the face's content. The side must be even.
    """
    small = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(small, scale_factor=2.0, mode="nearest")


class _Block(nn.Module):
    """A ResNet basic block (two 3x3 convolutions, BatchNorm, a projected shortcut)."""

    def __init__(self, channels: int, out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
            nn.Conv2d(out, out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class TraceNet(nn.Module):
    """A small from-scratch ResNet on the NPR residual of the image (`model.arch=npr`).

    The residual (`npr_residual`) is taken at the model's input size before any stride, so the
    pixel grid must survive the resize: use it at the images' own side (256 for 256-px photos).
    Its values are small (standard deviation 0.02-0.06 on 256-px face photos), so a fixed gain
    of 20 brings them near unit scale before the first convolution (bf16 keeps them apart).
    0.60 M parameters.

    Args:
        num_outputs: logits.
        image_size: input side in pixels (even; >= 16).
        width: channels of the stem (the blocks have 2x, 4x, 4x).
    """

    def __init__(self, num_outputs: int = 2, image_size: int = 256, width: int = 32) -> None:
        super().__init__()
        if image_size % 2 or image_size < 16:
            raise ConfigError(
                f"model.arch=npr needs an even data.image_size >= 16, got {image_size}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(
            _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2),
            _Block(4 * width, 4 * width, 2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x S x S in [0, 1] -> N x num_outputs logits
        return self.head(self.blocks(self.stem(npr_residual(x) * 20.0)))


# The original generator's transposed-conv widths: 8 -> 16 -> 32 -> 64 -> 128 pixels.
ORIGINAL_WIDTHS = (64, 128, 64, 64)


def generator_widths(image_size: int) -> tuple[int, ...]:
    """Output channels of the x2 stages from 8 x 8 to `image_size` (a power of two >= 16).

    128 px is the original's four stages; a smaller side keeps the original's last stages (the
    ones next to the pixels), a larger one adds 128-wide stages in front.
    """
    if image_size < 16 or image_size & (image_size - 1):
        raise ConfigError(
            f"data.image_size={image_size}: the DCGAN generator doubles an 8 x 8 map, so the "
            "side must be a power of two >= 16 (e.g. 64, 128, 256)"
        )
    stages = image_size.bit_length() - 4  # log2(image_size / 8)
    extra = max(0, stages - len(ORIGINAL_WIDTHS))
    return (128,) * extra + ORIGINAL_WIDTHS[len(ORIGINAL_WIDTHS) - stages + extra :]


class Generator(nn.Module):
    """The original DCGAN generator: latent -> 8x8x128 -> x2 transposed convs -> RGB image.

    At 128 px these are the original's four stages, layer for layer; other power-of-two sides
    get one stage per doubling (`generator_widths`).

    Args:
        latent_dim: size of the noise vector (128 in the original).
        norm: `none` (the original) or `batch`: BatchNorm after the projection and after each
            transposed convolution, before its LeakyReLU (the DCGAN paper's generator).
        image_size: side of the images it makes (128 in the original).
        width: null keeps the original's widths; a number gives the last stage that many
            channels and doubles it towards the 8 x 8 map (64 px, width 32: 256-128-64-32), the
            knob that sets the generator's cost on a CPU.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        norm: str = "none",
        image_size: int = 128,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in G_NORMS:
            raise ConfigError(f"model.g_norm={norm!r}: use one of {', '.join(G_NORMS)}")
        if width is not None and width < 1:
            raise ConfigError(f"model.g_width={width}: give a channel count >= 1, or null")
        widths = generator_widths(image_size)
        if width is not None:  # the DCGAN paper's pyramid: the width halves at every doubling
            widths = tuple(width * 2 ** (len(widths) - 1 - i) for i in range(len(widths)))
        self.latent_dim, self.image_size = latent_dim, image_size
        # 8 x 8 x 128 in the original; with `width`, twice the first stage's width
        self.base = 128 if width is None else 2 * widths[0]
        self.project = nn.Linear(latent_dim, 8 * 8 * self.base)  # no activation, as the original
        # norm=none keeps the original's layers (and its state-dict keys) exactly.
        self.project_norm = nn.BatchNorm2d(self.base) if norm == "batch" else nn.Identity()
        layers: list[nn.Module] = []
        channels = self.base
        for out in widths:  # each stage doubles the side
            layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
            if norm == "batch":  # the DCGAN paper's order: convolution, BatchNorm, activation
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2))
            channels = out
        layers += [nn.Conv2d(channels, 3, 5, padding=2), nn.Sigmoid()]
        self.upsample = nn.Sequential(*layers)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Variance-preserving (He) initialisation, counting the taps each output really sums.

        Neither PyTorch's nor Keras' default initialisation keeps the signal alive through this
        normalisation-free stack: each stride-2 transposed conv sums only (4/2)^2 = 4 kernel taps
        per input channel, not 16, so the variance shrinks ~6x per layer and the untrained
        generator draws the same flat grey for every z (pixel std 1e-4). GAN training then spends
        thousands of steps just rebuilding the dependence on z. Here every hidden layer keeps unit
        scale and only the last conv starts small.
        """
        gain = nn.init.calculate_gain("leaky_relu", 0.2)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # no activation after it: unit variance out
                fan_in = module.in_features
                g = 1.0
            elif isinstance(module, nn.ConvTranspose2d):
                fan_in = module.in_channels * (module.kernel_size[0] // module.stride[0]) ** 2
                g = gain
            elif isinstance(module, nn.Conv2d):  # the last conv, into the sigmoid
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                # About a fourteenth of the He scale: the first images are grey with faint z-dependent
                # structure, not full-strength pixel noise that D rejects at once (and that G
                # then spends its first hundreds of steps smoothing away).
                g = 0.1
            else:  # BatchNorm keeps PyTorch's init (weight 1, bias 0)
                continue
            module.weight.normal_(0.0, g / fan_in**0.5)
            module.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: N x latent_dim -> N x 3 x S x S in [0, 1] (S = image_size), like the training images
        return self.upsample(self.project_norm(self.project(z).view(-1, self.base, 8, 8)))


class Discriminator(SeedCNN):
    """The SeedCNN body with one logit (the original's one-unit softmax was constant 1: fixed)."""

    def __init__(self, image_size: int = 128) -> None:
        super().__init__(num_outputs=1, image_size=image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(1)  # N logits

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's output (N x 64 x 13 x 13 at 128 px), before its dropout."""
        return self.features[:-1](x)


class DCGANDiscriminator(nn.Module):
    """The DCGAN paper's discriminator (Radford et al. 2016), one logit per image.

    Strided 4x4 convolutions halve the side four times (128 -> 8, 64 -> 4) while the width
    doubles (64 -> 512); BatchNorm on every block but the first, LeakyReLU(0.2), no pooling, no
    dropout, no dense layer; a convolution as large as the last map turns it into one logit
    (2.8 M parameters at 128 px; the paper's 4 x 4 head at 64 px).

    Args:
        width: channels of the first block (64 in the paper).
        image_size: input side in pixels, a multiple of 16.
    """

    def __init__(self, width: int = 64, image_size: int = 128) -> None:
        super().__init__()
        if image_size < 16 or image_size % 16:
            raise ConfigError(
                f"data.image_size={image_size}: the DCGAN discriminator halves the side four "
                "times, so it needs a multiple of 16 (e.g. 64, 128)"
            )
        if width < 1:
            raise ConfigError(f"model.d_width={width}: give a channel count >= 1")
        layers: list[nn.Module] = []
        channels = 3
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers.append(nn.Conv2d(channels, out, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:  # the paper leaves the first block (on raw pixels) unnormalised
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)  # N x 3 x S x S -> N x 8w x S/16 x S/16
        self.head = nn.Conv2d(channels, 1, image_size // 16)  # S/16 x S/16 -> 1 x 1
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # the paper's N(0, 0.02)
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x S x S in [0, 1] -> N logits
        return self.head(self.features(x)).flatten()

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's output (N x 8w x S/16 x S/16; 8 x 8 at 128 px)."""
        return self.features(x)
