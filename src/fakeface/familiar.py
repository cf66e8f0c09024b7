"""The "unfamiliar photo" signal: how unlike the photos a model was trained on a face crop is.

A verdict on a kind of photo the model never saw (another camera, another generator) is worth
less than one on a kind it knows, and p_fake alone does not say which is which. This signal
looks at the photo, not at the verdict: the face crop's ImageNet EfficientNet-Lite0 features
(the ones `fakeface.evaluation.kid` uses, weights from a pip package), scaled to unit length
and projected on the main axes of a reference set of training crops, and their distance to the
k-th nearest reference crop (deep nearest neighbours, Sun et al. 2022). `novelty` is that distance over a
threshold fitted on training-kind crops kept out of the reference: above 1, the face is
"unfamiliar" (by construction about 5 % of photos like the training ones are).

The reference ships beside a model file as `<model>.familiar.npz` (the released model's inside
the package); `tools/familiarity.py` fits one and measures it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SUFFIX = ".familiar.npz"


@dataclass
class Familiarity:
    """A fitted reference: the projection, the reference crops' points and the threshold.

    Args:
        mean: D means of the unit-length features (D = 1280).
        axes: D x P projection (the reference's main axes).
        reference: N x (P + 1) projected reference crops.
        threshold: the distance above which a face is unfamiliar.
        k: which nearest neighbour's distance is used.
        about: how it was fitted (folders, counts, quantile), for the docs and the model card.
    """

    mean: np.ndarray
    axes: np.ndarray
    reference: np.ndarray
    threshold: float
    k: int = 10
    about: dict | None = None

    @classmethod
    def fit(
        cls, features: np.ndarray, heldout: np.ndarray, dims: int = 128, k: int = 10,
        quantile: float = 0.95, about: dict | None = None,
    ) -> Familiarity:  # fmt: skip
        """Fit on N x D training-kind features; the threshold is `quantile` of the distances of
        `heldout` (training-kind features not in the reference)."""
        unit = _unit(features)
        mean = unit.mean(0)
        _, _, vt = np.linalg.svd(unit - mean, full_matrices=False)
        axes = vt[:dims].T.astype(np.float32)
        made = cls(mean.astype(np.float32), axes, np.zeros((0, dims + 1)), 1.0, k, about)
        made.reference = made._project(features)
        made.threshold = float(np.quantile(made.distances(heldout), quantile))
        return made

    def _project(self, features: np.ndarray) -> np.ndarray:
        """N x (P + 1): the coordinates on the main axes, then the length of what is left off
        them. A photo unlike the reference often differs along axes the reference barely
        varies on; without that last coordinate the projection would hide it."""
        centred = _unit(features) - self.mean
        z = centred @ self.axes
        rest = np.linalg.norm(centred - z @ self.axes.T, axis=1, keepdims=True)
        return np.concatenate([z, rest], axis=1)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Euclidean distance of each feature row to its k-th nearest reference crop."""
        z = self._project(features)
        ref = self.reference
        squared = (z**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2 * z @ ref.T  # N x R
        kth = np.partition(squared, self.k - 1, axis=1)[:, self.k - 1]
        return np.sqrt(np.maximum(kth, 0.0))

    def novelty(self, features: np.ndarray) -> np.ndarray:
        """Distance over the threshold: above 1 = unfamiliar."""
        return self.distances(features) / self.threshold

    def save(self, path: Path) -> Path:
        np.savez_compressed(
            path, mean=self.mean, axes=self.axes, reference=self.reference.astype(np.float16),
            threshold=self.threshold, k=self.k, about=json.dumps(self.about or {}),
        )  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path) -> Familiarity:
        with np.load(path) as f:
            return cls(
                f["mean"], f["axes"], f["reference"].astype(np.float32), float(f["threshold"]),
                int(f["k"]), json.loads(str(f["about"])),
            )  # fmt: skip


def _unit(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (the nearest-neighbour distance compares directions)."""
    f = np.asarray(features, np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def reference_for(model: str | Path | None) -> Path | None:
    """The reference shipped beside a model file (None: the released model's), if any."""
    if model is None or model == "":
        from fakeface.weights import RELEASED

        model = RELEASED
    path = Path(model).expanduser()
    candidate = path.with_name(path.name.removesuffix(path.suffix) + SUFFIX)
    return candidate if candidate.is_file() else None


class FamiliarityScorer:
    """Features of face crops and their novelty under one reference (the features' network is
    loaded once, on the CPU)."""

    def __init__(self, familiarity: Familiarity) -> None:
        from fakeface.evaluation.kid import KIDFeatures

        self.familiarity = familiarity
        self.features = KIDFeatures("cpu")

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Novelty of N x S x S x 3 uint8 crops."""
        with torch.inference_mode():
            features = self.features(pixels).float().numpy()
        return self.familiarity.novelty(features)
