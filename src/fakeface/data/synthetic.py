"""A small, embedded stand-in for Kaggle's "140k Real and Fake Faces", generated offline.

Layout: ROOT/{train,valid,test}/{fake,real}/{index:05d}.jpg, RGB JPEG, balanced classes.
"real" faces are drawn at full resolution, with random defocus; "fake" faces come from the same
renderer (same parameter distribution) reduced to a quarter of the resolution, then go through two
transposed-convolution-style x2 upsamplings (zero insertion + a slightly unbalanced kernel) that
leave the faint periodic trace GAN detectors key on. Both classes then get the same sensor noise
and the same JPEG encoding, so neither noise nor file format is a shortcut.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from rich.progress import Progress

from fakeface import CLASS_NAMES, SPLITS
from fakeface.cli import hydra_main
from fakeface.errors import ConfigError, DatasetError

MANIFEST = "synthetic.json"
MARKER = ".synthetic-incomplete"  # exists only while a generation is in progress
VERSION = 1  # bump when the renderer changes, so old datasets get regenerated

_SKIN = np.array([[240, 205, 180], [200, 150, 115], [140, 95, 65], [80, 52, 36]], np.float32)
_HAIR = np.array(
    [[20, 15, 12], [75, 45, 25], [130, 85, 45], [215, 180, 110], [165, 70, 35], [170, 170, 165]],
    np.float32,
)
_IRIS = np.array([[70, 40, 20], [60, 110, 170], [70, 120, 70], [120, 90, 40]], np.float32)
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are passed in 1/16 pixel
_AA = {"lineType": cv2.LINE_AA, "shift": _SHIFT}


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float = 12.0) -> np.ndarray:
    """A random blend of two neighbouring palette entries, plus per-channel jitter."""
    t = rng.uniform(0, len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    base = palette[i] + (t - i) * (palette[i + 1] - palette[i])
    return np.clip(base + rng.normal(0, jitter, 3), 0, 255)


def _face_params(rng: np.random.Generator) -> dict:
    """Draw one face's parameters, in image fractions, independent of the output resolution."""
    skin = _colour(rng, _SKIN)
    return {
        "bg": [rng.uniform(20, 235, 3) for _ in range(2)],  # gradient end colours
        "bg_angle": rng.uniform(0, 2 * math.pi),
        "blobs": [
            (rng.uniform(0, 1, 2), rng.uniform(0.08, 0.3), rng.uniform(0, 255, 3))
            for _ in range(rng.integers(0, 4))
        ],
        "centre": np.array([0.5, 0.52]) + rng.normal(0, 0.035, 2),
        "radii": np.array([0.21, 0.28]) * rng.uniform(0.85, 1.15) * [1, rng.uniform(0.9, 1.1)],
        "tilt": rng.normal(0, 8),  # degrees of in-plane head rotation
        "skin": skin,
        "cloth": rng.uniform(10, 245, 3),
        "hair": _colour(rng, _HAIR, 8),
        "hair_style": rng.choice(["bald", "short", "long", "fringe"], p=[0.1, 0.4, 0.3, 0.2]),
        "iris": _colour(rng, _IRIS, 10),
        "eye_gap": rng.uniform(0.36, 0.46),  # half the distance between eyes, in head radii
        "eye_y": rng.uniform(-0.2, -0.05),
        "eye_size": rng.uniform(0.13, 0.19),
        "brow_lift": rng.uniform(0.1, 0.2),
        "nose_len": rng.uniform(0.2, 0.32),
        "mouth_y": rng.uniform(0.42, 0.55),
        "mouth_w": rng.uniform(0.25, 0.42),
        "smile": rng.uniform(-0.04, 0.1),
        "lips": 0.55 * skin + 0.45 * np.array([185, 60, 70]),
        "light": rng.uniform(0, 0.35) * np.array([math.cos(a := rng.uniform(0, 6.3)), math.sin(a)]),
    }


