"""FrameSource: BGR frames from a camera, a video file, an image, a folder of images or a glob."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from fakeface.errors import SourceError
from fakeface.preprocess import find_images, is_image


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
