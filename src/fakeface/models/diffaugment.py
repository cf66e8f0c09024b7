"""DiffAugment (Zhao et al. 2020): differentiable augmentation of real and generated images
before the discriminator (`model.diffaugment` of the DCGAN)."""

from __future__ import annotations

import torch

from fakeface.errors import ConfigError

AUGMENTS = ("color", "translation", "cutout")


def _brightness(x: torch.Tensor) -> torch.Tensor:
    # one offset per image, U(-0.25, 0.25): DiffAugment's U(-0.5, 0.5) on [-1, 1] images
    return x + (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5) / 2


def _saturation(x: torch.Tensor) -> torch.Tensor:
    # each pixel's distance from its grey level scaled by U(0, 2)
    grey = x.mean(dim=1, keepdim=True)
    return grey + (x - grey) * (2 * torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype))


def _contrast(x: torch.Tensor) -> torch.Tensor:
    # distance from the image's mean scaled by U(0.5, 1.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5)


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side in x and y; uncovered pixels are 0."""
    n, _, h, w = x.shape
    max_y, max_x = round(h * ratio), round(w * ratio)
    dy = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy  # n x h x 1: source row
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx  # n x 1 x w: source column
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # n x h x w
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # advanced indexing gathers n x h x w x c (differentiable: a gather's backward is a scatter)
    moved = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1), cols.clamp(0, w - 1)]
    return (moved * inside.unsqueeze(-1).to(x.dtype)).permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` x the side per image, centred anywhere (it may be clipped)."""
    n, _, h, w = x.shape
    half_y, half_x = round(h * ratio) // 2, round(w * ratio) // 2
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = ((rows - cy).abs() < half_y) & ((cols - cx).abs() < half_x)  # n x h x w
    return x * (~hole).unsqueeze(1).to(x.dtype)


_AUGMENT_FNS = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


def parse_diffaugment(policy: str | None) -> tuple[str, ...]:
    """`"color,translation,cutout"` -> its names, checked; None or "" -> () (off)."""
    if policy is None:
        return ()
    names = tuple(name.strip() for name in str(policy).split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTS]
    if unknown:
        raise ConfigError(
            f"model.diffaugment={policy!r}: unknown {', '.join(unknown)}; use null or a "
            f"comma-separated subset of {','.join(AUGMENTS)}"
        )
    return names


def diffaugment(x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020) of N x 3 x H x W images in [0, 1].

    Each image draws its own parameters; gradients flow through every transform, so the same
    call can sit before D in the D step (real and fake) and in the G step.
    """
    for name in names:
        for fn in _AUGMENT_FNS[name]:
            x = fn(x)
    return x
