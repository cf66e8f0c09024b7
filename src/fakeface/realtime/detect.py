"""Face detection with OpenCV's Haar frontal-face cascade, and FFHQ-like crops around the faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fakeface.errors import ConfigError, DetectorError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
OPENCV_PIN = "opencv-python>=4.8,<5"


def load_cascade(name: str = CASCADE_FILE) -> cv2.CascadeClassifier:
    """Load one of the Haar cascades shipped in the opencv-python wheel; DetectorError if absent."""
    # OpenCV 5 moved CascadeClassifier and the XML files out of the main wheel.
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise DetectorError(
            f"this OpenCV ({cv2.__version__}) has no cv2.CascadeClassifier / cv2.data: "
            f'install "{OPENCV_PIN}"'
        )
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
    if cascade is None or cascade.empty():
        raise DetectorError(f'cannot load the Haar cascade {path}: reinstall "{OPENCV_PIN}"')
    return cascade


class FaceDetector:
    """Haar frontal-face detector that runs on a downscaled grayscale copy of each frame.

    Args:
        scale_factor: size step between the cascade's window scales (1.1 = 10 %); larger is
            faster but skips face sizes between steps.
        min_neighbors: overlapping raw hits a box needs to be kept; higher = fewer false faces.
        min_size: smallest face side to report, in frame pixels (0: the cascade's 24 px window
            at detection scale, i.e. 24 * frame width / detect_width).
        detect_width: detect on a copy this many pixels wide, boxes scaled back (0: full frame).
            Narrower is faster and misses small faces.
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 0,
        detect_width: int = 320,
    ) -> None:
        if scale_factor <= 1.0:
            raise ConfigError(f"detector.scale_factor={scale_factor}: must be > 1 (e.g. 1.1)")
        for key, value in (
            ("min_neighbors", min_neighbors),
            ("min_size", min_size),
            ("detect_width", detect_width),
        ):
            if value < 0:
                raise ConfigError(f"detector.{key}={value}: must be >= 0")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.detect_width = int(detect_width)
        self.cascade = load_cascade()

    def __repr__(self) -> str:
        return (
            f"FaceDetector(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
            f"min_size={self.min_size}, detect_width={self.detect_width})"
        )

    def _gray(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The grayscale detection image and its scale relative to the frame."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        height, width = gray.shape
        scale = self.detect_width / width if 0 < self.detect_width < width else 1.0
        if scale < 1.0:
            size = (self.detect_width, max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray, scale

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Face boxes in a BGR (or grayscale) frame: K x 4 int32 (x, y, w, h), largest first."""
        gray, scale = self._gray(frame)
        side = round(self.min_size * scale)
        found = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )
        return _to_frame(found, scale, frame.shape)

    def near(self, frame: np.ndarray, boxes: np.ndarray, grow: float = 0.5) -> np.ndarray:
        """Search only around known faces (the last frame's): one box per face still found.

        Each box is searched in a window `grow` x its side larger on every edge, for faces
        0.7-1.4x its size: a few hundred windows instead of a whole frame's tens of thousands.
        Boxes: K x 4 (x, y, w, h); returns the found subset, updated, largest first.
        """
        gray, scale = self._gray(frame)
        found = []
        for box in np.asarray(boxes, np.float64) * scale:  # in detection pixels
            x, y, w, h = box
            left, top = max(int(x - grow * w), 0), max(int(y - grow * h), 0)
            right = min(int(x + w + grow * w) + 1, gray.shape[1])
            bottom = min(int(y + h + grow * h) + 1, gray.shape[0])
            smallest = max(round(0.7 * w), round(self.min_size * scale))
            hits = self.cascade.detectMultiScale(
                gray[top:bottom, left:right],
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(smallest, smallest),
                maxSize=(round(1.4 * w) + 1, round(1.4 * w) + 1),
            )
            if len(hits):
                # The hit nearest the old centre is the same face.
                centres = hits[:, :2] + hits[:, 2:] / 2 + [left, top]
                nearest = np.argmin(np.hypot(*(centres - [x + w / 2, y + h / 2]).T))
                found.append(hits[nearest] + [left, top, 0, 0])
        return _to_frame(found, scale, frame.shape)


def _to_frame(found: np.ndarray | list, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Detection-scale boxes -> K x 4 int32 frame boxes, inside the frame, largest first."""
    if len(found) == 0:
        return np.zeros((0, 4), np.int32)
    height, width = shape[:2]
    boxes = np.round(np.asarray(found, np.float64) / scale).astype(np.int32)
    # Scaling back can overshoot the frame by a pixel.
    boxes[:, :2] = np.clip(boxes[:, :2], 0, [width - 1, height - 1])
    boxes[:, 2] = np.minimum(boxes[:, 2], width - boxes[:, 0])
    boxes[:, 3] = np.minimum(boxes[:, 3], height - boxes[:, 1])
    return boxes[np.argsort(-boxes[:, 2] * boxes[:, 3], kind="stable")]


def face_window(
    box: np.ndarray | tuple[int, int, int, int], frame_width: int, frame_height: int, margin: float
) -> tuple[int, int, int]:
    """Square crop (x, y, side) around a face box, in frame pixels.

    The side is the box side plus `margin` x box side on each edge (0.4 frames a Haar box about
    like the loosely cropped FFHQ training faces). Near a frame edge the square is shifted to stay
    inside the frame, so the face keeps its scale; it shrinks only when larger than the frame.
    """
    x, y, w, h = (int(v) for v in box)
    side = round(max(w, h) * (1.0 + 2.0 * margin))
    side = max(1, min(side, frame_width, frame_height))
    left = min(max(x + w / 2 - side / 2, 0), frame_width - side)
    top = min(max(y + h / 2 - side / 2, 0), frame_height - side)
    return round(left), round(top), side


def crop_face(
    frame_bgr: np.ndarray, box: np.ndarray | tuple[int, int, int, int], margin: float
) -> np.ndarray:
    """The face crop as an RGB uint8 array (side x side x 3), ready for `fakeface.preprocess`."""
    left, top, side = face_window(box, frame_bgr.shape[1], frame_bgr.shape[0], margin)
    crop = frame_bgr[top : top + side, left : left + side]
    # OpenCV frames are BGR and the model was trained on RGB (the original fed it BGR).
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
