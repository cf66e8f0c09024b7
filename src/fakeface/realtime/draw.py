"""The overlay, as the original drew it: a box and "Fake: 97.91%" per face, plus the frame rate."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# BGR colours: red flags a fake, green a real face; anything else (another class) in amber.
COLOURS = {"fake": (40, 40, 230), "real": (60, 180, 60)}
OTHER_COLOUR = (0, 170, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_label(probs: Sequence[float], class_names: Sequence[str]) -> tuple[str, str]:
    """(class name, overlay text) for one face, e.g. ("fake", "Fake: 97.91%")."""
    best = int(np.argmax(probs))
    name = class_names[best]
    return name, f"{name.capitalize()}: {100.0 * float(probs[best]):.2f}%"


def _text_scale(frame: np.ndarray) -> tuple[float, int]:
    """Font scale and stroke width that read the same on a 320 px and a 1920 px frame."""
    scale = max(0.4, frame.shape[1] / 1000.0)
    return scale, max(1, round(3 * scale))  # 2 px strokes at 640 px


def draw_text(
    frame: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    """Text on a filled box whose bottom-left corner is `origin`, kept inside the frame."""
    scale, thickness = _text_scale(frame)
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    x = min(max(origin[0], 0), max(frame.shape[1] - width - 4, 0))
    y = min(max(origin[1], height + baseline + 4), frame.shape[0] - 1)
    cv2.rectangle(frame, (x, y - height - baseline - 4), (x + width + 4, y), colour, cv2.FILLED)
    cv2.putText(
        frame, text, (x + 2, y - baseline - 2), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )


def draw_face(
    frame: np.ndarray,
    box: Sequence[int],
    probs: Sequence[float],
    class_names: Sequence[str],
) -> None:
    """Draw one face box and its label above it (below the top edge if no room), in place."""
    x, y, w, h = (int(v) for v in box)
    name, text = face_label(probs, class_names)
    colour = COLOURS.get(name, OTHER_COLOUR)
    _, thickness = _text_scale(frame)
    cv2.rectangle(frame, (x, y), (x + w, y + h), colour, thickness)
    draw_text(frame, text, (x, y - 2), colour)


def draw_fps(frame: np.ndarray, fps: float) -> None:
    """Frame rate in the top-left corner, in place."""
    draw_text(frame, f"FPS: {fps:.1f}", (4, 0), (40, 40, 40))
