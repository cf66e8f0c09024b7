"""The real-time loop: frames from a camera, a video file or a folder of images, faces found,
classified, drawn, shown or written. `python -m fakeface.realtime` runs it; bench times it.

Per frame: read -> detect faces (Haar, downscaled grayscale) -> crop, BGR->RGB, `fakeface.preprocess`
-> classify all faces in one batch -> draw -> write/show. Only torch, numpy, cv2, rich and the
stdlib at runtime: no Lightning.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fakeface.deploy.modelfile import (
    ClassifierInfo,
    classify,
)
from fakeface.errors import ConfigError
from fakeface.faces.detect import FaceDetector, crop_face
from fakeface.preprocess import resize_rgb, to_tensor
from fakeface.realtime.draw import draw_face, draw_fps, face_label
from fakeface.realtime.output import Sinks, check_display
from fakeface.realtime.source import FrameSource
from fakeface.realtime.summary import STAGES, RunSummary, print_summary

__all__ = ["STAGES", "FrameSource", "RunSummary", "check_display", "print_summary", "run"]


def track(
    detector: FaceDetector, frame: np.ndarray, last: np.ndarray, index: int, redetect_every: int
) -> tuple[np.ndarray, str]:
    """This frame's faces and how they were found ("full" frame or "near" the last faces).

    A whole-frame Haar search costs ~20x a search around known faces, so between full searches
    (every `redetect_every` frames, and whenever a face is lost) only the last faces are followed.
    """
    if len(last) and redetect_every > 1 and index % redetect_every:
        boxes = detector.near(frame, last)
        if len(boxes) == len(last):
            return boxes, "near"
    return detector(frame), "full"


def face_batch(frame: np.ndarray, boxes: np.ndarray, margin: float, size: int) -> torch.Tensor:
    """The K face crops of a BGR frame as the classifier's input: K x 3 x size x size in [0, 1].

    The same path as training: RGB crop -> `resize_rgb` (Pillow) -> `to_tensor` (/255).
    """
    pixels = np.stack([resize_rgb(crop_face(frame, box, margin), size) for box in boxes])
    return to_tensor(pixels)


def classify_faces(
    model: torch.nn.Module,
    info: ClassifierInfo,
    frame: np.ndarray,
    boxes: np.ndarray,
    margin: float,
    dtype: torch.dtype | None,
) -> np.ndarray:
    """Probabilities (K x classes) for the K face boxes of a BGR frame, in one batch."""
    if len(boxes) == 0:
        return np.zeros((0, len(info.class_names)), np.float32)
    return classify(model, face_batch(frame, boxes, margin, info.image_size), dtype).numpy()


def frame_record(
    index: int,
    elapsed_s: float,
    boxes: np.ndarray,
    probs: np.ndarray,
    info: ClassifierInfo,
    latency: dict[str, float],
    search: str,
) -> dict:
    """One JSON-lines entry: frame index, time, faces (box, p_<class>, label), stage ms."""
    faces = []
    for box, p in zip(boxes, probs, strict=True):
        face = {"box": [int(v) for v in box]}  # x, y, w, h in frame pixels
        face.update(
            {f"p_{n}": round(float(v), 6) for n, v in zip(info.class_names, p, strict=True)}
        )
        face["label"] = face_label(p, info.class_names)[0]
        faces.append(face)
    return {
        "frame": index,
        "time": round(time.time(), 3),  # Unix seconds
        "elapsed_s": round(elapsed_s, 4),
        "search": search,  # "full" frame or "near" the last faces
        "faces": faces,
        "latency_ms": {stage: round(ms, 3) for stage, ms in latency.items()},
    }


def warm_up(model: torch.nn.Module, info: ClassifierInfo, dtype: torch.dtype | None) -> None:
    """TorchScript optimises a graph on its first calls: pay that before the first frame."""
    for _ in range(3):
        classify(model, torch.zeros(1, 3, info.image_size, info.image_size), dtype)


class Annotator:
    """Finds, classifies and draws the faces of one frame after another (see `run`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        info: ClassifierInfo,
        detector: FaceDetector,
        faces: str,
        margin: float,
        dtype: torch.dtype | None,
        redetect_every: int,
    ) -> None:
        if faces not in ("largest", "all"):
            raise ConfigError(f"faces={faces!r}: use largest or all")
        self.model, self.info, self.detector = model, info, detector
        self.faces, self.margin, self.dtype = faces, margin, dtype
        self.redetect_every = redetect_every
        self.boxes = np.zeros((0, 4), np.int32)  # the last frame's faces
        self.fps = 0.0  # shown on the frame: an exponential average of whole-frame time

    def __call__(
        self, frame: np.ndarray, index: int, times: list[float]
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(boxes, probabilities, search) of frame `index`, drawn onto it; appends the end
        time of the detect, classify and draw stages to `times`."""
        boxes, search = track(self.detector, frame, self.boxes, index, self.redetect_every)
        if self.faces == "largest":
            boxes = boxes[:1]  # the detector sorts by area
        self.boxes = boxes
        times.append(time.perf_counter())
        probs = classify_faces(self.model, self.info, frame, boxes, self.margin, self.dtype)
        times.append(time.perf_counter())
        for box, p in zip(boxes, probs, strict=True):
            draw_face(frame, box, p, self.info.class_names)
        draw_fps(frame, self.fps)
        times.append(time.perf_counter())
        return boxes, probs, search

    def tick(self, period: float) -> None:
        """Fold one whole-frame time (s) into the frame rate shown on the next frame."""
        self.fps = 1.0 / period if self.fps == 0 else 0.9 * self.fps + 0.1 / period


def run(
    model: torch.nn.Module,
    info: ClassifierInfo,
    source: FrameSource,
    detector: FaceDetector,
    *,
    faces: str = "largest",
    margin: float = 0.4,
    dtype: torch.dtype | None = None,
    display: bool = False,
    output: str | Path | None = None,
    log: str | Path | None = None,
    save_every: int = 0,
    save_dir: str | Path = "frames",
    max_frames: int = 0,
    redetect_every: int = 5,
) -> RunSummary:
    """Detect, classify and annotate every frame of `source` until it ends (or q/Esc, Ctrl-C).

    Args:
        faces: `largest` (the original's choice) or `all` faces of each frame.
        margin: crop margin around a face box, as a fraction of its side per edge.
        dtype: autocast dtype for the classifier (`fast_dtype`), None for fp32.
        display: show a window; q or Esc quits.
        output: annotated video file (.mp4 or .avi), None for none.
        log: JSON-lines file, one line per frame (boxes, probabilities, per-stage latency).
        save_every: save every n-th annotated frame as PNG under `save_dir` (0: never).
        max_frames: stop after this many frames (0: no limit).
        redetect_every: search the whole frame at least every n frames; in between, search
            only near the last frame's faces (1: whole frame every time).
    """
    annotate = Annotator(model, info, detector, faces, margin, dtype, redetect_every)
    if display:
        check_display()
    summary = RunSummary()
    sinks = Sinks(output, log, save_every, save_dir, display, source.fps or 30.0)
    warm_up(model, info, dtype)
    start = time.perf_counter()
    try:
        summary.stop_reason = _loop(source, annotate, sinks, summary, max_frames, start)
    except KeyboardInterrupt:
        summary.stop_reason = "interrupted (Ctrl-C)"
    finally:
        summary.seconds = time.perf_counter() - start
        summary.unreadable = list(source.unreadable)
        source.close()
        sinks.close()
    return summary


def _loop(
    source: FrameSource,
    annotate: Annotator,
    sinks: Sinks,
    summary: RunSummary,
    max_frames: int,
    start: float,
) -> str:
    """Frames from `source` through `annotate` into `sinks` and `summary`; why it stopped."""
    while not max_frames or summary.frames < max_frames:
        times = [time.perf_counter()]
        frame = source.read()
        times.append(time.perf_counter())
        if frame is None:
            return source.stop_reason
        boxes, probs, search = annotate(frame, summary.frames, times)
        quit_key = sinks.emit(frame, summary.frames)
        times.append(time.perf_counter())
        latency = dict(zip(STAGES, np.diff(times) * 1000.0, strict=True))
        elapsed = times[-1] - start
        entry = frame_record(summary.frames, elapsed, boxes, probs, annotate.info, latency, search)
        summary.add(entry, latency)
        sinks.record(entry)
        annotate.tick(times[-1] - times[0])
        if quit_key:
            return "quit key"
    return f"max_frames={max_frames}"
