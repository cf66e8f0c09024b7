"""data.face_crop: train on the face crops that predict detect=true and serve classify.

A generator's framing is a shortcut: Stable Diffusion portraits show head and shoulders on plain
backdrops, FFHQ faces are aligned close-ups, and a real studio portrait framed like the diffusion
ones reads as generated. Cropping every training photo the way deployment crops every face (the
largest MTCNN face, `face_window` with the same margin) gives reals and fakes the same framing.

The boxes are found once per file (progress bar) and kept in a CSV under the cache folder, keyed
by path, size and modification time, so later runs only look at new or changed files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

COLUMNS = ["path", "bytes", "mtime", "x", "y", "w", "h"]  # x = -1: no face found


def _stamp(path: str) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, int(stat.st_mtime)


def face_boxes(
    paths: list[str], detector: dict[str, Any], cache_file: Path
) -> dict[str, tuple[int, int, int, int] | None]:
    """The largest face box (x, y, w, h) of each image, None where no face is found.

    Args:
        paths: image files.
        detector: the FaceDetector preset (conf/detector/mtcnn.yaml), as predict uses it.
        cache_file: CSV of boxes found before; updated with the new ones.
    """
    import cv2
    from rich.progress import track

    from fakeface.errors import BadImageError
    from fakeface.faces.detect import build_detector
    from fakeface.preprocess import load_image

    # path -> (path, bytes, mtime, x, y, w, h), the CSV's rows as plain tuples
    known = pd.read_csv(cache_file) if cache_file.is_file() else pd.DataFrame(columns=COLUMNS)
    known = {row[0]: row for row in known.itertuples(index=False, name=None)}
    stamps = {p: _stamp(p) for p in paths}
    todo = [p for p in paths if p not in known or tuple(known[p][1:3]) != stamps[p]]
    if todo:
        log.info(
            "data.face_crop: finding the faces of %d images (cached in %s)", len(todo), cache_file
        )
        find = build_detector(detector, "cpu")
        for path in track(todo, description="finding faces"):
            try:
                rgb = np.asarray(load_image(path))
            except BadImageError:  # unreadable: the dataset reports it when it reads the file
                boxes = []
            else:
                boxes = find(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            box = tuple(int(v) for v in boxes[0]) if len(boxes) else (-1, 0, 0, 0)
            known[path] = (path, *stamps[path], *box)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial")
        pd.DataFrame(list(known.values()), columns=COLUMNS).to_csv(partial, index=False)
        partial.replace(cache_file)
    out = {}
    for path in paths:
        x, y, w, h = (int(v) for v in known[path][3:])
        out[path] = None if x < 0 else (x, y, w, h)
    missing = sum(box is None for box in out.values())
    if missing:
        log.info(
            "data.face_crop: no face found in %d of %d images: they are used whole",
            missing,
            len(out),
        )
    return out


def crop_to_face(
    image: Image.Image, box: tuple[int, int, int, int] | None, margin: float
) -> Image.Image:
    """The square window around `box` that deployment crops (`face_window`); the image if None."""
    if box is None:
        return image
    from fakeface.faces.detect import face_window

    left, top, side = face_window(box, image.width, image.height, margin)
    return image.crop((left, top, left + side, top + side))
