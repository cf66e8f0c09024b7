"""Batch prediction with an exported classifier, to a CSV of probabilities.

    python -m fakeface.predict model=classifier.ts input=<file|dir|glob> [out=predictions.csv]
        [batch_size=64] [detect=false] [tta=false]

Every image goes through `fakeface.preprocess` (any mode Pillow reads: grayscale, RGBA, CMYK, ...);
files that cannot be decoded are listed and skipped, they never stop the run.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import ConfigError, one_line_errors
from fakeface.modelfile import (
    ClassifierInfo,
    classify,
    load_classifier,
    precision_dtype,
)
from fakeface.preprocess import BadImageError, load_image, resize_rgb, to_tensor
from fakeface.realtime.detect import FaceDetector, face_window

# What Pillow decodes in practice; a folder's other files (CSV, JSON, ...) are not images.
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".jfif", ".jp2", ".ico", ".tga",
}  # fmt: skip


class PredictError(ConfigError):
    """An input specification that names no image."""


def find_images(spec: str | Path) -> list[Path]:
    """The files `spec` names: one file, every image under a folder (recursively), or a glob."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise PredictError(
                f"input={spec}: the folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return found
    # A glob names files explicitly: keep every match, unreadable ones get reported.
    found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not found:
        raise PredictError(
            f"input={spec}: no such file or folder, and no file matches it as a glob"
        )
    return found


class ImageFiles(torch.utils.data.Dataset):
    """uint8 RGB arrays (S x S x 3) from image files, optionally cropped to the largest face.

    Items are dicts: index, pixels (None if unreadable), face (True/False, None without
    detection), error (message or "").
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_size: int,
        detector: dict[str, Any] | None = None,
        margin: float = 0.4,
    ) -> None:
        self.paths = list(paths)
        self.image_size = image_size
        self.detector_args = detector
        self.margin = margin
        self._detector: FaceDetector | None = None  # built lazily: cv2 objects do not pickle

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "pixels": None, "face": None, "error": ""}
        try:
            rgb = np.asarray(load_image(self.paths[index]))
        except BadImageError as err:
            item["error"] = str(err)
            return item
        if self.detector_args is not None:
            rgb, item["face"] = self._largest_face(rgb)
        item["pixels"] = resize_rgb(rgb, self.image_size)
        return item

    def _largest_face(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """Crop to the largest face (same window as the real-time loop), or keep the whole image."""
        if self._detector is None:
            self._detector = FaceDetector(**self.detector_args)
        boxes = self._detector(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        if len(boxes) == 0:
            return rgb, False
        left, top, side = face_window(boxes[0], rgb.shape[1], rgb.shape[0], self.margin)
        return np.ascontiguousarray(rgb[top : top + side, left : left + side]), True


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items  # unreadable files have no pixels: batch the good ones in predict_paths


def predict_paths(
    model: torch.nn.Module,
    info: ClassifierInfo,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    detect: bool = False,
    detector: dict[str, Any] | None = None,
    margin: float = 0.4,
    tta: bool = False,
    dtype: torch.dtype | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Classify image files; one row per path, in the order given.

    Columns: path, p_<class> for each class (p_fake, p_real), label, then `face` (with
    `detect`: was a face found, else the whole image was used) and error (unreadable files:
    the reason, with empty probabilities and label).

    Args:
        model, info: from `fakeface.modelfile.load_classifier`.
        paths: image files (see `find_images`).
        batch_size: images per forward pass.
        detect: crop the largest face first (Haar detector; no face: whole image).
        detector: FaceDetector settings (default: FaceDetector's defaults).
        margin: crop margin around the face box, fraction of its side per edge.
        tta: average with the horizontally flipped image.
        dtype: autocast dtype (`fast_dtype`), None for fp32.
        num_workers: DataLoader processes decoding images.
        progress: show a rich progress bar.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    paths = [Path(p) for p in paths]
    dataset = ImageFiles(paths, info.image_size, (detector or {}) if detect else None, margin)
    if detect:
        FaceDetector(**(detector or {}))  # fail here, in the main process, if OpenCV lacks Haar
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    probs = np.full((len(paths), len(info.class_names)), np.nan, np.float32)
    faces: list[bool | None] = [None] * len(paths)
    errors = [""] * len(paths)

    with _progress(progress, len(paths)) as advance:
        for items in loader:
            good = [item for item in items if item["pixels"] is not None]
            for item in items:
                faces[item["index"]] = item["face"]
                errors[item["index"]] = item["error"]
            if good:
                batch = to_tensor(np.stack([item["pixels"] for item in good]))
                p = classify(model, batch, dtype, tta)
                probs[[item["index"] for item in good]] = p.numpy()
            advance(len(items))

    table = pd.DataFrame({"path": [str(p) for p in paths]})
    for k, name in enumerate(info.class_names):
        table[f"p_{name}"] = probs[:, k]
    readable = ~np.isnan(probs[:, 0])
    best = np.nan_to_num(probs, nan=-1.0).argmax(1)
    table["label"] = [
        info.class_names[k] if ok else "" for k, ok in zip(best, readable, strict=True)
    ]
    if detect:
        table["face"] = faces
    table["error"] = errors
    return table


class _progress:  # noqa: N801 (used like a function: `with _progress(show, total) as advance`)
    """A rich progress bar over images, or a no-op."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total = show, total

    def __enter__(self):  # noqa: ANN204 (returns the advance callable)
        if not self.show:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("predict", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task("images", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.bar.stop()


def print_summary(table: pd.DataFrame, out: Path | None = None) -> None:
    """Counts per label, fraction fake, faces not found, unreadable files (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    readable = table[table["error"] == ""]
    summary = Table(title=f"fakeface predict: {len(table)} files", title_justify="left")
    summary.add_column("label")
    summary.add_column("images", justify="right")
    summary.add_column("fraction", justify="right")
    for label, count in readable["label"].value_counts().sort_index().items():
        summary.add_row(label, str(count), f"{count / max(len(readable), 1):.1%}")
    summary.add_row("unreadable", str(len(table) - len(readable)), "", style="red")
    console.print(summary)
    if "face" in table:
        missing = int((readable["face"] == False).sum())  # noqa: E712 (a pandas mask)
        if missing:
            console.print(f"no face found in {missing} image(s): classified the whole image")
    for _, row in table[table["error"] != ""].iterrows():
        console.print(f"[red]unreadable[/red] {row['error']}", highlight=False)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


@hydra.main(version_base="1.3", config_path="conf/deploy", config_name="predict")
def main(cfg: DictConfig) -> str:
    """CLI: predict `cfg.input`, write `cfg.out`, print the summary; user errors on one line."""
    with one_line_errors():
        if not cfg.model or not cfg.input:
            raise ConfigError(
                "give the model and the images: python -m fakeface.predict model=<.ts> input=<dir>"
            )
        model, info = load_classifier(cfg.model, cfg.device)
        table = predict_paths(
            model,
            info,
            find_images(cfg.input),
            batch_size=cfg.batch_size,
            detect=cfg.detect,
            detector=OmegaConf.to_container(cfg.detector),
            margin=cfg.margin,
            tta=cfg.tta,
            dtype=precision_dtype(cfg.precision, cfg.device),
            num_workers=cfg.num_workers,
            progress=True,
        )
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print_summary(table, out)
    return str(out)


if __name__ == "__main__":
    main()
