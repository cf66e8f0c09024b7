"""How good are a GAN's samples? Measures that need no download (docs/dcgan.md: the report).

- face rate: the fraction of images in which a face detector (MTCNN by default, the detector of
  predict detect=true; Haar with `detector=default`) finds a face, for the samples and for the
  reference photos, both looked at 128 x 128 (MTCNN's smallest face is 40 px);
- diversity ratio: the mean pairwise distance among the samples over the same among the reference
  photos (mode collapse drives it far below 1);
- memorisation: each sample's distance to its nearest reference (training) image, against the
  nearest-neighbour distances among the reference photos themselves;
- KID (fakeface.evaluation.kid) to a set of real photos, on EfficientNet-Lite0 features: not
  comparable with published, Inception-based KID or FID.

Distances are taken between 32 x 32 RGB thumbnails (area-averaged, values in [0, 1]) as the root
mean square pixel difference: 0 for identical thumbnails, about 0.3 for two unrelated photos. The
thumbnail keeps layout, colour and the coarse face, and ignores the fine texture a 128 x 128 GAN
draws differently from a photo, so a blurry copy of a training face still counts as a copy.

Images are N x H x W x 3 uint8 RGB arrays throughout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

THUMB = 32  # side of the thumbnails distances are measured on
DETECT_SIDE = 128  # images are looked at this size for the face rate (64-px faces are too small)
REFERENCE_STATS = 1000  # reference photos (a seeded subset) for its face rate and pairwise distance
NEAR_COPY = 0.5  # a sample is a near-copy below this fraction of the median real-real NN distance


def load_images(folder: str | Path, size: int = 128, key: str = "reference") -> np.ndarray:
    """Every image under `folder` (recursively), resized to size x size like training: N x S x S x 3."""
    from fakeface.preprocess import find_images, load_image, resize_rgb

    paths = find_images(folder, key=key)
    return np.stack([resize_rgb(load_image(p), size) for p in paths])


def face_rate(images: np.ndarray, detector: Any | None = None) -> float:
    """Fraction of `images` (N x H x W x 3 uint8 RGB) with at least one detected face.

    Args:
        detector: a callable on a BGR uint8 frame returning K x 4 boxes; default: the real-time
            FaceDetector with its default preset (conf/detector/default.yaml).
    """
    if detector is None:
        from fakeface.faces.detect import FaceDetector

        detector = FaceDetector()
    if len(images) == 0:
        return float("nan")
    if images.shape[1] < DETECT_SIDE:  # the same upscale for samples and reference photos
        from fakeface.preprocess import resize_rgb

        images = np.stack([resize_rgb(image, DETECT_SIDE) for image in images])
    # RGB -> BGR, as the detector reads camera frames (its grayscale weights are channel-specific)
    found = [len(detector(np.ascontiguousarray(image[..., ::-1]))) > 0 for image in images]
    return float(np.mean(found))


def thumbnails(images: np.ndarray, side: int = THUMB) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x (3 * side * side) float64 in [0, 1] (area-averaged)."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).double() / 255
    if x.shape[-1] != side or x.shape[-2] != side:
        x = F.interpolate(x, size=(side, side), mode="area")
    return x.flatten(1)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMS pixel difference between every row of `a` and every row of `b` (len(a) x len(b))."""
    return torch.cdist(a, b) / a.shape[1] ** 0.5


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean distance over all pairs of different images (0 when all are identical)."""
    x = thumbnails(images)
    n = len(x)
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least two images")
    d = _distances(x, x)
    return float(d.sum() / (n * (n - 1)))  # the diagonal is 0


def diversity_ratio(samples: np.ndarray, reference: np.ndarray) -> float:
    """Mean pairwise distance among samples / the same among the reference images."""
    return mean_pairwise_distance(samples) / mean_pairwise_distance(reference)


def nearest_distances(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each sample's distance to its nearest reference image (N floats)."""
    return _distances(thumbnails(samples), thumbnails(reference)).min(dim=1).values.numpy()


def real_nearest_distances(reference: np.ndarray) -> np.ndarray:
    """Each reference image's distance to its nearest other reference image (leave-one-out)."""
    x = thumbnails(reference)
    d = _distances(x, x)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.numpy()


def memorisation(
    samples: np.ndarray, reference: np.ndarray, near_copy: float = NEAR_COPY
) -> dict[str, float]:
    """Nearest-training-image distances of the samples against those among real photos.

    A sample is a near-copy when its nearest reference image is closer than `near_copy` times
    the median real-real nearest-neighbour distance: closer than real photos come to each other.
    """
    ours = nearest_distances(samples, reference)
    theirs = real_nearest_distances(reference)
    threshold = near_copy * float(np.median(theirs))
    return {
        "sample_nn_median": float(np.median(ours)),
        "sample_nn_min": float(ours.min()),
        "real_nn_median": float(np.median(theirs)),
        "real_nn_min": float(theirs.min()),
        "near_copy_threshold": threshold,
        "near_copy_fraction": float(np.mean(ours < threshold)),
    }


