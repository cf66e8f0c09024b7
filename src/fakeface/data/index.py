"""The dataset index: one pandas row per image (image_path, label, class_name, split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from torchvision.datasets.folder import find_classes

from fakeface import SPLITS
from fakeface.errors import DatasetError
from fakeface.preprocess import is_image


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
        raise DatasetError(
            f"class folder(s) {unknown} not found in {split_dir} (has {all_classes})"
        )
    rows = []
    for name in wanted:
        files = sorted(p for p in (split_dir / name).iterdir() if is_image(p))
        if not files:
            raise DatasetError(f"class folder {split_dir / name} has no images")
        rows += [(str(p), class_to_idx[name], name, split) for p in files]
    frame = pd.DataFrame(rows, columns=["image_path", "label", "class_name", "split"])
    frame["source"] = str(root.resolve())
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


def split_folder(
    root: str | Path,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> pd.DataFrame:
    """Index a folder of class subfolders only (real/, fake/) and split it train/valid/test.

    The split is stratified (each class is cut by the same fractions) and reproducible (seeded).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"data root {root} does not exist (data=folder wants root/<class>/*.jpg)"
        )
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(f"data.split_fractions={list(fractions)}: give 3 fractions summing to 1")
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError as err:
        raise DatasetError(f"no class folders in {root}: expected fake/ and real/") from err
    rng = np.random.default_rng(seed)
    rows = []
    for name in classes:
        files = sorted(p for p in (root / name).iterdir() if is_image(p))
        if len(files) < 3:
            raise DatasetError(f"class folder {root / name} has {len(files)} images (need >= 3)")
        order = rng.permutation(len(files))
        n_train = round(fractions[0] * len(files))
        n_valid = round(fractions[1] * len(files))
        for rank, i in enumerate(order):
            split = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
            rows.append((str(files[i]), class_to_idx[name], name, split))
    frame = pd.DataFrame(rows, columns=["image_path", "label", "class_name", "split"])
    frame = frame.sort_values(["split", "label", "image_path"], ignore_index=True)
    frame["source"] = str(root.resolve())
    frame.attrs["classes"] = classes
    return frame


def folder_list(value: str | Path | list[str] | None) -> list[str]:
    """A folder setting (data.root, data.val_root) given as one path, a list, or null -> a list."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]


def concat_sources(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One index of several folders (each row keeps its `source`); DatasetError if classes differ."""
    classes = frames[0].attrs["classes"]
    for frame in frames[1:]:
        if frame.attrs["classes"] != classes:
            raise DatasetError(
                f"{frame['source'].iloc[0]} has class folders {frame.attrs['classes']}, "
                f"{frames[0]['source'].iloc[0]} has {classes}: every data.root needs the same ones"
            )
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["classes"] = classes
    return frame


def sources(frame: pd.DataFrame) -> pd.Series:
    """Each row's source folder (resolved): its `source` column, else root/<class>/<file>'s root."""
    if "source" in frame:
        return frame["source"].astype(str)
    return frame["image_path"].map(lambda p: str(Path(p).expanduser().resolve().parent.parent))
