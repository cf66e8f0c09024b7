"""tools/clip_probe.py's fit: the balance it weighs the training split with, and the regression."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from clip_probe import balance, fit  # noqa: E402


def test_balance_gives_each_class_half_and_each_folder_an_equal_share() -> None:
    frame = pd.DataFrame({
        "class_name": ["real"] * 6 + ["fake"] * 2,
        "source": ["a", "a", "a", "a", "b", "b", "a", "c"],
    })  # fmt: skip
    w = balance(frame)
    shares = pd.Series(w).groupby([frame["class_name"], frame["source"]]).sum()
    assert np.allclose(shares.to_numpy(), 0.5)  # 2 folders a class, each 1/2 of the class's 1
    assert np.isclose(
        w[frame["class_name"] == "real"].sum(), w[frame["class_name"] == "fake"].sum()
    )


def test_fit_separates_by_the_informative_feature_and_l2_shrinks_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 2] + 0.3 * rng.normal(size=400) > 0).astype(np.float32)
    w = np.ones(400)
    coef, _ = fit(x, y, w, 1e-4)
    assert np.argmax(np.abs(coef)) == 2 and coef[2] > 0
    assert ((x @ coef > 0) == (y > 0)).mean() > 0.85  # the noise caps it near 0.9
    strong, _ = fit(x, y, w, 1.0)
    assert abs(strong[2]) < abs(coef[2]) / 4
