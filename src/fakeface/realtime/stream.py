"""The real-time loop: frames from a camera, a video file or a folder of images, faces found,
classified, drawn, shown or written. `python -m fakeface.realtime` runs it; bench times it.

Per frame: read -> detect faces (Haar, downscaled grayscale) -> crop, BGR->RGB, `fakeface.preprocess`
-> classify all faces in one batch -> draw -> write/show. Only torch, numpy, cv2, rich and the
stdlib at runtime: no Lightning.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch

from fakeface.deploy.modelfile import (
    ClassifierInfo,
    classify,
)
from fakeface.errors import ConfigError, SourceError
from fakeface.faces.detect import FaceDetector, crop_face
from fakeface.preprocess import find_images, is_image, resize_rgb, to_tensor
from fakeface.realtime.draw import draw_face, draw_fps, face_label

STAGES = ("read", "detect", "classify", "draw", "write")
WINDOW = "fakeface (q or Esc quits)"


class quiet_opencv:  # noqa: N801 (used like a function: `with quiet_opencv():`)
    """Hide OpenCV's own log lines while backends probe a camera or file: we report failures."""

    def __enter__(self) -> None:
        self.level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

    def __exit__(self, *exc: object) -> None:
        cv2.utils.logging.setLogLevel(self.level)


