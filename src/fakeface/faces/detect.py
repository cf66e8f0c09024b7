"""Face detectors (OpenCV's Haar cascade; MTCNN with the mtcnn extra) and FFHQ-like face crops.

Every detector takes a BGR uint8 frame (Haar also takes grayscale) and returns K x 4 int32 boxes
(x, y, w, h) in frame pixels, largest first; `near(frame, boxes)` searches only around known faces
(the real-time loop's tracking between whole-frame searches). `build_detector` picks the class from
a preset's `kind` key (conf/detector/*.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fakeface.errors import ConfigError, DetectorError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
OPENCV_PIN = "opencv-python>=4.8,<5"
KINDS = ("haar", "mtcnn")
MTCNN_EXTRA = 'pip install -e ".[mtcnn]"'


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
        kind: "haar" (accepted so that a preset's keys can be passed as they are).
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 0,
        detect_width: int = 320,
        kind: str = "haar",
    ) -> None:
        if kind != "haar":
            raise ConfigError(f"detector.kind={kind!r}: FaceDetector is the haar kind")
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
            left, top, right, bottom = search_window(box, grow, gray.shape)
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


def _load_mtcnn() -> tuple[Any, Any, Any, Any]:
    """facenet-pytorch's PNet/RNet/ONet classes and detect_face; one-line DetectorError if absent."""
    try:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
        from facenet_pytorch.models.utils.detect_face import detect_face
    except ImportError:
        raise DetectorError(
            f"detector=mtcnn needs the mtcnn extra (facenet-pytorch is not installed): {MTCNN_EXTRA}"
        ) from None
    return PNet, RNet, ONet, detect_face


