"""Image perturbations for robustness checks and robust training: PIL RGB image in, PIL RGB out.

Each one works on the decoded full-resolution image, before `fakeface.preprocess` resizes it,
and is deterministic (same image, same output). `PERTURBATIONS` is the sweep that
`python -m fakeface.evaluate robustness=true` runs; `perturbation(name)` also parses other
strengths ("jpeg60", "blur3", "down0.33", "crop0.9"). `random_steps` draws the training-time
augmentations (data.augment), among them the blur + JPEG of Wang et al. 2020 ("CNN-generated images
are surprisingly easy to spot... for now").

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
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

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


def down_up(
    image: Image.Image, factor: float, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """Downscale by `factor` (0.5: half the side) and upscale back to the same size."""
    image = to_rgb(image)
    width, height = image.size
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
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


# The image-side training augmentations (data.augment steps; the flip is done on the tensor),
# in the order they run: a framing change, then the camera's colour, then the storage history
# (resampling, softening, and last the JPEG encoding a photo goes through before it is shared).
RANDOM_STEPS = {
    "crop": "random-resized crop: area 0.8-1, aspect 0.9-1.1, back to the image's size",
    "jitter": "brightness, contrast and saturation each x U[0.9, 1.1]",
    "light": "studio and phone light on both classes: gamma U[0.7, 1.4], contrast x U[0.75, 1.3], "
    "p=0.3 unsharp mask (radius U[1, 3) px, 50-150 %)",
    "background": "p=0.3: all but a centred ellipse (the face) replaced by a flat grey or pastel, "
    "feathered",
    "camera": "an unfamiliar capture chain, each part on its own: p=0.3 colour cast (gains "
    "x U[0.92, 1.08]), p=0.2 old colour (saturation x U[0.5, 1], blacks lifted U[0, 0.1]), p=0.2 "
    "vignetting (corners down U[0, 0.4]), p=0.2 Bayer mosaic + bilinear demosaicing, p=0.3 sensor "
    "noise (sigma U[0.005, 0.03], shot + read, p=0.5 as grain), p=0.1 black borders (2-10 %)",
    "resample": "p=0.5: down by U[0.25, 1) and back up, bilinear, bicubic or Lanczos at random",
    "blur": "p=0.5: Gaussian blur, sigma U[0, 3) px",
    "jpeg": "p=0.5: JPEG re-encoding at quality U{30..100}",
}
_FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)


def random_steps(
    image: Image.Image, rng: np.random.Generator | random.Random, steps: tuple[str, ...]
) -> Image.Image:
    """Apply the RANDOM_STEPS named in `steps` (in RANDOM_STEPS' order) with draws from `rng`.

    blur + jpeg is the training augmentation of Wang et al. 2020; resample and a wide JPEG range
    make a detector forget how its training photos were stored (resized, compressed).

    Args:
        image: a decoded RGB image at full resolution (before the resize of `preprocess`).
        rng: the caller's generator (numpy or stdlib; only `.random()` is used), so that
            each DataLoader worker's seeding decides the draws: same seed, same image.
        steps: names from RANDOM_STEPS.
    """
    image = to_rgb(image)
    width, height = image.size
    if "crop" in steps:
        area = (0.8 + 0.2 * rng.random()) * width * height
        ratio = 0.9 + 0.2 * rng.random()
        crop_w = min(width, max(1, round((area * ratio) ** 0.5)))
        crop_h = min(height, max(1, round((area / ratio) ** 0.5)))
        left = int((width - crop_w + 1) * rng.random())
        top = int((height - crop_h + 1) * rng.random())
        box = (left, top, left + crop_w, top + crop_h)
        image = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
    if "jitter" in steps:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhance(image).enhance(0.9 + 0.2 * rng.random())
    if "light" in steps:
        # Well-lit portraits (studio, beauty filters) must not read as "generated": give the
        # fakes and the reals of training the same spread of exposure, contrast and sharpening.
        gamma = 0.7 + 0.7 * rng.random()
        image = image.point(lambda v: round(255 * (v / 255) ** gamma))
        image = ImageEnhance.Contrast(image).enhance(0.75 + 0.55 * rng.random())
        if rng.random() < 0.3:
            radius, percent = 1 + 2 * rng.random(), 50 + int(100 * rng.random())
            image = image.filter(ImageFilter.UnsharpMask(radius, percent, threshold=2))
    if "background" in steps and rng.random() < 0.3:
        image = plain_background(image, rng)
    if "camera" in steps:
        image = capture_chain(image, rng)
    if "resample" in steps and rng.random() < 0.5:
        factor = 0.25 + 0.75 * rng.random()
        image = down_up(image, factor, _FILTERS[min(int(3 * rng.random()), 2)])
    if "blur" in steps and rng.random() < 0.5:
        image = gaussian_blur(image, 3.0 * rng.random())
    if "jpeg" in steps and rng.random() < 0.5:
        image = jpeg(image, 30 + min(int(71 * rng.random()), 70))  # 71 equally likely qualities
    return image


def plain_background(image: Image.Image, rng: np.random.Generator | random.Random) -> Image.Image:
    """The centred face kept, the rest a flat colour: a studio backdrop for reals and fakes alike.

    Diffusion portraits and studio photos share plain backgrounds; drawn on both classes, a plain
    backdrop stops being evidence of either. The ellipse covers the face of a centred portrait
    (FFHQ-aligned, studio or diffusion framing); its edge is feathered over ~4 % of the side.
    """
    width, height = image.size
    rx, ry = width * (0.36 + 0.1 * rng.random()), height * (0.44 + 0.1 * rng.random())
    cx, cy = width / 2, height * (0.5 + 0.06 * (rng.random() - 0.5))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(0.04 * width))
    grey = 170 + int(85 * rng.random())
    tint = [min(255, grey + int(30 * (rng.random() - 0.5))) for _ in range(3)]
    return Image.composite(image, Image.new("RGB", image.size, tuple(tint)), mask)


def capture_chain(image: Image.Image, rng: np.random.Generator | random.Random) -> Image.Image:
    """The marks of a camera and print the model never saw, drawn on fakes and reals alike.

    Real photos come from sensors, old cameras and scans the training reals do not cover; a model
    that learned "this colour science or this noise means real" reads every other camera as a
    generator. Each part is drawn on its own, so most images get one or two of them.
    """
    a = np.asarray(to_rgb(image), dtype=np.float32) / 255
    height, width = a.shape[:2]
    if rng.random() < 0.3:  # white balance: a colour cast
        a = a * np.array([0.92 + 0.16 * rng.random() for _ in range(3)], dtype=np.float32)
    if rng.random() < 0.2:  # old film or faded print: weaker colour, lifted blacks
        grey = a.mean(2, keepdims=True)
        a = grey + (0.5 + 0.5 * rng.random()) * (a - grey)
        lift = 0.1 * rng.random()
        a = lift + (1 - lift) * a
    if rng.random() < 0.2:  # lens vignetting: darker corners
        y, x = np.ogrid[:height, :width]
        r2 = ((2 * x / max(width - 1, 1) - 1) ** 2 + (2 * y / max(height - 1, 1) - 1) ** 2) / 2
        a = a * (1 - 0.4 * rng.random() * r2)[..., None]
    if rng.random() < 0.2:  # one colour per pixel (RGGB), the other two interpolated back
        a = bilinear_demosaic(a)
    if rng.random() < 0.3:  # sensor noise: shot (grows with the signal) + read, or film grain
        sigma = 0.005 + 0.025 * rng.random()
        noise = np.random.default_rng(int(rng.random() * 2**63)).standard_normal(a.shape)
        noise = noise.astype(np.float32) * np.sqrt(sigma**2 * (0.3 + np.clip(a, 0, 1)))
        if rng.random() < 0.5:
            noise = _box3(noise)  # grain: spatially correlated
        a = a + noise
    image = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.1:  # black borders, as where a crop ran past the photo's edge
        bars = [round(side * (0.02 + 0.08 * rng.random())) if rng.random() < 0.5 else 0
                for side in (width, height, width, height)]  # fmt: skip
        canvas = Image.new("RGB", image.size)
        box = (
            bars[0],
            bars[1],
            max(bars[0] + 1, width - bars[2]),
            max(bars[1] + 1, height - bars[3]),
        )
        canvas.paste(image.crop(box), box[:2])
        image = canvas
    return image


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean of each channel (edges repeated)."""
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = a.shape[:2]
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9


def bilinear_demosaic(a: np.ndarray) -> np.ndarray:
    """Keep one channel per pixel of an RGGB Bayer pattern and interpolate the rest bilinearly."""
    h, w = a.shape[:2]
    mask = np.zeros_like(a)
    mask[0::2, 0::2, 0] = 1  # R
    mask[0::2, 1::2, 1] = mask[1::2, 0::2, 1] = 1  # G
    mask[1::2, 1::2, 2] = 1  # B
    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]], dtype=np.float32)
    p_val = np.pad(a * mask, ((1, 1), (1, 1), (0, 0)))
    p_mask = np.pad(mask, ((1, 1), (1, 1), (0, 0)))
    total = np.zeros_like(a)
    weight = np.zeros_like(a)
    for i in range(3):
        for j in range(3):
            total += kernel[i, j] * p_val[i : i + h, j : j + w]
            weight += kernel[i, j] * p_mask[i : i + h, j : j + w]
    return np.where(mask > 0, a, total / np.maximum(weight, 1e-6))


