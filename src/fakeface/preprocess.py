"""The one image -> tensor path, shared by training, export, predict and realtime.

The contract (as in the original project): RGB, resized to `size` x `size`, scaled by 1/255,
no mean/std normalisation. Decoding and resizing use Pillow for files and for live frames alike,
so the same pixels always give the same tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

IMAGE_SIZE = 128
SCALE = 1.0 / 255.0

# A decompression-bomb guard that still lets through the large photos people really have.
Image.MAX_IMAGE_PIXELS = 200_000_000


class BadImageError(ValueError):
    """An image file that cannot be decoded into RGB pixels."""


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
