"""One uploaded photo -> its faces, each with a box, p_fake, a verdict and (optionally) a heat map.

Face finding, cropping and scoring are `fakeface.Detector`'s, as in predict and the Python API;
this module adds the limits a server needs (decoding an upload) and the heat maps.
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

from fakeface.deploy.modelfile import ClassifierInfo
from fakeface.detector import Detector
from fakeface.preprocess import to_rgb, to_tensor


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
        detector: the scoring path every command shares (`fakeface.Detector`): the model, the
            face detector, margin, precision, TTA and the most faces per photo.
    """

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.info: ClassifierInfo = detector.info
        self.lock = threading.Lock()

    def faces(self, image: Image.Image, heatmaps: bool = False) -> list[dict[str, Any]]:
        """Every face found (largest first): box [x, y, w, h], p_fake, verdict, heat map."""
        with self.lock:
            crops = self.detector.cut(image)
            (result,) = self.detector.score([crops])
            column = self.info.class_names.index("fake")
            maps = [
                heatmap(self.detector.network, to_tensor(pixels), column)
                for pixels in (crops.pixels if heatmaps else [])
            ]
        return [
            {
                "box": list(face.box),
                "p_fake": face.p_fake,
                "verdict": face.verdict,
                "novelty": face.novelty,
                "note": face.note,
                **({"heatmap": maps[i]} if heatmaps else {}),
            }
            for i, face in enumerate(result.faces)
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
