"""Per-generator and per-source scores: which fakes a model misses and which reals it doubts.

Every evaluated image belongs to a group: a named folder (evaluate's `groups`) or, for the images
of `data`, its source folder's name. Fakes in a group are one generator, reals one source. A
generator is ranked against all the reals of the evaluation, a real source against all the
fakes, and every (generator, real source) pair is scored on its own: the leave-one-generator-out
number is the pair (reals the model never trained on, a generator it never saw).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakeface import CLASS_NAMES
from fakeface.errors import ConfigError
from fakeface.evaluation.metrics import POSITIVE, binary_metrics
from fakeface.preprocess import is_image

CONFIDENT = 0.2  # "confidently wrong": a fake with p_fake < 0.2, a real with p_fake > 0.8


def _class_folders(name: str, folder: Path) -> list[tuple[str, Path]]:
    """(class, folder) for a group's folder: its fake/ and real/ subfolders, or itself."""
    if not folder.is_dir():
        raise ConfigError(f"groups.{name}={folder}: no such folder")
    inside = [(c, folder / c) for c in CLASS_NAMES if (folder / c).is_dir()]
    if inside:
        return inside
    if folder.name in CLASS_NAMES:
        return [(folder.name, folder)]
    raise ConfigError(
        f"groups.{name}={folder}: give a class folder (<folder>/fake or <folder>/real) or a folder "
        "holding fake/ and/or real/"
    )


def index_groups(groups: Mapping[str, str] | None) -> pd.DataFrame:
    """One row per image of each named folder (image_path, class_name, group), scored whole."""
    rows = []
    for name, value in (groups or {}).items():
        for class_name, folder in _class_folders(str(name), Path(str(value)).expanduser()):
            files = sorted(p for p in folder.iterdir() if is_image(p))
            if not files:
                raise ConfigError(f"groups.{name}: {folder} has no images")
            rows += [(str(p), class_name, str(name)) for p in files]
    return pd.DataFrame(rows, columns=["image_path", "class_name", "group"])


def _scores(p: np.ndarray, fake: np.ndarray, threshold: float, n_bins: int) -> dict[str, Any]:
    m = binary_metrics(p, fake, threshold, n_bins=n_bins)
    keep = ("n", "accuracy", "balanced_accuracy", "roc_auc", "ece")
    return {key: m[key] for key in keep}


def group_metrics(
    p_fake: np.ndarray, is_fake: np.ndarray, group: np.ndarray, threshold: float, n_bins: int = 15
) -> list[dict[str, Any]]:
    """Per group: its images' accuracy (its class's recall), ECE, mean p_fake, the share scored
    confidently wrong, and the ROC-AUC of the group against every image of the other class.

    A group holding both classes gives one row per class (a generator and a real source).
    """
    rows = []
    for name in dict.fromkeys(group):
        for fake in (True, False):
            mine = (group == name) & (is_fake == fake)
            if not mine.any():
                continue
            wrong = p_fake[mine] < CONFIDENT if fake else p_fake[mine] > 1 - CONFIDENT
            against = mine | (is_fake != fake)
            ranked = _scores(p_fake[against], is_fake[against], threshold, n_bins)
            alone = _scores(p_fake[mine], is_fake[mine], threshold, n_bins)
            rows.append({
                "group": str(name), "class": POSITIVE if fake else "real", "n": int(mine.sum()),
                "accuracy": alone["accuracy"], "ece": alone["ece"],
                "mean_p_fake": float(p_fake[mine].mean()), "confident_wrong": float(wrong.mean()),
                "roc_auc": ranked["roc_auc"],
            })  # fmt: skip
    return rows


def pair_metrics(
    p_fake: np.ndarray, is_fake: np.ndarray, group: np.ndarray, threshold: float, n_bins: int = 15
) -> list[dict[str, Any]]:
    """Every (generator, real source) pair scored on its own images: ROC-AUC, accuracy, ECE."""
    fakes = list(dict.fromkeys(group[is_fake]))
    reals = list(dict.fromkeys(group[~is_fake]))
    rows = []
    for generator in fakes:
        for source in reals:
            mine = ((group == generator) & is_fake) | ((group == source) & ~is_fake)
            rows.append(
                {"fake": str(generator), "real": str(source)}
                | _scores(p_fake[mine], is_fake[mine], threshold, n_bins)
            )
    return rows


def per_group(
    scores: Mapping[str, np.ndarray], is_fake: np.ndarray, group: np.ndarray, threshold: float,
    n_bins: int = 15,
) -> dict[str, Any]:  # fmt: skip
    """{"groups": rows of the clean scores, "pairs": {variant: pair rows}} for report.json."""
    first = next(iter(scores))
    return {
        "groups": group_metrics(scores[first], is_fake, group, threshold, n_bins),
        "pairs": {
            name: pair_metrics(p, is_fake, group, threshold, n_bins) for name, p in scores.items()
        },
    }
