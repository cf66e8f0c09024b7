"""The dataset index: one pandas row per image (image_path, label, class_name, split)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from torchvision.datasets.folder import find_classes

from fakeface import CLASS_NAMES, SPLITS
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
    group_regex: str | None = None,
) -> pd.DataFrame:
    """Index a folder of class subfolders (fake/ and real/, or only one of them), or one class
    folder itself (<folder>/real), and split it train/valid/test.

    The split is stratified (each class is cut by the same fractions) and reproducible (seeded).
    A folder with one class (a generator's fakes, a source of real photos) is indexed with the
    labels of CLASS_NAMES, so it joins folders of the other class or of both.

    Args:
        group_regex: files whose name matches it are split by group, not by image: the first
            group the regex captured (a person, a prompt's subject group) keeps all its images
            in one split, so a test split holds people the model never trained on.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"data root {root} does not exist (data=folder wants root/<class>/*.jpg)"
        )
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(f"data.split_fractions={list(fractions)}: give 3 fractions summing to 1")
    present = [name for name in CLASS_NAMES if (root / name).is_dir()]
    folders = {name: root / name for name in present}
    if not present and root.name in CLASS_NAMES:  # a class folder itself: faces-dev/real
        present, folders = [root.name], {root.name: root}
    if not present:
        others = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"no class folders in {root}: expected fake/ and/or real/"
            + (f" (found {others})" if others else "")
        )
    others = sorted(
        d.name for d in root.iterdir() if d.is_dir() and d.name not in CLASS_NAMES
        and any(is_image(f) for f in d.iterdir())
    )  # fmt: skip
    if others and present:
        raise DatasetError(
            f"{root} has class folders {sorted(present + others)}; every data.root needs the same "
            f"ones: fake/ and/or real/ (rename or move {', '.join(others)})"
        )
    pattern = re.compile(group_regex) if group_regex else None
    rng = np.random.default_rng(seed)
    rows = []
    for name in present:
        files = sorted(p for p in folders[name].iterdir() if is_image(p))
        if len(files) < 3:
            raise DatasetError(f"class folder {folders[name]} has {len(files)} images (need >= 3)")
        groups = [_group(f.name, pattern) for f in files]
        for split, members in _split_groups(groups, fractions, rng).items():
            rows += [(str(files[i]), CLASS_NAMES.index(name), name, split) for i in members]
    frame = pd.DataFrame(rows, columns=["image_path", "label", "class_name", "split"])
    frame = frame.sort_values(["split", "label", "image_path"], ignore_index=True)
    frame["source"] = str(root.resolve())
    frame.attrs["classes"] = list(CLASS_NAMES)
    return frame


def _group(file_name: str, pattern: re.Pattern | None) -> str:
    """The split unit of a file: the regex's first captured group, else the file itself."""
    found = pattern.search(file_name) if pattern else None
    key = next((g for g in found.groups() if g), None) if found else None
    return f"group:{key}" if key else f"file:{file_name}"


def _split_groups(
    groups: list[str], fractions: tuple[float, float, float], rng: np.random.Generator
) -> dict[str, list[int]]:
    """Item indices per split; whole groups go to one split, shuffled, filled up to the fractions.

    With one item per group this is a plain seeded random split of the items.
    """
    members: dict[str, list[int]] = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    keys = list(members)
    order = rng.permutation(len(keys))
    n = len(groups)
    bounds = (round(fractions[0] * n), round(fractions[0] * n) + round(fractions[1] * n))
    out: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    taken = 0
    for k in order:
        items = members[keys[k]]
        # a group goes where its middle falls, so large groups do not all spill into one split
        middle = taken + len(items) / 2
        split = "train" if middle <= bounds[0] else "valid" if middle <= bounds[1] else "test"
        out[split] += items
        taken += len(items)
    return out


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


def source_name(source: str | Path) -> str:
    """A source folder's short name: faces-dev; a class folder with its parent, faces-dev/real."""
    path = Path(source)
    return "/".join(path.parts[-2:]) if path.name in CLASS_NAMES else path.name