# ---------------------------------------------------------------------------------------------
# The storage-history stress test (evaluate's robustness=history): each class re-stored the
# other way round. faces-dev-like sets store their reals as JPEG at about q75 at 1024 px and
# their fakes near-losslessly before a common resize; a model that learned that history, not
# the generator, moves when the histories are swapped.

HISTORY_SIDE = 1024  # the high resolution of the re-storing, in pixels (the longer side)
HISTORY_QUALITY = 75


def restore(
    image: Image.Image, quality: int | None = None, side: int = HISTORY_SIDE
) -> Image.Image:
    """Upsample (Lanczos) so the longer side is `side`, then JPEG at `quality` (None: lossless).

    Deterministic: the same image always comes back the same. The model's own resize then
    brings the image back to its input size, as a photo stored large and shown small would be.
    """
    image = to_rgb(image)
    width, height = image.size
    scale = side / max(width, height)
    image = image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS
    )
    return image if quality is None else jpeg(image, quality)


# Variant name -> (what the reals go through, what the fakes go through): `lossless` is the
# control (both upsampled, nothing compressed), `real-jpeg` stores the reals as faces-dev's were
# (JPEG) and the fakes losslessly, `fake-jpeg` is the swap.
HISTORY_PATHS = {"lossless": (None, None), "real-jpeg": (HISTORY_QUALITY, None),
                 "fake-jpeg": (None, HISTORY_QUALITY)}  # fmt: skip


def history_variants() -> dict[str, dict[str, Perturbation]]:
    """`history:<name>` -> {"real": perturbation, "fake": perturbation} for each HISTORY_PATHS."""
    return {
        f"history:{name}": {
            "real": partial(restore, quality=real),
            "fake": partial(restore, quality=fake),
        }
        for name, (real, fake) in HISTORY_PATHS.items()
    }
