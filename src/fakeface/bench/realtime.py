"""Bench section `realtime`: the real-time loop on a generated 640x480 video with one face per
frame. `face_video` makes the clip (also used by the `routes` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fakeface.bench.common import CONF, row
from fakeface.errors import ConfigError


def find_faces(cfg: DictConfig, count: int, side: int) -> list[np.ndarray]:
    """Up to `count` different data photos (side x side BGR) the Haar detector finds on the
    clip's backdrop; repeated when the data has fewer."""
    import cv2

    from fakeface.faces.detect import FaceDetector

    detector = FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml"))
    found: list[np.ndarray] = []
    for candidate in sorted(Path(cfg.data.root).rglob("real/*.jpg"))[:200]:
        image = cv2.resize(cv2.imread(str(candidate)), (side, side))
        frame = backdrop()
        top, left = (480 - side) // 2, (640 - side) // 2
        frame[top : top + side, left : left + side] = image
        if len(detector(frame)):
            found.append(image)
            if len(found) == count:
                break
    if not found:
        raise ConfigError(
            f"bench: the face detector finds no face among {cfg.data.root}/**/real/*.jpg"
        )
    return [found[k % len(found)] for k in range(count)]


def backdrop() -> np.ndarray:
    """A 640x480 BGR frame with a horizontal gradient (not a flat frame)."""
    frame = np.full((480, 640, 3), 96, np.uint8)
    frame[:, :, 0] = np.linspace(60, 160, 640, dtype=np.uint8)
    return frame


def face_video(cfg: DictConfig, path: Path, frames: int, faces: int = 1) -> Path:
    """640x480 clip: `faces` faces from the data (ones the Haar detector finds) gliding side by
    side over a backdrop; one face is 200 px, up to three 150 px, more 100 px."""
    import cv2

    side = 200 if faces == 1 else 150 if faces <= 3 else 100
    gap = side // 10
    span = faces * side + (faces - 1) * gap
    if span > 620:
        raise ConfigError(f"routes.faces: {faces} faces do not fit side by side in 640 px")
    images = find_faces(cfg, faces, side)
    top = (480 - side) // 2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        frame = backdrop()
        # one face: 40..440 (the clip of the realtime section); several: the row glides
        x = (
            40 + int(200 * (1 + np.sin(i / 15)))
            if faces == 1
            else 10 + int((620 - span - 10) / 2 * (1 + np.sin(i / 15)))
        )
        for k, image in enumerate(images):
            left = x + k * (side + gap)
            frame[top : top + side, left : left + side] = image
        writer.write(frame)
    writer.release()
    return path


def realtime_run(
    model_file: Path, device: str, video: Path, dtype: torch.dtype | None, faces: str
) -> Any:
    """`fakeface.realtime`'s loop over `video` with its default settings (threads, margin,
    re-detection) and the Haar detector; its RunSummary. The model is loaded under those
    threads: an ONNX Runtime session takes its thread count when it is made."""
    import cv2

    from fakeface.deploy.modelfile import load_classifier
    from fakeface.faces.detect import FaceDetector
    from fakeface.realtime.stream import FrameSource, run

    rt = OmegaConf.load(CONF / "realtime.yaml")
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    if rt.threads:  # the real-time module's default thread setting, as users run it
        torch.set_num_threads(rt.threads)
        cv2.setNumThreads(rt.threads)
    try:
        model, info = load_classifier(model_file, device)
        return run(
            model,
            info,
            FrameSource(str(video)),
            FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml")),
            faces=faces,
            margin=rt.margin,
            dtype=dtype,
            redetect_every=rt.redetect_every,
        )
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def realtime_threads() -> int:
    """The real-time module's default `threads` (0: library defaults)."""
    return int(OmegaConf.load(CONF / "realtime.yaml").threads)


def bench_realtime(
    cfg: DictConfig, device: str, model_file: Path, folder: Path, rows: list[dict]
) -> None:
    """The real-time loop as `python -m fakeface.realtime` runs it, on a one-face clip."""
    from fakeface.deploy.modelfile import fast_dtype

    video = face_video(cfg, folder / "clip.mp4", cfg.bench.video_frames)
    faces = OmegaConf.load(CONF / "realtime.yaml").faces
    summary = realtime_run(model_file, device, video, fast_dtype(device), faces)
    found = f"{summary.frames_with_faces}/{summary.frames} frames with a face"
    name = f"640x480 video, threads={realtime_threads()} ({found})"
    rows.append(row("realtime", name, summary.fps, "FPS", target="realtime"))