def _background(p: dict, size: int) -> np.ndarray:
    """A colour gradient with soft blobs (lamps, furniture, leaves): uint8 RGB, size x size.

    It is smooth, so it is drawn at 64 x 64 and upscaled, which saves most of the render time.
    """
    n = 64
    x = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    (c0, c1), a = p["bg"], p["bg_angle"]
    t = np.clip(x[None, :] * math.cos(a) + x[:, None] * math.sin(a) + 0.5, 0, 1)[..., None]
    img = c0 + t * (c1 - c0)
    for centre, radius, colour in p["blobs"]:
        mask = np.zeros((n, n), np.float32)
        cv2.circle(mask, _pt(centre * n), round(radius * n * 16), 1.0, -1, **_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), radius * n / 6)[..., None] * 0.7
        img = img * (1 - mask) + colour * mask
    img = cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _render(p: dict, size: int) -> np.ndarray:
    """Draw a face from `p` at size x size; returns float32 RGB in 0..255 (no noise yet)."""
    img = _background(p, size)
    (cx, cy), (rx, ry) = p["centre"] * size, p["radii"] * size
    cos, sin = math.cos(math.radians(p["tilt"])), math.sin(math.radians(p["tilt"]))

    def at(x: float, y: float) -> tuple[int, int]:
        # head coordinates (units of the head radii, origin at its centre) -> rotated pixels
        dx, dy = x * rx, y * ry
        return _pt((cx + dx * cos - dy * sin, cy + dx * sin + dy * cos))

    def oval(x, y, ax, ay, colour, deg=0.0, start=0, end=360, thick=-1.0) -> None:
        # an ellipse (or arc when thick > 0, in head radii) in head coordinates, tilted with it
        axes = (round(ax * rx * 16), round(ay * ry * 16))
        width = -1 if thick < 0 else max(1, round(thick * rx))
        rgb = np.asarray(colour).tolist()
        cv2.ellipse(img, at(x, y), axes, p["tilt"] + deg, start, end, rgb, width, **_AA)

    skin, hair, style = p["skin"], p["hair"], p["hair_style"]
    shade = skin * 0.8
    if style == "long":  # hangs behind neck and shoulders
        oval(0, 0.5, 1.25, 1.45, hair)
    oval(0, 2.4, 2.3, 1.0, p["cloth"])  # shoulders
    oval(0, 1.1, 0.42, 0.5, shade)  # neck
    if style != "bald":
        oval(0, -0.12, 1.12, 1.0, hair)  # the hair cap shows above the face drawn next
    oval(-1.0, 0.0, 0.16, 0.22, shade)  # ears
    oval(1.0, 0.0, 0.16, 0.22, shade)
    oval(0, 0.08, 1.0, 0.92, skin)
    if style == "fringe":
        oval(0, -0.75, 0.95, 0.4, hair, 0, 180, 360)
    for side in (-1, 1):
        x, y, s = side * p["eye_gap"], p["eye_y"], p["eye_size"]
        oval(x, y, s * 1.6, s * 0.75, (235, 232, 225))  # eye white
        oval(x, y, s * 0.6, s * 0.6 * rx / ry, p["iris"])
        oval(x, y, s * 0.28, s * 0.28 * rx / ry, (15, 12, 10))  # pupil
        oval(x, y - s * 0.35, s * 1.7, s * 0.9, hair * 0.5 + shade * 0.4, 0, 200, 340, 0.05)
        oval(x, y - p["brow_lift"], s * 1.9, 0.08, hair, side * 6, 190, 350, 0.07)  # brow
    nose = p["nose_len"]
    bridge = (at(0.02, p["eye_y"] + 0.1), at(0.06, p["eye_y"] + 0.1 + nose))
    cv2.line(img, *bridge, (shade * 0.85).tolist(), max(1, round(0.05 * rx)), **_AA)
    oval(0, p["eye_y"] + 0.14 + nose, 0.16, 0.06, shade * 0.8)  # nostrils shadow
    w, my, smile = p["mouth_w"], p["mouth_y"], p["smile"]
    oval(0, my - smile, w, 0.06 + smile, p["lips"], 0, 0, 180)  # lower lip
    oval(0, my, w, 0.05, p["lips"] * 0.85, 0, 180, 360)  # upper lip
    cv2.line(img, at(-w, my), at(w, my), (p["lips"] * 0.5).tolist(), 1, **_AA)

    # Directional light plus a vignette, as a per-pixel gain.
    x = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    x, y = x[None, :], x[:, None]
    gain = 1 + 2 * (p["light"][0] * x + p["light"][1] * y) - 0.25 * (x**2 + y**2)
    return img.astype(np.float32) * gain[..., None]


def _pt(xy) -> tuple[int, int]:
    """Pixel coordinates -> cv2's fixed-point integers (see _SHIFT)."""
    return round(float(xy[0]) * 16), round(float(xy[1]) * 16)