class MTCNNDetector:
    """MTCNN (facenet-pytorch's weights, shipped in its wheel) behind the Haar detector's interface.

    Frames are BGR colour (as the real-time loop reads them); a grayscale frame is replicated to
    three channels, which works but loses MTCNN's colour cues. Runs fp32 on `device`.

    Args:
        min_face_size: smallest face side to look for, in frame pixels (MTCNN's pyramid starts
            there: smaller is slower).
        thresholds: face scores the three stages (P-, R-, O-Net) need, each in (0, 1).
        factor: scale step of the image pyramid (0.709: sqrt(1/2) in area).
        detect_width: detect on a copy this many pixels wide, boxes scaled back (0: full frame).
        square: report square boxes (side = mean of MTCNN's width and height, same centre), so
            that crops and IoU against square annotations match the Haar detector's framing.
        device: "cpu" or "cuda" (the classifier's device).
        kind: "mtcnn" (accepted so that a preset's keys can be passed as they are).
    """

    def __init__(
        self,
        min_face_size: int = 40,
        thresholds: tuple[float, float, float] | list[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        detect_width: int = 640,
        square: bool = True,
        device: str = "cpu",
        kind: str = "mtcnn",
    ) -> None:
        if kind != "mtcnn":
            raise ConfigError(f"detector.kind={kind!r}: MTCNNDetector is the mtcnn kind")
        thresholds = [float(t) for t in thresholds]
        if len(thresholds) != 3 or not all(0.0 < t < 1.0 for t in thresholds):
            raise ConfigError(
                f"detector.thresholds={thresholds}: three scores in (0, 1), e.g. [0.6, 0.7, 0.7]"
            )
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"detector.factor={factor}: must be in (0, 1), e.g. 0.709")
        if min_face_size < 12:
            raise ConfigError(
                f"detector.min_face_size={min_face_size}: must be >= 12 (MTCNN's cell)"
            )
        if detect_width < 0:
            raise ConfigError(f"detector.detect_width={detect_width}: must be >= 0")
        import torch

        pnet, rnet, onet, self._detect_face = _load_mtcnn()
        self.device = torch.device(device)
        self.nets = [net().eval().to(self.device) for net in (pnet, rnet, onet)]
        self.min_face_size = int(min_face_size)
        self.thresholds = thresholds
        self.factor = float(factor)
        self.detect_width = int(detect_width)
        self.square = bool(square)

    def __repr__(self) -> str:
        return (
            f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds}, "
            f"factor={self.factor}, detect_width={self.detect_width}, square={self.square}, "
            f"device={str(self.device)!r})"
        )

    def _rgb(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The RGB detection image and its scale relative to the frame."""
        code = cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB
        height, width = frame.shape[:2]
        scale = self.detect_width / width if 0 < self.detect_width < width else 1.0
        if scale < 1.0:
            size = (self.detect_width, max(1, round(height * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, code), scale

    def _boxes(self, rgb: np.ndarray, min_size: float) -> np.ndarray:
        """N x 4 float (x, y, w, h) in `rgb`'s pixels."""
        import torch

        if min(rgb.shape[:2]) < max(12.0, min_size):
            return np.zeros((0, 4))  # smaller than the smallest face (facenet's pyramid is empty)
        with torch.inference_mode():
            found, _ = self._detect_face(
                rgb, max(12.0, min_size), *self.nets, self.thresholds, self.factor, self.device
            )
        found = np.asarray(found[0], np.float64).reshape(-1, 5)[:, :4] if len(found) else []
        if len(found) == 0:
            return np.zeros((0, 4))
        x1 = np.clip(found[:, 0], 0, rgb.shape[1])
        y1 = np.clip(found[:, 1], 0, rgb.shape[0])
        x2 = np.clip(found[:, 2], 0, rgb.shape[1])
        y2 = np.clip(found[:, 3], 0, rgb.shape[0])
        boxes = np.stack([x1, y1, x2 - x1, y2 - y1], 1)
        boxes = boxes[(boxes[:, 2] >= 1) & (boxes[:, 3] >= 1)]
        if self.square:
            side = boxes[:, 2:].mean(1)
            centre = boxes[:, :2] + boxes[:, 2:] / 2
            boxes = np.column_stack([centre - side[:, None] / 2, side, side])
            boxes[:, :2] = np.maximum(boxes[:, :2], 0)
        return boxes

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Face boxes in a BGR (or grayscale) frame: K x 4 int32 (x, y, w, h), largest first."""
        rgb, scale = self._rgb(frame)
        return _to_frame(self._boxes(rgb, self.min_face_size * scale), scale, frame.shape)

    def near(self, frame: np.ndarray, boxes: np.ndarray, grow: float = 0.5) -> np.ndarray:
        """Search only around known faces, like `FaceDetector.near` (faces 0.7x their size and up).

        Each window is a small image, so MTCNN's pyramid has a few levels instead of a frame's.
        """
        rgb, scale = self._rgb(frame)
        found = []
        for box in np.asarray(boxes, np.float64) * scale:  # in detection pixels
            x, y, w, h = box
            left, top, right, bottom = search_window(box, grow, rgb.shape)
            window = np.ascontiguousarray(rgb[top:bottom, left:right])
            smallest = max(0.7 * min(w, h), self.min_face_size * scale)
            if min(window.shape[:2]) < max(12, smallest):
                continue
            hits = self._boxes(window, smallest)
            if len(hits):
                centres = hits[:, :2] + hits[:, 2:] / 2 + [left, top]
                nearest = np.argmin(np.hypot(*(centres - [x + w / 2, y + h / 2]).T))
                found.append(hits[nearest] + [left, top, 0, 0])
        return _to_frame(found, scale, frame.shape)


def build_detector(
    settings: Mapping[str, Any] | None = None, device: str = "cpu"
) -> FaceDetector | MTCNNDetector:
    """The detector a preset describes (conf/detector/*.yaml): its `kind` key picks the class.

    `device` is where a neural detector runs (the classifier's device); Haar ignores it, and a
    preset's own `device` key wins.
    """
    settings = dict(settings or {})
    kind = settings.get("kind", "haar")
    if kind == "haar":
        settings.pop("device", None)
        return FaceDetector(**settings)
    if kind == "mtcnn":
        settings.setdefault("device", device)
        if settings["device"] is None:
            settings["device"] = device
        return MTCNNDetector(**settings)
    raise ConfigError(f"detector.kind={kind!r}: use one of {list(KINDS)} (detector=mtcnn, ...)")


def search_window(
    box: np.ndarray, grow: float, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the area around a box, `grow` x its side larger on every
    edge, inside an image of `shape`: where `near` looks for the same face again."""
    x, y, w, h = box
    left, top = max(int(x - grow * w), 0), max(int(y - grow * h), 0)
    right = min(int(x + w + grow * w) + 1, shape[1])
    bottom = min(int(y + h + grow * h) + 1, shape[0])
    return left, top, right, bottom


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
