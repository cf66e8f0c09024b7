"""The one image -> tensor path, shared by training, export, predict and realtime.

The contract (as in the original project): RGB, resized to `size` x `size`, scaled by 1/255,
no mean/std normalisation. Decoding and resizing use Pillow for files and for live frames alike,
so the same pixels always give the same tensor.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from fakeface.errors import BadImageError, ConfigError

IMAGE_SIZE = 128
SCALE = 1.0 / 255.0

# What Pillow decodes in practice: the one list every command (training, predict, evaluate,
# realtime, inspect) uses to tell images from a folder's other files (CSV, JSON, ...).
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".jfif", ".jp2", ".ico", ".tga",
)  # fmt: skip

# A decompression-bomb guard that still lets through the large photos people really have.
Image.MAX_IMAGE_PIXELS = 200_000_000


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, LA, P, RGBA, CMYK, I;16, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer: rescale the full range to 8 bits before the RGB conversion.
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, the way viewers show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file to RGB; raise BadImageError naming the file if it cannot be read."""
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot read image {path}: {err}") from err


def resize_rgb(image: Image.Image | np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize an RGB image (Pillow image or HxWx3 uint8 array) to a size x size x 3 uint8 array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.shape} {image.dtype}")
        image = Image.fromarray(image, "RGB")
    else:
        image = to_rgb(image)
    if image.size != (size, size):
        # Bilinear with Pillow's antialiasing support for downscaling (like Keras' default resize).
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)  # a writable copy, so torch can share it


def to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 HxWx3 (or NxHxWx3) RGB -> float32 CHW (or NCHW) in [0, 1]."""
    t = torch.as_tensor(pixels)
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {t.dtype}")
    return t.movedim(-1, -3).float().mul_(SCALE)


def preprocess(image: Image.Image | np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Image (Pillow, or RGB uint8 array) -> float32 3 x size x size tensor in [0, 1]."""
    return to_tensor(resize_rgb(image, size))


def preprocess_file(path: str | Path, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Image file -> float32 3 x size x size tensor in [0, 1]."""
    return preprocess(load_image(path), size)


def is_image(path: str | Path) -> bool:
    """True when `path`'s suffix is one of IMAGE_SUFFIXES (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def find_images(spec: str | Path, key: str = "input") -> list[Path]:
    """The files `spec` names: one file, every image under a folder (recursively), or a glob.

    Args:
        spec: a file, a folder, or a glob pattern ("faces/**/*.jpg").
        key: the config key that gave `spec`, named in the error when nothing matches.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and is_image(p))
        if not found:
            raise ConfigError(
                f"{key}={spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        return found
    # A glob names files explicitly: keep every match, unreadable ones get reported.
    found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise ConfigError(f"{key}={spec}: no such file or folder, and no file matches it as a glob")
    return found