def _upsample2(img: np.ndarray, edge: float) -> np.ndarray:
    """Transposed-convolution-style x2: zero insertion, then the separable kernel [e, 1, e].

    With e = 0.5 this is exact linear interpolation; any other e gives odd and even output pixels
    different gains, the periodic "checkerboard" trace of learned upsamplers.
    """
    h, w, c = img.shape
    up = np.zeros((2 * h, 2 * w, c), np.float32)
    up[::2, ::2] = img
    k = np.array([edge, 1.0, edge], np.float32)
    return cv2.sepFilter2D(up, -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def render_image(seed: int, split: int, cls: int, index: int, size: int = 256) -> np.ndarray:
    """Render one dataset image (cls 0 = fake, 1 = real) as a size x size x 3 uint8 RGB array."""
    rng = np.random.default_rng([seed, split, cls, index])
    p = _face_params(rng)
    if CLASS_NAMES[cls] == "real":
        img = _render(p, size)
        blur = rng.uniform(0.0, 2.2)  # defocus, in pixels at full size
        if blur > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), blur)
    else:
        # The "generator" works at a quarter of the resolution (area-averaged, so thin lines keep
        # their real widths rather than the 1-pixel minimum of drawing at low resolution).
        base = cv2.resize(_render(p, size), (size // 4,) * 2, interpolation=cv2.INTER_AREA)
        # Fingerprint strength: each upsampling gives odd rows and columns the gain 2 * edge.
        edges = 0.5 + rng.choice([-1, 1], 2) * rng.uniform([0.001, 0.005], [0.015, 0.04])
        img = _upsample2(_upsample2(base, edges[0]), edges[1])
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7))  # generators are smooth
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)  # if size % 4 != 0
    # Sensor noise, for both classes alike: generators learn to imitate it.
    img += rng.standard_normal(img.shape, np.float32) * np.float32(rng.uniform(1.0, 5.0))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _manifest(counts: dict[str, int], seed: int, image_size: int, quality: int) -> dict:
    """Validate the parameters; return the manifest: everything that determines the bytes."""
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"n_{split} must be an integer >= 2 (one image per class), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64:
        raise ConfigError(f"image_size must be an integer >= 64, got {image_size!r}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"quality must be in 1..100, got {quality!r}")
    return {
        "generator": "fakeface.data.synthetic",
        "version": VERSION,
        "counts": counts,
        "seed": seed,
        "image_size": image_size,
        "quality": quality,
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _clear(root: Path) -> None:
    """Delete the split folders of an earlier (or half-written) synthetic set under root, and
    mark root as being written; DatasetError if they hold data this generator did not write."""
    ours = (root / MANIFEST).exists() or (root / MARKER).exists()
    stale = [root / s for s in SPLITS if (root / s).exists()]
    if not ours and any(any(d.rglob("*")) for d in stale):
        raise DatasetError(
            f"{root} already holds {', '.join(d.name for d in stale)} without"
            f" a {MANIFEST}: not overwriting data this generator did not write"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).touch()  # from here on, the split folders are ours to delete after a crash
    (root / MANIFEST).unlink(missing_ok=True)
    for folder in stale:
        shutil.rmtree(folder)


def _write_images(
    root: Path, counts: dict[str, int], seed: int, image_size: int, quality: int
) -> None:
    """Render and save every image: root/<split>/<class>/<i:05d>.jpg, fake gets the odd one."""
    jobs = [
        (s, c, i)
        for s, n in enumerate(counts.values())
        for c in (0, 1)
        for i in range((n + 1 - c) // 2)
    ]
    with Progress(transient=True) as progress:
        task = progress.add_task(f"Synthetic faces -> {root}", total=len(jobs))
        for s, c, i in jobs:
            folder = root / SPLITS[s] / CLASS_NAMES[c]
            if i == 0:
                folder.mkdir(parents=True)
            pixels = render_image(seed, s, c, i, image_size)
            Image.fromarray(pixels, "RGB").save(folder / f"{i:05d}.jpg", quality=quality)
            progress.advance(task)


def generate_synthetic(
    root: str | Path,
    n_train: int = 2000,
    n_valid: int = 400,
    n_test: int = 400,
    seed: int = 0,
    image_size: int = 256,
    quality: int = 95,
) -> Path:
    """Write the dataset under root unless an identical one is already there; return root.

    Args:
        root: output folder; only its train/, valid/, test/ and synthetic.json are touched.
        n_train, n_valid, n_test: images per split (>= 2); an odd count gives the extra image
            to "fake" (fake gets ceil(n / 2), real floor(n / 2)).
        seed: base seed (>= 0); image i uses the seed (seed, split, class, i), with split
            0/1/2 = train/valid/test and class 0/1 = fake/real, so images never depend on order.
        image_size: side of the square images in pixels (>= 64).
        quality: JPEG quality, the same for both classes.

    Raises:
        ValueError: for bad sizes or quality.
        FileExistsError: if the split folders hold files this generator did not write.
    """
    root = Path(root)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    manifest = _manifest(counts, seed, image_size, quality)
    if _read_manifest(root) == manifest:
        (root / MARKER).unlink(missing_ok=True)  # left over if a run died right after finishing
        return root
    _clear(root)
    _write_images(root, counts, seed, image_size, quality)
    tmp = root / (MANIFEST + ".tmp")  # write then rename, so a manifest is never half-written
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    (root / MARKER).unlink()
    return root


@hydra_main("synthetic")
def main(cfg: DictConfig) -> None:
    """CLI: python -m fakeface.data.synthetic [data.root=...] [data.synthetic.n_train=...]."""
    root = generate_synthetic(cfg.data.root, **cfg.data.synthetic)
    print(f"synthetic dataset ready in {root}")


if __name__ == "__main__":
    main()
