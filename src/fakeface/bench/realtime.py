"""Bench section `realtime`: the real-time loop on a generated 640x480 video with one face per
frame. `face_video` makes the clip (also used by the `routes` section)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fakeface.bench.common import CONF, row
from fakeface.errors import ConfigError


def face_video(cfg: DictConfig, path: Path, frames: int) -> Path:
    """640x480 clip: a face from the data (one the Haar detector finds) gliding over a backdrop."""
    import cv2

    from fakeface.faces.detect import FaceDetector

    detector = FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml"))
    backdrop = np.full((480, 640, 3), 96, np.uint8)
    backdrop[:, :, 0] = np.linspace(60, 160, 640, dtype=np.uint8)  # not a flat frame
    face = None
    for candidate in sorted(Path(cfg.data.root).rglob("real/*.jpg"))[:200]:
        image = cv2.resize(cv2.imread(str(candidate)), (200, 200))
        frame = backdrop.copy()
        frame[140:340, 220:420] = image
        if len(detector(frame)):
            face = image
            break
    if face is None:
        raise ConfigError(
            f"bench: the face detector finds no face among {cfg.data.root}/**/real/*.jpg"
        )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        frame = backdrop.copy()
        x = 40 + int(200 * (1 + np.sin(i / 15)))  # 40..440
        frame[140:340, x : x + 200] = face
        writer.write(frame)
    writer.release()
    return path


def bench_realtime(
    cfg: DictConfig, device: str, model_file: Path, folder: Path, rows: list[dict]
) -> None:
    import cv2

    from fakeface.deploy.modelfile import fast_dtype, load_classifier
    from fakeface.faces.detect import FaceDetector
    from fakeface.realtime.stream import FrameSource, run

    b = cfg.bench
    rt = OmegaConf.load(CONF / "realtime.yaml")
    video = face_video(cfg, folder / "clip.mp4", b.video_frames)
    threads = torch.get_num_threads()
    if rt.threads:  # the real-time module's default thread setting, as users run it
        torch.set_num_threads(rt.threads)
        cv2.setNumThreads(rt.threads)
    try:
        model, info = load_classifier(model_file, device)
        summary = run(
            model,
            info,
            FrameSource(str(video)),
            FaceDetector(**OmegaConf.load(CONF / "detector" / "default.yaml")),
            faces=rt.faces,
            margin=rt.margin,
            dtype=fast_dtype(device),
            redetect_every=rt.redetect_every,
        )
    finally:
        torch.set_num_threads(threads)
    found = f"{summary.frames_with_faces}/{summary.frames} frames with a face"
    rows.append(
        row(
            "realtime",
            f"640x480 video, threads={rt.threads} ({found})",
            summary.fps,
            "FPS",
            target="realtime",
        )
    )
