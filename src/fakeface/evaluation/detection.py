"""Scoring a face detector against annotated photos: annotation files (dlib imglab XML, CSV),
box IoU and one-to-one matching of detections to faces. `python -m fakeface.bench
sections=[detect]` uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fakeface.errors import ConfigError


def read_annotations(path: Path) -> dict[str, np.ndarray]:
    """Face boxes per image name from dlib imglab XML or CSV: name -> N x 5 (x, y, w, h, ignore).

    XML: <image file=...><box top= left= width= height= [ignore='1']/></image> (dlib's imglab).
    CSV: a header `image,x,y,w,h` and one row per face; a row with empty x..h is an image without
    faces. An image listed with no box counts as a negative (every detection is false).
    """
    import csv
    import xml.etree.ElementTree as ET

    if not path.is_file():
        raise ConfigError(f"detect.boxes={path}: no such file (dlib imglab .xml or .csv)")
    found: dict[str, list[list[float]]] = {}
    try:
        if path.suffix.lower() == ".xml":
            for image in ET.parse(path).getroot().iter("image"):
                boxes = found.setdefault(image.attrib["file"], [])
                for box in image.iter("box"):
                    a = box.attrib
                    ignore = float(a.get("ignore", "0") not in ("0", ""))
                    keys = ("left", "top", "width", "height")
                    boxes.append([float(a[k]) for k in keys] + [ignore])
        elif path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                for line in csv.DictReader(f):
                    boxes = found.setdefault(line["image"], [])
                    if (line.get("w") or "").strip():
                        keys = ("x", "y", "w", "h")
                        boxes.append([float(line[k]) for k in keys] + [0.0])
        else:
            raise ConfigError(f"detect.boxes={path}: use a dlib imglab .xml or a .csv")
    except (ET.ParseError, KeyError, ValueError) as err:
        raise ConfigError(
            f"detect.boxes={path}: cannot read it ({err!r}); XML: dlib imglab, "
            "CSV: header image,x,y,w,h"
        ) from None
    return {name: np.asarray(b, np.float64).reshape(-1, 5) for name, b in found.items()}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N x 4, x y w h) with every box in b (M x 4): N x M."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_faces(found: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(faces found, faces to find, false detections) in one image at IoU >= threshold.

    Greedy one-to-one matching, highest IoU first. truth: N x 5 (x, y, w, h, ignore); a detection
    on an ignored face is neither a hit nor a false one.
    """
    truth = np.asarray(truth, np.float64).reshape(-1, 5)
    found = np.asarray(found, np.float64).reshape(-1, 4)
    iou = box_iou(found, truth[:, :4])
    used_found, used_truth = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < threshold:
            break
        if i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    ignored = truth[:, 4] > 0
    hits = sum(1 for j in used_truth if not ignored[j])
    false = len(found) - len(used_found)
    return hits, int((~ignored).sum()), false
