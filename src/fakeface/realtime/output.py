"""Where the annotated frames go: a video file, PNGs, a window, and the JSON-lines log."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from fakeface.errors import SourceError

WINDOW = "fakeface (q or Esc quits)"


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


class Sinks:
    """The run's outputs, opened together and closed together.

    Args:
        output: annotated video file (.mp4 or .avi), None for none.
        log: JSON-lines file, one line per frame, None for none.
        save_every: save every n-th annotated frame as PNG under `save_dir` (0: never).
        display: show each frame in a window.
        fps: the video file's frame rate.
    """

    def __init__(
        self,
        output: str | Path | None,
        log: str | Path | None,
        save_every: int,
        save_dir: str | Path,
        display: bool,
        fps: float,
    ) -> None:
        self.video = VideoOutput(output, fps) if output else None
        self.save_every, self.save_dir, self.display = save_every, Path(save_dir), display
        self.log_file: TextIO | None = None
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            self.log_file = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def emit(self, frame: np.ndarray, index: int) -> bool:
        """Write, save and show frame `index`; True when the user asked to quit."""
        if self.video is not None:
            self.video.write(frame)
        if self.save_every and index % self.save_every == 0:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(self.save_dir / f"frame_{index:06d}.png"), frame)
        return self.display and show(frame)

    def record(self, entry: dict) -> None:
        """Append one frame's entry to the log, if there is one."""
        if self.log_file:
            self.log_file.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        if self.log_file:
            self.log_file.close()
        if self.display:
            cv2.destroyAllWindows()
