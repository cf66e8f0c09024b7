"""The dataset index: one pandas row per image (image_path, label, class_name, split)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

SPLITS = ("train", "valid", "test")


class DatasetError(ValueError):
    """The data folder does not have the expected layout."""


def missing_root_message(root: Path) -> str:
    return (
        f"data root {root} does not exist. Download Kaggle's '140k Real and Fake Faces' "
        "(kaggle datasets download xhlulu/140k-real-and-fake-faces) and point data.root at its "
        "real_vs_fake/real-vs-fake folder, or run with data=synthetic for the embedded demo data."
    )


def index_split(root: str | Path, split: str, classes: list[str] | None = None) -> pd.DataFrame:
    """Index `root/split/<class>/*` the way torchvision's ImageFolder does (classes alphabetical).

    Args:
        classes: keep only these class folders (labels stay those of the full class list).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(missing_root_message(root))
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(
            f"split folder {split_dir} is missing: expected {root}/{{{','.join(SPLITS)}}}/"
            "{fake,real}/*.jpg (the 140k layout)"
        )
    try:
        all_classes, class_to_idx = find_classes(str(split_dir))
    except FileNotFoundError as err:
        raise DatasetError(f"no class folders in {split_dir}: expected fake/ and real/") from err
    wanted = all_classes if classes is None else list(classes)
    unknown = [c for c in wanted if c not in class_to_idx]
    if unknown:
        raise DatasetError(f"class folder(s) {unknown} not found in {split_dir} (has {all_classes})")
    rows = []
    for name in wanted:
        files = sorted(
            p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMG_EXTENSIONS
        )
        if not files:
            raise DatasetError(f"class folder {split_dir / name} has no images")
        rows += [(str(p), class_to_idx[name], name, split) for p in files]
    frame = pd.DataFrame(rows, columns=["image_path", "label", "class_name", "split"])
    frame.attrs["classes"] = all_classes
    return frame


def build_index(
    root: str | Path, splits: tuple[str, ...] = SPLITS, classes: list[str] | None = None
) -> pd.DataFrame:
    """Index several splits into one DataFrame."""
    frames = [index_split(root, split, classes) for split in splits]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["classes"] = frames[0].attrs["classes"]
    return frame
