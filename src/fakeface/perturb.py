"""Image perturbations for robustness checks and robust training: PIL RGB image in, PIL RGB out.

Each one works on the decoded full-resolution image, before `fakeface.preprocess` resizes it,
and is deterministic (same image, same output). `PERTURBATIONS` is the sweep that
`python -m fakeface.evaluate robustness=true` runs; `perturbation(name)` also parses other
strengths ("jpeg60", "blur3", "down0.33", "crop0.9"). `random_robust` is the training-time
augmentation of Wang et al. 2020 ("CNN-generated images are surprisingly easy to spot... for now").

Imports only Pillow, numpy and `fakeface.preprocess` (no Lightning, no Hydra): the data pipeline
and DataLoader workers use it.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Callable
from functools import partial

import numpy as np
from PIL import Image, ImageFilter

from fakeface.preprocess import to_rgb

Perturbation = Callable[[Image.Image], Image.Image]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at `quality` (Pillow's 1-100 scale, 4:2:0 chroma) and decode again."""
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")  # convert() loads the pixels before the buffer goes


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` in pixels of the full-resolution image."""
    return to_rgb(image).filter(ImageFilter.GaussianBlur(radius=sigma))  # Pillow: radius = sigma


def down_up(image: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` (0.5: half the side) and upscale back to the same size, bilinear."""
    image = to_rgb(image)
    width, height = image.size
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.Resampling.BILINEAR
    return image.resize(small, resample).resize((width, height), resample)


def centre_crop(image: Image.Image, keep: float) -> Image.Image:
    """The central `keep` fraction of each side (0.8: 80% of width and height); the size shrinks."""
    image = to_rgb(image)
    width, height = image.size
    crop_w, crop_h = max(1, round(width * keep)), max(1, round(height * keep))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


# Name prefix -> (function, its strength keyword, parse the strength, check it, what it means).
_KINDS: dict[str, tuple[Callable[..., Image.Image], str, type, Callable[[float], bool], str]] = {
    "jpeg": (jpeg, "quality", int, lambda q: 1 <= q <= 100, "JPEG quality 1-100"),
    "blur": (gaussian_blur, "sigma", float, lambda s: s > 0, "Gaussian sigma > 0 px"),
    "down": (down_up, "factor", float, lambda f: 0 < f < 1, "scale factor in (0, 1)"),
    "crop": (centre_crop, "keep", float, lambda k: 0 < k <= 1, "kept fraction in (0, 1]"),
}
_NAME = re.compile(r"(jpeg|blur|down|crop)(\d+(?:\.\d+)?)")


def perturbation(name: str) -> Perturbation:
    """The perturbation called `name`: `jpeg<quality>`, `blur<sigma>`, `down<factor>`, `crop<keep>`."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(
            f"unknown perturbation {name!r}: use jpeg<quality>, blur<sigma>, down<factor> or "
            f"crop<keep>, e.g. {', '.join(SWEEP)}"
        )
    kind, text = match.groups()
    function, keyword, parse, valid, meaning = _KINDS[kind]
    try:
        strength = parse(text)
    except ValueError:
        raise ValueError(f"perturbation {name!r}: {text!r} is not a {meaning}") from None
    if not valid(strength):
        raise ValueError(f"perturbation {name!r}: {text} is not a {meaning}")
    # partial of a module-level function: picklable, so DataLoader workers can receive it.
    return partial(function, **{keyword: strength})


# The default robustness sweep (evaluate's `perturbations`): name -> function.
SWEEP = ("jpeg90", "jpeg75", "jpeg50", "jpeg30", "blur1", "blur2", "down0.5", "down0.25", "crop0.8")
PERTURBATIONS: dict[str, Perturbation] = {name: perturbation(name) for name in SWEEP}


def random_robust(image: Image.Image, rng: np.random.Generator | random.Random) -> Image.Image:
    """Wang et al. 2020 training augmentation: each with probability 0.5, blur then re-JPEG.

    Blur sigma ~ U[0, 3) px, JPEG quality ~ U{30, ..., 100}; flips are done elsewhere.

    Args:
        image: a decoded RGB image at full resolution (before the resize of `preprocess`).
        rng: the caller's generator (numpy or stdlib; only `.random()` is used), so that
            each DataLoader worker's seeding decides the draws.
    """
    if rng.random() < 0.5:
        image = gaussian_blur(image, 3.0 * rng.random())
    if rng.random() < 0.5:
        image = jpeg(image, 30 + min(int(71 * rng.random()), 70))  # 71 equally likely qualities
    return to_rgb(image)
