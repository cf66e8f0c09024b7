"""One uploaded photo -> its faces, each with a box, p_fake, a verdict and (optionally) a heat map.

Decoding, face finding, cropping and scoring are predict's (`fakeface.preprocess`,
`fakeface.deploy.inference.face_crops`, `fakeface.deploy.modelfile.classify`); this module adds
the limits a server needs and the heat maps.
"""

from __future__ import annotations

import base64
import io
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fakeface.deploy.inference import face_crops
from fakeface.deploy.modelfile import ClassifierInfo, classify, verdict
from fakeface.preprocess import preprocess, to_rgb


class UploadError(Exception):
    """A file the server will not score: `status` is the HTTP status of its error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What one upload may be: bytes of one file, pixels of one image."""

    max_file_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000  # a 40-megapixel photo; larger is refused before decoding


def decode(data: bytes, name: str, limits: Limits) -> Image.Image:
    """Upload bytes -> RGB image; UploadError (4xx) naming the file for anything unusable."""
    if not data:
        raise UploadError(400, f"{name}: the file is empty")
    if len(data) > limits.max_file_bytes:
        raise UploadError(
            413,
            f"{name}: {len(data) / 2**20:.1f} MB is over the limit of "
            f"{limits.max_file_bytes / 2**20:.0f} MB per file (serve.max_file_mb)",
        )
    try:
        # Pillow reads the header only here; the pixel count is checked before any decoding,
        # so a small file that would expand to gigabytes (a decompression bomb) costs nothing.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise UploadError(
                    413,
                    f"{name}: {width}x{height} pixels is over the limit of "
                    f"{limits.max_pixels / 1e6:.0f} megapixels (serve.max_megapixels)",
                )
            image.load()
    except UploadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise UploadError(413, f"{name}: too many pixels to decode safely ({err})") from None
    except UnidentifiedImageError:
        raise UploadError(
            415, f"{name}: not an image Pillow can read (JPEG, PNG, WebP, ...)"
        ) from None
    except (OSError, ValueError, SyntaxError, Warning) as err:
        raise UploadError(400, f"{name}: the image is damaged or truncated ({err})") from None
    return to_rgb(image)


class Analyser:
    """Faces, scores and heat maps for decoded photos; one at a time (a lock), as the CPU is shared.

    Args:
        model, info: the classifier file (`load_classifier`).
        detector: a face detector (`build_detector`).
        margin: crop margin around each face box (predict's `margin`).
        dtype: autocast dtype for scoring (None: fp32).
        tta: average with the mirror image.
        max_faces: faces scored per photo, largest first.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ClassifierInfo,
        detector: Any,
        margin: float = 0.4,
        dtype: torch.dtype | None = None,
        tta: bool = False,
        max_faces: int = 20,
    ) -> None:
        self.model, self.info, self.detector = model, info, detector
        self.margin, self.dtype, self.tta, self.max_faces = margin, dtype, tta, max_faces
        self.lock = threading.Lock()

    def faces(self, image: Image.Image, heatmaps: bool = False) -> list[dict[str, Any]]:
        """Every face found (largest first): box [x, y, w, h], p_fake, verdict, heat map."""
        with self.lock:
            found = face_crops(image, self.detector, self.margin, limit=self.max_faces)
            if not found:
                return []
            x = torch.stack([preprocess(crop, self.info.image_size) for _, crop in found])
            column = self.info.class_names.index("fake")
            p_fake = classify(self.model, x, self.dtype, self.tta)[:, column].tolist()
            maps = (
                [heatmap(self.model, x[i], column) for i in range(len(found))] if heatmaps else []
            )
        return [
            {
                "box": list(box),
                "p_fake": round(float(p), 4),
                "verdict": verdict(float(p), self.info),
                **({"heatmap": maps[i]} if heatmaps else {}),
            }
            for i, ((box, _), p) in enumerate(zip(found, p_fake, strict=True))
        ]


def heatmap(model: torch.nn.Module, x: torch.Tensor, column: int) -> str | None:
    """Where the model looked for `fake` on one face (3 x S x S), as a PNG data URL; None for a
    model without gradients (ONNX).

    Captum's integrated gradients (16 steps from a black image), summed over colour channels,
    smoothed and drawn as a red-yellow map over the grey face.
    """
    if getattr(model, "runs_own_precision", False):
        return None  # an ONNX Runtime session: no gradients to follow
    from captum.attr import IntegratedGradients
    from matplotlib import colormaps

    # The file returns probabilities; attribute p_fake, in fp32 (gradients of bf16 are coarse).
    explainer = IntegratedGradients(lambda inputs: model(inputs)[:, column])
    with torch.enable_grad():
        attr = explainer.attribute(x[None], n_steps=16, internal_batch_size=16)
    saliency = attr[0].abs().sum(0, keepdim=True)[None]  # 1 x 1 x S x S
    saliency = torch.nn.functional.avg_pool2d(saliency, 9, stride=1, padding=4)[0, 0]
    saliency = (saliency / saliency.max().clamp_min(1e-12)).numpy()
    colour = colormaps["inferno"](saliency)[..., :3]
    grey = x.mean(0, keepdim=True).permute(1, 2, 0).numpy()
    blend = 0.45 * grey + 0.55 * colour
    png = io.BytesIO()
    Image.fromarray((np.clip(blend, 0, 1) * 255).astype(np.uint8)).save(png, "PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
