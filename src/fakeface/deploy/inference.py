"""The one path from image files to probabilities: decode, (crop a face,) perturb, resize, batch,
classify with optional TTA, with a progress bar. predict, evaluate and bench all call `score_files`.

Unreadable files never stop a run: they get NaN probabilities and their decoding error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fakeface.deploy.modelfile import ClassifierInfo, classify
from fakeface.errors import BadImageError, ConfigError
from fakeface.evaluation.perturb import Perturbation
from fakeface.preprocess import load_image, resize_rgb, to_tensor

CLEAN = "clean"  # the unperturbed images


class ImageFiles(Dataset):
    """Image files -> dicts: index, pixels (V x S x S x 3 uint8, one plane per variant, or None
    when unreadable or, with a detector, when no face was found), face (True/False with a
    detector, else None), error ("" or the decoding error).

    Each variant perturbs the decoded full-resolution image (None: unchanged) before the standard
    resize, so a file is decoded once for a whole robustness sweep.

    Args:
        paths: image files.
        image_size: the classifier's input side.
        variants: perturbations, None for the image as it is.
        detector: FaceDetector settings to crop the largest face first (None: whole image).
        margin: crop margin around the face box, fraction of its side per edge.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        image_size: int,
        variants: Sequence[Perturbation | None] = (None,),
        detector: dict[str, Any] | None = None,
        margin: float = 0.4,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.image_size = image_size
        self.variants = list(variants)
        self.detector_args = detector
        self.margin = margin
        self._detector = None  # built lazily in each worker: cv2 objects do not pickle

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "pixels": None, "face": None, "error": ""}
        try:
            image = load_image(self.paths[index])
        except BadImageError as err:
            item["error"] = str(err)
            return item
        if self.detector_args is not None:
            image, item["face"] = self._largest_face(image)
            if not item["face"]:
                return item  # no face, no score: a scene or a landscape is not a face to judge
        planes = [
            resize_rgb(image if f is None else f(image), self.image_size) for f in self.variants
        ]
        item["pixels"] = np.stack(planes)
        return item

    def _largest_face(self, image: Image.Image) -> tuple[Image.Image, bool]:
        """Crop to the largest face (same window as the real-time loop); (image, False) if none."""
        from fakeface.faces.detect import build_detector

        if self._detector is None:
            self._detector = build_detector(self.detector_args)  # on the CPU, in each worker
        found = face_crops(image, self._detector, self.margin, limit=1)
        return (found[0][1], True) if found else (image, False)


def face_crops(
    image: Image.Image, detector: Any, margin: float, limit: int | None = None
) -> list[tuple[tuple[int, int, int, int], Image.Image]]:
    """(x, y, w, h) box and square crop of each face `detector` finds, largest first.

    The crop window is the real-time loop's (`face_window`, via `crop_to_face`), so predict,
    serve, realtime and training with data.face_crop frame a face alike.
    """
    import cv2

    from fakeface.data.faceboxes import crop_to_face

    boxes = detector(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))  # colour: MTCNN needs it
    found = [tuple(int(v) for v in box) for box in list(boxes)[:limit]]
    return [(box, crop_to_face(image, box, margin)) for box in found]


@dataclass
class Scores:
    """What `score_files` returns, rows in the order of the paths given."""

    probs: dict[str, np.ndarray]  # variant -> N x classes float32, NaN rows for unreadable files
    faces: list[bool | None]  # with a detector: was a face found (no face: NaN, not scored)
    errors: dict[int, str]  # row -> decoding error

    def readable(self) -> np.ndarray:
        """N booleans: the file was decoded and scored (with a detector: a face was found)."""
        first = next(iter(self.probs.values()))
        return ~np.isnan(first[:, 0])


def _keep_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items  # unreadable files have no pixels: score_files batches the readable ones


def score_files(
    model: torch.nn.Module,
    info: ClassifierInfo,
    paths: Sequence[str | Path],
    *,
    variants: Mapping[str, Perturbation | None] | None = None,
    batch_size: int = 64,
    tta: bool = False,
    dtype: torch.dtype | None = None,
    detector: dict[str, Any] | None = None,
    margin: float = 0.4,
    num_workers: int = 0,
    progress: str | None = None,
) -> Scores:
    """Classify image files under each variant.

    Args:
        model, info: from `fakeface.deploy.modelfile.load_classifier`.
        paths: image files (see `fakeface.preprocess.find_images`).
        variants: name -> perturbation (None = the image as it is); default {"clean": None}.
        batch_size: images per forward pass.
        tta: average the probabilities of the image and its horizontal mirror.
        dtype: autocast dtype (`precision_dtype`), None for fp32.
        detector: FaceDetector settings: crop the largest face first; an image with no face
            gets NaN probabilities and faces[i] = False (it is not scored).
        margin: crop margin around the face box.
        num_workers: DataLoader processes decoding images.
        progress: label of a rich progress bar, None for no bar.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: must be a whole number >= 1, e.g. 64")
    variants = dict(variants or {CLEAN: None})
    if detector is not None:
        from fakeface.faces.detect import build_detector

        build_detector(detector)  # fail here, in the main process: no Haar, no mtcnn extra
    dataset = ImageFiles(paths, info.image_size, list(variants.values()), detector, margin)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_keep_items
    )
    n, classes = len(dataset), len(info.class_names)
    scores = Scores(
        {name: np.full((n, classes), np.nan, np.float32) for name in variants}, [None] * n, {}
    )
    with _progress(progress, n) as advance:
        for items in loader:
            for item in items:
                scores.faces[item["index"]] = item["face"]
                if item["error"]:
                    scores.errors[item["index"]] = item["error"]
            good = [item for item in items if item["pixels"] is not None]
            if good:
                rows = [item["index"] for item in good]
                stacked = np.stack([item["pixels"] for item in good])  # B x V x S x S x 3
                for v, name in enumerate(variants):
                    p = classify(model, to_tensor(stacked[:, v]), dtype, tta)
                    scores.probs[name][rows] = p.numpy()
            advance(len(items))
    return scores


class _progress:  # noqa: N801 (used like a function: `with _progress(label, total) as advance`)
    """A rich progress bar over images with an ETA, or a no-op when label is None."""

    def __init__(self, label: str | None, total: int) -> None:
        self.label, self.total = label, total

    def __enter__(self):  # noqa: ANN204 (returns the advance callable)
        if self.label is None:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self.bar.start()
        task = self.bar.add_task("images", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.label is not None:
            self.bar.stop()
