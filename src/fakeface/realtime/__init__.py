"""Real-time fake-face detection (python -m fakeface.realtime): torch, numpy and cv2, no Lightning."""

from fakeface.faces.detect import (
    DetectorError,
    FaceDetector,
    crop_face,
    face_window,
    load_cascade,
)
from fakeface.realtime.draw import draw_face, draw_fps, face_label

__all__ = [
    "DetectorError",
    "FaceDetector",
    "crop_face",
    "draw_face",
    "draw_fps",
    "face_label",
    "face_window",
    "load_cascade",
]
