"""Generalisation to unseen generators: per-group scores, the storage-history stress test, and
the NPR trace network (fakeface.evaluation.groups, evaluation.perturb, models.nets.TraceNet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import compose, make_face_folder
from fakeface.deploy.export import export_classifier
from fakeface.deploy.inference import score_files
from fakeface.deploy.modelfile import load_classifier
from fakeface.errors import ConfigError
from fakeface.evaluation.groups import group_metrics, index_groups, pair_metrics
from fakeface.evaluation.metrics import binary_metrics
from fakeface.evaluation.perturb import HISTORY_SIDE, history_variants, restore
from fakeface.models.nets import TraceNet, npr_residual

SIZE = 64


class Stripes(nn.Module):
    """p_fake from the 1-pixel checkerboard make_face_folder adds to fakes (JPEG and resampling
    soften it, so every storage history moves the scores a little)."""

    def __init__(self) -> None:
        super().__init__()
        ij = torch.arange(SIZE)[:, None] + torch.arange(SIZE)
        self.register_buffer("sign", (ij % 2 * 2 - 1).float())
        self.gain = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.gain * ((x * self.sign).mean((1, 2, 3)) - 0.06)
        return torch.stack([logit, -logit], dim=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "classifier.ts"
    return export_classifier(Stripes(), path, image_size=SIZE, arch="stripes")


# ---------------------------------------------------------------------------------------------
# Per-group metrics on hand-made scores

P = np.array([0.9, 0.8, 0.1, 0.6, 0.3, 0.2, 0.95, 0.05])
FAKE = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
GROUP = np.array(["sg2", "sg2", "sg3", "sg3", "ffhq", "ffhq", "utk", "utk"])


def test_group_rows_score_each_generator_against_all_reals() -> None:
    rows = {(r["group"], r["class"]): r for r in group_metrics(P, FAKE, GROUP, 0.5)}
    assert list(rows) == [("sg2", "fake"), ("sg3", "fake"), ("ffhq", "real"), ("utk", "real")]
    sg3 = rows[("sg3", "fake")]
    # sg3 (0.1, 0.6) against the four reals (0.3, 0.2, 0.95, 0.05): pairs ranked right 0+1 + 2+3.
    assert sg3["roc_auc"] == pytest.approx(4 / 8)
    assert sg3["accuracy"] == 0.5 and sg3["confident_wrong"] == 0.5  # 0.1 < 0.2
    assert sg3["mean_p_fake"] == pytest.approx(0.35) and sg3["n"] == 2
    assert sg3["ece"] == pytest.approx(binary_metrics(P[2:4], FAKE[2:4])["ece"])
    utk = rows[("utk", "real")]
    assert utk["accuracy"] == 0.5 and utk["confident_wrong"] == 0.5  # 0.95 > 0.8
    # utk against the four fakes: 0.95 beats all of them, 0.05 none.
    assert utk["roc_auc"] == pytest.approx(4 / 8)
    assert rows[("sg2", "fake")]["roc_auc"] == pytest.approx(6 / 8)  # 0.95 beats both


def test_pair_rows_are_binary_metrics_of_their_images() -> None:
    pairs = pair_metrics(P, FAKE, GROUP, 0.5)
    assert [(r["fake"], r["real"]) for r in pairs] == [
        ("sg2", "ffhq"), ("sg2", "utk"), ("sg3", "ffhq"), ("sg3", "utk"),
    ]  # fmt: skip
    mine = np.isin(GROUP, ["sg3", "utk"])
    expected = binary_metrics(P[mine], FAKE[mine], 0.5)
    got = pairs[3]
    for key in ("n", "accuracy", "balanced_accuracy", "roc_auc", "ece"):
        assert got[key] == pytest.approx(expected[key]), key
    assert pairs[0]["roc_auc"] == 1.0 and pairs[0]["n"] == 4


def test_index_groups_takes_class_folders_and_parents(tmp_path: Path) -> None:
    folder = make_face_folder(tmp_path / "set", per_class=3, size=SIZE, splits=("",))
    frame = index_groups({"both": str(folder), "gen": str(folder / "fake")})
    counts = frame.groupby(["group", "class_name"]).size().to_dict()
    assert counts == {("both", "fake"): 3, ("both", "real"): 3, ("gen", "fake"): 3}
    with pytest.raises(ConfigError, match=r"groups.x=.*no such folder"):
        index_groups({"x": str(tmp_path / "missing")})
    (tmp_path / "loose").mkdir()
    with pytest.raises(ConfigError, match=r"groups.y=.*class folder"):
        index_groups({"y": str(tmp_path / "loose")})


# ---------------------------------------------------------------------------------------------
# The storage-history stress test


def test_restore_is_deterministic_keeps_range_and_only_the_jpeg_path_compresses() -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    image = noise.resize((64, 48), Image.Resampling.BICUBIC)  # smooth, as a photo is
    lossless, stored = restore(image), restore(image, quality=75)
    assert lossless.size == stored.size == (HISTORY_SIDE, 768)  # the longer side, aspect kept
    again = restore(image, quality=75)
    assert np.array_equal(np.asarray(stored), np.asarray(again))  # same image, same output
    for out in (lossless, stored):
        pixels = np.asarray(out)
        assert pixels.dtype == np.uint8 and out.mode == "RGB" and pixels.min() >= 0

    # Back at the original size, the lossless path is close to the original, the JPEG one less.
    def error(out: Image.Image) -> float:
        back = np.asarray(out.resize((64, 48), Image.Resampling.LANCZOS), dtype=float)
        return float(np.abs(back - np.asarray(image, dtype=float)).mean())

    assert error(lossless) < 2 and error(stored) > error(lossless)
    names = history_variants()
    assert list(names) == ["history:lossless", "history:real-jpeg", "history:fake-jpeg"]
    assert names["history:real-jpeg"]["real"].keywords == {"quality": 75}
    assert names["history:real-jpeg"]["fake"].keywords == {"quality": None}
    assert names["history:fake-jpeg"]["fake"].keywords == {"quality": 75}


def _evaluate(model: Path, tmp_path: Path, out: str, overrides: list[str]) -> dict:
    from fakeface.evaluate import evaluate

    common = [f"classifier={model}", "data.num_workers=0", f"paths.root_dir={tmp_path}",
              "precision=fp32"]  # fmt: skip
    evaluate(compose("evaluate", [*common, f"paths.output_dir={tmp_path / out}", *overrides]))
    return json.loads((tmp_path / out / "report.json").read_text())


def test_history_applies_each_path_to_its_class(model_file: Path, tmp_path: Path) -> None:
    folder = make_face_folder(tmp_path / "set", per_class=3, size=SIZE, splits=("",))
    report = _evaluate(
        model_file,
        tmp_path,
        "hist",
        ["split=none", f"groups={{set: {folder}}}", "robustness=history"],
    )
    predictions = pd.read_csv(tmp_path / "hist" / "predictions.csv")
    model, info = load_classifier(model_file)
    for class_name in ("fake", "real"):
        rows = predictions[predictions["class_name"] == class_name]
        jpeg = score_files(model, info, rows["image_path"], variants={"v": history_variants()[
            "history:fake-jpeg"][class_name]}).probs["v"][:, 0]  # fmt: skip
        assert np.allclose(rows["p_fake_history:fake-jpeg"], jpeg, atol=1e-6), class_name
    fakes = predictions[predictions["class_name"] == "fake"]
    # The fakes' JPEG path is not their lossless one: the variant moved the right class.
    assert not np.allclose(fakes["p_fake_history:fake-jpeg"], fakes["p_fake_history:real-jpeg"])
    reals = predictions[predictions["class_name"] == "real"]
    assert not np.allclose(reals["p_fake_history:real-jpeg"], reals["p_fake_history:fake-jpeg"])
    rows = [r["perturbation"] for r in report["robustness"]]
    assert rows == ["clean", "history:lossless", "history:real-jpeg", "history:fake-jpeg"]
    assert list(report["pairs"]) == rows
    markdown = (tmp_path / "hist" / "report.md").read_text()
    assert "| set | set |" in markdown and "history:fake-jpeg" in markdown


def test_groups_beside_data_give_generator_and_source_rows(
    model_file: Path, tmp_path: Path
) -> None:
    data = make_face_folder(tmp_path / "dev", per_class=6, size=SIZE, splits=("",))
    other = make_face_folder(tmp_path / "other", per_class=4, size=SIZE, splits=("",))
    report = _evaluate(
        model_file, tmp_path, "g",
        ["data=folder", f"data.root={data}", "split=all", f"groups={{newgan: {other / 'fake'}}}"],
    )  # fmt: skip
    groups = [(g["group"], g["class"], g["n"]) for g in report["groups"]]
    assert groups == [("dev", "fake", 6), ("dev", "real", 6), ("newgan", "fake", 4)]
    assert [(p["fake"], p["real"]) for p in report["pairs"]["clean"]] == [
        ("dev", "dev"), ("newgan", "dev"),
    ]  # fmt: skip
    assert report["metrics"]["n"] == 16 and report["data"]["groups"] == {
        "newgan": str(other / "fake")
    }
    markdown = (tmp_path / "g" / "report.md").read_text()
    assert (
        "## Per generator and per real source" in markdown and "| newgan | dev | 10 |" in markdown
    )
    with pytest.raises(ConfigError, match="robustness='often'"):
        _evaluate(model_file, tmp_path, "bad", ["split=none", "robustness=often"])


# ---------------------------------------------------------------------------------------------
# TraceNet (model.arch=npr)


def test_npr_residual_vanishes_on_a_nearest_upsampled_image() -> None:
    small = torch.rand(2, 3, 8, 8)
    upsampled = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.count_nonzero(npr_residual(upsampled)) == 0
    assert npr_residual(torch.rand(2, 3, 16, 16)).abs().sum() > 0
    with pytest.raises(ConfigError, match="even data.image_size"):
        TraceNet(image_size=63)


def test_tracenet_exports_and_reloads(tmp_path: Path) -> None:
    from fakeface.models.classifier import CNNClassifier

    model = CNNClassifier(arch="npr", image_size=32).eval()
    path = export_classifier(model, tmp_path / "classifier.ts", image_size=32)
    loaded, info = load_classifier(path)
    assert (info.arch, info.image_size) == ("npr", 32)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
        assert torch.allclose(loaded(x), expected, atol=1e-5)