class FrameSource:
    """BGR uint8 frames from a camera index, a video file, a folder of images or a glob.

    Args:
        source: camera index (0, "0"), video file, image file, folder of images, or glob pattern.
        retries: failed reads in a row tolerated (camera hiccups) before the stream stops.
    """

    def __init__(self, source: int | str, retries: int = 3) -> None:
        self.retries = retries
        self.stop_reason = ""
        self.unreadable: list[str] = []  # images of a folder that could not be decoded
        self.capture: cv2.VideoCapture | None = None
        self.images: list[Path] = []
        self.fps: float | None = None  # the source's frame rate, when it has one
        text = str(source).strip()
        path = Path(text).expanduser()
        if text.isdigit():
            self.kind, self.name = "camera", f"camera {int(text)}"
            self.capture = self._open_camera(int(text))
        elif path.is_file() and not is_image(path):
            self.kind, self.name = "video", str(path)
            with quiet_opencv():
                self.capture = cv2.VideoCapture(str(path))
            if not self.capture.isOpened():
                raise SourceError(f"cannot open video {path}: OpenCV cannot decode it")
        else:  # an image, a folder of images or a glob: the same files predict would read
            self.kind, self.name = "images", text
            self.images = find_images(text, key="source")
        if self.capture is not None:
            fps = self.capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 1.0 <= fps <= 240.0 else None  # cameras often report 0
        self._next_image = 0
        self._failures = 0

    @staticmethod
    def _open_camera(index: int) -> cv2.VideoCapture:
        with quiet_opencv():
            capture = cv2.VideoCapture(index)
        if capture.isOpened():
            return capture
        tried = f"cv2.VideoCapture({index})"
        if sys.platform.startswith("linux"):
            device = Path(f"/dev/video{index}")
            tried += (
                f", {device} {'exists but did not open' if device.exists() else 'does not exist'}"
            )
        raise SourceError(
            f"cannot open camera {index} (tried {tried}); connect or free the camera, try another "
            "index (source=1), or give a video file or a folder of images"
        )

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end (reason in `stop_reason`)."""
        if self.kind == "images":
            return self._read_image()
        assert self.capture is not None
        while True:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                self._failures = 0
                return frame
            self._failures += 1
            if self.kind == "video":
                total = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
                position = self.capture.get(cv2.CAP_PROP_POS_FRAMES)
                if total <= 0 or position >= total:
                    self.stop_reason = "end of video"
                    return None
            if self._failures > self.retries:
                self.stop_reason = f"{self.name}: {self._failures} reads in a row failed"
                return None
            time.sleep(0.05 if self.kind == "camera" else 0.0)  # give a camera time to recover

    def _read_image(self) -> np.ndarray | None:
        while self._next_image < len(self.images):
            path = self.images[self._next_image]
            self._next_image += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR; None if undecodable
            if frame is not None:
                return frame
            self.unreadable.append(str(path))
        self.stop_reason = "end of images"
        return None

    def close(self) -> None:
        """Release the camera or video file."""
        if self.capture is not None:
            self.capture.release()


def check_display() -> None:
    """Fail early, with advice, where a window cannot open (a Qt abort cannot be caught)."""
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless:
        raise SourceError(
            "display=true needs a desktop session (DISPLAY is not set); "
            "run with display=false (and output=annotated.mp4 to see the result)"
        )


class VideoOutput:
    """An annotated video file (.mp4: mp4v, .avi: MJPG), opened at the first frame's size."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.writer: cv2.VideoWriter | None = None
        self.size = (0, 0)  # width, height

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame; frames of another size (folder sources) are resized to fit."""
        size = (frame.shape[1], frame.shape[0])
        if self.writer is None:
            codec = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*codec), self.fps, size
            )
            if not self.writer.isOpened():
                raise SourceError(
                    f"cannot write video {self.path} with codec {codec}: use an .mp4 or .avi name"
                )
            self.size = size
        if size != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)

    def close(self) -> None:
        """Finish the file."""
        if self.writer is not None:
            self.writer.release()


def show(frame: np.ndarray) -> bool:
    """Show a frame in the window; True when the user pressed q or Esc or closed the window."""
    cv2.imshow(WINDOW, frame)
    key = cv2.waitKey(1) & 0xFF
    return key in (ord("q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1


@dataclass
class RunSummary:
    """What a run did: counts, per-stage latencies (ms) and the end-to-end frame rate."""

    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    labels: Counter = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    seconds: float = 0.0
    stop_reason: str = ""
    unreadable: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def stage_stats(self) -> dict[str, tuple[float, float]]:
        """(mean, p95) latency in ms per stage, and for the whole frame (`total`)."""
        stats = {}
        rows = {
            **self.latency_ms,
            "total": [sum(v) for v in zip(*self.latency_ms.values(), strict=True)],
        }
        for stage, values in rows.items():
            arr = np.asarray(values) if values else np.zeros(1)
            stats[stage] = (float(arr.mean()), float(np.percentile(arr, 95)))
        return stats


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
    if faces not in ("largest", "all"):
        raise ConfigError(f"faces={faces!r}: use largest or all")
    if display:
        check_display()
    save_dir = Path(save_dir)
    summary = RunSummary()
    video = VideoOutput(output, source.fps or 30.0) if output else None
    log_file: TextIO | None = None
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    # TorchScript optimises a graph on its first calls: pay that before the first frame.
    for _ in range(3):
        classify(model, torch.zeros(1, 3, info.image_size, info.image_size), dtype)

    fps_smoothed = 0.0
    boxes = np.zeros((0, 4), np.int32)  # the last frame's faces
    start = time.perf_counter()
    try:
        while not max_frames or summary.frames < max_frames:
            t0 = time.perf_counter()
            frame = source.read()
            t1 = time.perf_counter()
            if frame is None:
                summary.stop_reason = source.stop_reason
                break
            boxes, search = track(detector, frame, boxes, summary.frames, redetect_every)
            if faces == "largest":
                boxes = boxes[:1]  # the detector sorts by area
            t2 = time.perf_counter()
            probs = classify_faces(model, info, frame, boxes, margin, dtype)
            t3 = time.perf_counter()
            for box, p in zip(boxes, probs, strict=True):
                draw_face(frame, box, p, info.class_names)
            draw_fps(frame, fps_smoothed)
            t4 = time.perf_counter()
            if video is not None:
                video.write(frame)
            if save_every and summary.frames % save_every == 0:
                save_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(save_dir / f"frame_{summary.frames:06d}.png"), frame)
            quit_key = display and show(frame)
            t5 = time.perf_counter()

            latency = dict(zip(STAGES, np.diff([t0, t1, t2, t3, t4, t5]) * 1000.0, strict=True))
            for stage, ms in latency.items():
                summary.latency_ms[stage].append(ms)
            record = frame_record(summary.frames, t5 - start, boxes, probs, info, latency, search)
            summary.frames += 1
            summary.faces += len(boxes)
            summary.frames_with_faces += bool(len(boxes))
            summary.labels.update(face["label"] for face in record["faces"])
            if log_file:
                log_file.write(json.dumps(record) + "\n")
            # Frame rate shown on the next frame: exponential average of whole-frame time.
            period = t5 - t0
            fps_smoothed = 1.0 / period if fps_smoothed == 0 else 0.9 * fps_smoothed + 0.1 / period
            if quit_key:
                summary.stop_reason = "quit key"
                break
        else:
            summary.stop_reason = f"max_frames={max_frames}"
    except KeyboardInterrupt:
        summary.stop_reason = "interrupted (Ctrl-C)"
    finally:
        summary.seconds = time.perf_counter() - start
        summary.unreadable = list(source.unreadable)
        source.close()
        if video is not None:
            video.close()
        if log_file:
            log_file.close()
        if display:
            cv2.destroyAllWindows()
    return summary


def print_summary(summary: RunSummary) -> None:
    """The end-of-run report: counts, per-stage latency (mean, p95) and frames per second."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fakeface realtime", title_justify="left")
    table.add_column("stage")
    table.add_column("mean ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for stage, (mean, p95) in summary.stage_stats().items():
        table.add_row(stage, f"{mean:.2f}", f"{p95:.2f}", end_section=stage == STAGES[-1])
    console = Console()
    console.print(table)
    labels = ", ".join(f"{name} {count}" for name, count in sorted(summary.labels.items())) or "-"
    console.print(
        f"frames {summary.frames} ({summary.frames_with_faces} with faces), faces {summary.faces} "
        f"({labels}), {summary.fps:.1f} FPS end to end over {summary.seconds:.1f} s; "
        f"stopped: {summary.stop_reason}"
    )
    if summary.unreadable:
        console.print(f"unreadable images skipped ({len(summary.unreadable)}):")
        for path in summary.unreadable:
            console.print(f"  {path}", markup=False)
