"""Kernel inception distance (KID, Binkowski et al. 2018) on features fakeface already ships.

The features are the pooled 1,280-d penultimate layer of the ImageNet EfficientNet-Lite0 whose
weights come in a pip package (fakeface.models.backbones), not Inception-v3's: nothing is
downloaded, and the numbers are NOT comparable with published KID or FID values. They compare
runs and checkpoints of this project with each other (lower = closer to the real photos).

KID is the squared maximum mean discrepancy between the two feature sets under the polynomial
kernel k(x, y) = (x.y / d + 1)^3, estimated without bias: about 0 for two samples of the same
distribution (it can come out slightly negative: one set against itself gives about -2/n times
the mean self-similarity), > 0 when they differ. Unlike FID it needs no
covariance of 1,280 dimensions, so a few hundred images give a usable value.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_SIZE = (
    128  # the side images are resized to: the released detector runs Lite0 at 128 too, and 224
)
# costs three times as much (about 0.25 s an image on 2 busy CPU cores) for a curve that only ranks


class KIDFeatures:
    """ImageNet EfficientNet-Lite0 features (N x 1280 float64) of N x 3 x H x W images in [0, 1].

    Args:
        device: where the network runs.
        batch_size: images per forward pass (memory, not results).
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        from fakeface.models.backbones import imagenet_backbone

        self.net = imagenet_backbone("efficientnet_lite0", pretrained=True, drop_rate=0.0)
        self.net = self.net.eval().requires_grad_(False).to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(images, np.ndarray):  # N x H x W x 3 uint8 RGB, as ganreport's images
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        out = []
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device, torch.float32)
            x = F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", antialias=True)
            x = x * (255.0 / 128.0) - (127.0 / 128.0)  # the weights' (pixel - 127) / 128
            # fp32 on purpose: bf16 features would move a KID of 1e-3 by their own rounding
            pooled = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
            out.append(pooled.double().cpu())
        return torch.cat(out)


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel between N x d and M x d features."""
    n, m, d = len(a), len(b), a.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"KID needs at least 2 images in each set (got {n} and {m})")
    a, b = a.double(), b.double()
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    # The diagonals k(x, x) are left out of the within-set means: that is what removes the bias.
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return float(within_a + within_b - 2 * k_ab.mean())