def gan_report(
    samples: np.ndarray,
    reference: np.ndarray,
    detector: Any | None = None,
    p_fake: np.ndarray | None = None,
    kid_reference: np.ndarray | None = None,
    features: Any | None = None,
) -> dict[str, Any]:
    """All measures for N samples against M reference photos (both N x S x S x 3 uint8 RGB).

    Args:
        detector: the face finder (a callable on a BGR frame returning K x 4 boxes); default:
            the real-time Haar FaceDetector.
        p_fake: optionally a classifier's P(fake) for each sample, summarised as mean and rate.
        kid_reference: real photos (K x S x S x 3) to measure KID against: held-back photos
            rather than the training ones. None: no KID.
        features: the KID feature extractor (default: kid.KIDFeatures on the CPU).
    """
    if detector is None:
        from fakeface.faces.detect import FaceDetector

        detector = FaceDetector()
    # The reference's own face rate and spread from at most REFERENCE_STATS photos: with 6,000
    # training photos the full pairwise matrix and MTCNN on each would cost minutes and move the
    # numbers by little. Memorisation compares every sample with every reference photo.
    pick = np.random.default_rng(0).permutation(len(reference))[:REFERENCE_STATS]
    some = reference[np.sort(pick)]
    report: dict[str, Any] = {
        "n_samples": len(samples),
        "n_reference": len(reference),
        "face_rate": face_rate(samples, detector),
        "face_rate_reference": face_rate(some, detector),
        "pairwise_distance": mean_pairwise_distance(samples),
        "pairwise_distance_reference": mean_pairwise_distance(some),
        "distance": f"RMS pixel difference of {THUMB}x{THUMB} RGB thumbnails in [0, 1]",
    }
    report["diversity_ratio"] = report["pairwise_distance"] / report["pairwise_distance_reference"]
    report["memorisation"] = memorisation(samples, reference)
    if kid_reference is not None:
        from fakeface.evaluation.kid import KIDFeatures, kid

        features = features or KIDFeatures()
        report["kid"] = kid(features(samples), features(kid_reference))
        report["n_kid_reference"] = len(kid_reference)
        report["kid_features"] = "ImageNet EfficientNet-Lite0 (not Inception: not comparable)"
    if p_fake is not None:
        p = np.asarray(p_fake, dtype=np.float64)
        report["p_fake_mean"] = float(p.mean())
        report["called_fake"] = float(np.mean(p > 0.5))
    return report


def write_report(report: dict[str, Any], folder: str | Path) -> tuple[Path, Path]:
    """Write report.json and report.md into `folder`; return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "report.json", folder / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    m = report["memorisation"]
    lines = [
        "# GAN quality report",
        "",
        f"{report['n_samples']} samples against {report['n_reference']} reference photos.",
        "",
        "| measure | samples | reference | target |",
        "|---|---|---|---|",
        f"| face rate ({report.get('face_detector', 'Haar, default preset')}) | {report['face_rate']:.3f} | "
        f"{report['face_rate_reference']:.3f} | >= 0.7 |",
        f"| mean pairwise distance | {report['pairwise_distance']:.4f} | "
        f"{report['pairwise_distance_reference']:.4f} | |",
        f"| diversity ratio | {report['diversity_ratio']:.3f} | 1 | >= 0.8 |",
        f"| nearest-neighbour distance (median) | {m['sample_nn_median']:.4f} | "
        f"{m['real_nn_median']:.4f} | |",
        f"| nearest-neighbour distance (min) | {m['sample_nn_min']:.4f} | "
        f"{m['real_nn_min']:.4f} | |",
        f"| near-copies (NN < {m['near_copy_threshold']:.4f}) | "
        f"{m['near_copy_fraction']:.3f} | | <= 0.01 |",
    ]
    if "kid" in report:
        lines.append(
            f"| KID to {report['n_kid_reference']} real photos (EfficientNet-Lite0 features) | "
            f"{report['kid']:.4f} | 0 | falling |"
        )
    if "p_fake_mean" in report:
        lines.append(
            f"| classifier: mean p_fake / called fake | {report['p_fake_mean']:.3f} / "
            f"{report['called_fake']:.3f} | | |"
        )
    lines += [
        "",
        f"Distance: {report['distance']}. Near-copy: nearest reference closer than "
        f"{NEAR_COPY} x the median real-real nearest-neighbour distance.",
        "",
    ]
    md_path.write_text("\n".join(lines))
    return json_path, md_path
