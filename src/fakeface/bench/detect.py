"""Bench section `detect` (only when named): face-detector presets side by side on annotated
photos: recall at IoU 0.3 and 0.5, false positives per photo, ms per frame."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fakeface.bench.common import CONF, log, median_ms, row
from fakeface.errors import ConfigError
from fakeface.evaluation.detection import match_faces, read_annotations


def scene_photos(spec: DictConfig) -> list[tuple[Path, np.ndarray]]:
    """(photo, boxes) pairs from detect.images and detect.boxes (null: the folder's .xml/.csv)."""
    if not spec.images or not Path(spec.images).is_dir():
        raise ConfigError(
            f"detect.images={spec.images}: give a folder of photos, e.g. "
            "python -m fakeface.bench sections=[detect] detect.images=<folder> "
            "detect.boxes=<annotations.xml>"
        )
    folder = Path(spec.images)
    files = spec.boxes if spec.boxes is not None else None
    if files is None:
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".xml", ".csv"))
    elif isinstance(files, str):
        files = [files]
    if not files:
        raise ConfigError(f"detect.boxes=null: no .xml or .csv in {folder}; give detect.boxes=...")
    photos = []
    for file in files:
        for name, boxes in read_annotations(Path(file)).items():
            path = folder / name
            if not path.is_file():  # e.g. dlib's faces folder: XML 2008_002470.jpg, file dlib_...
                near = sorted(folder.glob(f"*{Path(name).name}"))
                if len(near) != 1:
                    raise ConfigError(f"detect.boxes={file}: no photo {name} in {folder}")
                path = near[0]
            photos.append((path, boxes))
    return photos


def load_photos(spec: DictConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(BGR frame, boxes) per annotated photo, resized to `detect.width` (boxes with it)."""
    import cv2

    photos = []
    for path, boxes in scene_photos(spec):
        frame = cv2.imread(str(path))
        if frame is None:
            raise ConfigError(f"detect.images: cannot decode {path}")
        scale = spec.width / frame.shape[1] if spec.width else 1.0
        if scale != 1.0:
            size = (spec.width, round(frame.shape[0] * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            frame = cv2.resize(frame, size, interpolation=interpolation)
            boxes = boxes * [scale, scale, scale, scale, 1.0]
        photos.append((frame, boxes))
    return photos


def score_preset(
    detector: Any, photos: list[tuple[np.ndarray, np.ndarray]], repeats: int
) -> tuple[dict[float, float], int, float, float]:
    """(recall per IoU threshold, faces, false positives per photo, mean ms per photo)."""
    counts = {0.3: [0, 0, 0], 0.5: [0, 0, 0]}  # hits, faces, false detections
    ms = []
    for frame, truth in photos:
        ms.append(median_ms(lambda f=frame, d=detector: d(f), repeats, 1))
        found = detector(frame)
        for threshold, total in counts.items():
            for k, v in enumerate(match_faces(found, truth, threshold)):
                total[k] += v
    faces = counts[0.3][1]
    recall = {t: c[0] / max(faces, 1) for t, c in counts.items()}
    return recall, faces, counts[0.3][2] / len(photos), statistics.mean(ms)


def bench_detect(cfg: DictConfig, rows: list[dict]) -> None:
    """Each detector preset on annotated photos: recall at IoU 0.3/0.5, false faces, ms per frame."""
    import cv2

    from fakeface.errors import DetectorError
    from fakeface.faces.detect import build_detector

    spec = cfg.detect
    photos = load_photos(spec)
    threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
        cv2.setNumThreads(spec.threads)
    table = []
    try:
        for preset in spec.presets:
            file = CONF / "detector" / f"{preset}.yaml"
            if not file.is_file():
                raise ConfigError(f"detect.presets: no conf/detector/{preset}.yaml")
            try:
                detector = build_detector(OmegaConf.to_container(OmegaConf.load(file)), "cpu")
            except DetectorError as err:
                log.warning("detect: preset %s skipped: %s", preset, err)
                continue
            recall, faces, false, ms = score_preset(detector, photos, spec.repeats)
            name = f"{preset} ({len(photos)} photos, {faces} faces, width {spec.width or 'as is'})"
            rows.append(row("detect", f"{name}: recall IoU>=0.3", recall[0.3], "fraction"))
            rows.append(row("detect", f"{name}: recall IoU>=0.5", recall[0.5], "fraction"))
            rows.append(row("detect", f"{name}: false positives/image", false, "per image"))
            rows.append(row("detect", f"{name}: ms per frame", ms, "ms"))
            table.append((preset, recall[0.3], recall[0.5], false, ms))
    finally:
        torch.set_num_threads(threads)
    print_side_table(table, spec.threads)


def print_side_table(table: list[tuple], threads: int) -> None:
    """The presets side by side on the console."""
    side = Table(title=f"face detectors, threads={threads or 'default'}")
    for column in ("preset", "recall IoU>=0.3", "recall IoU>=0.5", "false/image", "ms/frame"):
        side.add_column(column, justify="left" if column == "preset" else "right")
    for preset, r3, r5, false, ms_frame in table:
        side.add_row(preset, f"{r3:.2f}", f"{r5:.2f}", f"{false:.2f}", f"{ms_frame:.1f}")
    Console(width=max(Console().width, 110)).print(side)
