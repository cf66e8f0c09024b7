"""fakeface.evaluate (metrics, threshold, report, CLI) and fakeface.evaluation.perturb (perturbations)."""

from __future__ import annotations

import json
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import compose, make_face_folder, run_cli
from fakeface.deploy.export import export_classifier
from fakeface.deploy.inference import ImageFiles, score_files
from fakeface.deploy.modelfile import ModelFileError, classify, load_classifier
from fakeface.evaluation.metrics import (
    auto_threshold,
    binary_metrics,
    calibrate,
    fit_temperature,
    uncalibrated,
)
from fakeface.evaluation.perturb import (
    PERTURBATIONS,
    RANDOM_STEPS,
    SWEEP,
    centre_crop,
    down_up,
    gaussian_blur,
    jpeg,
    perturbation,
    random_steps,
)
from fakeface.preprocess import load_image, preprocess, resize_rgb

SIZE = 64  # make_face_folder's image side; the test models take it unresized

# ---------------------------------------------------------------------------------------------
# Metrics on hand-made predictions

# 5 fakes then 6 reals; 0.5 sits exactly on the threshold (counts as fake: p >= t).
P_FAKE = [0.95, 0.85, 0.7, 0.5, 0.3, 0.65, 0.55, 0.42, 0.25, 0.1, 0.02]
IS_FAKE = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_binary_metrics_match_hand_computed_values() -> None:
    m = binary_metrics(P_FAKE, IS_FAKE, threshold=0.5)
    # Predicted fake: 0.95 0.85 0.7 0.5 (fakes) and 0.65 0.55 (reals) -> TP 4, FN 1, FP 2, TN 4.
    assert m["confusion_matrix"] == [[4, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(8 / 11)
    assert m["balanced_accuracy"] == pytest.approx((4 / 5 + 4 / 6) / 2)
    fake, real = m["per_class"]["fake"], m["per_class"]["real"]
    assert (fake["precision"], fake["recall"]) == pytest.approx((4 / 6, 4 / 5))
    assert (real["precision"], real["recall"]) == pytest.approx((4 / 5, 4 / 6))
    assert fake["f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert (fake["support"], real["support"]) == (5, 6)
    # AUC: fake-real pairs ranked right: 6 + 6 + 6 + 4 + 3 of 5 * 6.
    assert m["roc_auc"] == pytest.approx(25 / 30)
    # AP: precision at each fake's rank (1, 2, 3, 6, 8), each worth 1/5 of recall.
    assert m["average_precision"] == pytest.approx((1 + 1 + 1 + 4 / 6 + 5 / 8) / 5)
    # Top-label ECE, 15 bins of width 1/15; per bin |sum(confidence) - sum(correct)| / N:
    # bin 14 {.95 ok, .98 ok}, 13 {.9 ok}, 12 {.85 ok}, 11 {.75 ok}, 10 {.7 ok, .7 wrong},
    # 9 {.65 wrong}, 8 {.55 wrong, .58 ok}, 7 {.5 ok (a tie goes to fake)}.
    gaps = [1.93 - 2, 0.9 - 1, 0.85 - 1, 0.75 - 1, 1.4 - 1, 0.65 - 0, 1.13 - 1, 0.5 - 1]
    assert m["ece"] == pytest.approx(sum(abs(g) for g in gaps) / 11, abs=1e-6)
    assert m["n"] == 11 and m["classes"] == ["fake", "real"]


def test_threshold_is_inclusive_and_moves_the_predictions() -> None:
    at = binary_metrics(P_FAKE, IS_FAKE, threshold=0.5)
    above = binary_metrics(P_FAKE, IS_FAKE, threshold=0.501)
    assert at["confusion_matrix"][0] == [4, 1]  # p_fake = 0.5 is called fake at threshold 0.5
    assert above["confusion_matrix"][0] == [3, 2]
    # ROC-AUC, AP and ECE do not depend on the threshold.
    assert (above["roc_auc"], above["ece"]) == (at["roc_auc"], at["ece"])


def test_binary_metrics_one_class_and_bad_input() -> None:
    m = binary_metrics([0.9, 0.2], [1, 1])
    assert m["accuracy"] == 0.5 and m["roc_auc"] is None and m["average_precision"] is None
    with pytest.raises(ValueError, match="probabilities"):
        binary_metrics([0.5, 1.5], [1, 0])
    with pytest.raises(ValueError, match="equal-length"):
        binary_metrics([0.5], [1, 0])


def test_calibrate_keeps_the_temperature_only_where_it_lowers_the_ece() -> None:
    generator = torch.Generator().manual_seed(0)
    # Overconfident logits: the NLL temperature (~3) also cuts the ECE, so it is kept.
    z = torch.randn(4000, 2, generator=generator) * 6
    labels = torch.multinomial(torch.softmax(z / 3, dim=1), 1, generator=generator).squeeze(1)
    kept = calibrate(z, labels)
    assert kept["temperature"] == kept["fitted_temperature"] == pytest.approx(3.0, rel=0.1)
    assert kept["ece_after"] < kept["ece_before"] and kept["nll_after"] < kept["nll_before"]
    # 900 well-calibrated predictions (p = 0.9, 90% right) and 60 confident coin flips: the NLL
    # asks for T ~ 2, which would leave the 900 underconfident; the file keeps T = 1.
    z = torch.zeros(960, 2)
    z[:900, 0], z[900:, 0] = 2.197, 9.0
    labels = torch.cat([torch.rand(900, generator=generator) > 0.9, torch.rand(60) > 0.5]).long()
    refused = calibrate(z, labels)
    assert refused["fitted_temperature"] > 1.5 and refused["temperature"] == 1.0
    assert refused["ece_after"] > refused["ece_before"] and refused["images"] == 960


def test_fit_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    # Labels drawn from softmax(z / 3): the logits z are 3x too confident; T ~ 3 undoes it.
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 2, generator=generator) * 6
    labels = torch.multinomial(torch.softmax(z / 3, dim=1), 1, generator=generator).squeeze(1)
    assert fit_temperature(z, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z / 3, labels) == pytest.approx(1.0, rel=0.1)
    # uncalibrated() undoes a file's temperature exactly on two classes.
    p_file = torch.softmax(z[:5] / 3, dim=1)[:, 0].numpy()
    raw = torch.softmax(z[:5], dim=1)[:, 0].numpy()
    assert np.allclose(uncalibrated(p_file, 3.0), raw, atol=1e-6)


@pytest.mark.parametrize(
    ("fakes", "reals", "expected", "balanced"),
    [
        # Separable but shifted: any t in (0.15, 0.2] is perfect; the midpoint is taken.
        ([0.2, 0.25, 0.3], [0.05, 0.1, 0.15], 0.175, 1.0),
        # Imbalanced: best accuracy is t in (0.6, 0.8] (9/10), best balanced accuracy is
        # t in (0.3, 0.45]: recall 1 for fakes, 5/8 for reals.
        ([0.45, 0.8], [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.55, 0.6], 0.375, (1 + 5 / 8) / 2),
        # Two equally good gaps, (0.1, 0.3] and (0.6, 0.9]: the midpoint nearer 0.5 wins.
        ([0.3, 0.9], [0.1, 0.6], 0.75, 0.75),
    ],
)
def test_auto_threshold_maximises_balanced_accuracy(
    fakes: list[float], reals: list[float], expected: float, balanced: float
) -> None:
    threshold, best = auto_threshold(fakes + reals, [1] * len(fakes) + [0] * len(reals))
    assert threshold == pytest.approx(expected, abs=1e-9)
    assert best == pytest.approx(balanced)
    m = binary_metrics(fakes + reals, [1] * len(fakes) + [0] * len(reals), threshold)
    assert m["balanced_accuracy"] == pytest.approx(balanced)
    with pytest.raises(ValueError, match="both classes"):
        auto_threshold(fakes, [1] * len(fakes))


# ---------------------------------------------------------------------------------------------
# Perturbations


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A non-square RGB image with smooth shading and sharp edges (perturbations must show)."""
    y, x = np.mgrid[0:90, 0:120]
    pixels = np.stack([x * 2, y * 2, (x + y) % 256], -1).astype(np.uint8)
    pixels[20:70:4, 10:110] = 255  # thin stripes: high frequencies for blur, JPEG and resizing
    return Image.fromarray(pixels, "RGB")


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


@pytest.mark.parametrize("name", SWEEP)
def test_each_perturbation_changes_the_image_deterministically(
    name: str, photo: Image.Image
) -> None:
    out = PERTURBATIONS[name](photo)
    assert out.mode == "RGB"
    if name.startswith("crop"):
        assert out.size == (96, 72)  # the central 80% of 120 x 90
        assert np.array_equal(np.asarray(out), np.asarray(photo)[9:81, 12:108])
    else:
        assert out.size == photo.size
        assert _diff(out, photo) > 0.5
    assert np.array_equal(np.asarray(out), np.asarray(PERTURBATIONS[name](photo)))
    assert pickle.loads(pickle.dumps(PERTURBATIONS[name]))(photo).tobytes() == out.tobytes()


def test_stronger_perturbations_change_more(photo: Image.Image) -> None:
    for weak, strong in (("jpeg90", "jpeg30"), ("blur1", "blur2"), ("down0.5", "down0.25")):
        assert _diff(PERTURBATIONS[strong](photo), photo) > _diff(PERTURBATIONS[weak](photo), photo)


def test_perturbation_names_parse_and_bad_names_fail(photo: Image.Image) -> None:
    assert perturbation("jpeg60")(photo).tobytes() == jpeg(photo, 60).tobytes()
    assert perturbation("crop0.5")(photo).size == (60, 45)
    gray = photo.convert("L")  # any mode comes back RGB
    assert perturbation("blur3")(gray).mode == "RGB"
    for bad in ("jpeg0", "jpeg101", "down1", "crop0", "sharpen2", "blur"):
        with pytest.raises(ValueError, match=bad):
            perturbation(bad)


class ScriptedRng:
    """A stand-in generator whose .random() returns the given values in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_random_blur_and_jpeg_draws(photo: Image.Image) -> None:
    # (blur?, sigma, jpeg?, quality): probability 0.5 each, sigma 3u, quality 30 + floor(71u).
    def robust(rng: object) -> Image.Image:
        return random_steps(photo, rng, ("blur", "jpeg"))

    assert robust(ScriptedRng(0.4, 0.5, 0.9)).tobytes() == gaussian_blur(photo, 1.5).tobytes()
    assert robust(ScriptedRng(0.9, 0.1, 0.0)).tobytes() == jpeg(photo, 30).tobytes()
    both = robust(ScriptedRng(0.1, 1.0, 0.2, 0.9999))
    assert both.tobytes() == jpeg(gaussian_blur(photo, 3.0), 100).tobytes()
    assert robust(ScriptedRng(0.5, 0.5)).tobytes() == photo.tobytes()
    # Real generators: seeded draws repeat; over many draws about a quarter stay untouched.
    for make in (np.random.default_rng, random.Random):
        first = [robust(make(7)).tobytes() for _ in range(2)]
        assert first[0] == first[1]
        rng = make(0)
        untouched = sum(robust(rng).tobytes() == photo.tobytes() for _ in range(80))
        assert 8 <= untouched <= 32
        out = robust(rng)
        assert out.mode == "RGB" and out.size == photo.size


def test_random_resample_draws(photo: Image.Image) -> None:
    # (resample?, factor 0.25 + 0.75u, filter: bilinear, bicubic, Lanczos by thirds).
    bicubic = random_steps(photo, ScriptedRng(0.1, 1 / 3, 0.5), ("resample",))
    assert bicubic.tobytes() == down_up(photo, 0.5, Image.Resampling.BICUBIC).tobytes()
    assert random_steps(photo, ScriptedRng(0.5), ("resample",)).tobytes() == photo.tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_random_step_is_seeded_and_keeps_size_and_range(
    photo: Image.Image, seed: int
) -> None:
    steps = tuple(RANDOM_STEPS)
    out = random_steps(photo, random.Random(seed), steps)
    assert out.tobytes() == random_steps(photo, random.Random(seed), steps).tobytes()
    assert out.mode == "RGB" and out.size == photo.size
    pixels = np.asarray(out)
    assert pixels.dtype == np.uint8 and pixels.std() > 0  # 8-bit pixels, not a flat image
    assert out.tobytes() != random_steps(photo, random.Random(seed + 10), steps).tobytes()


# ---------------------------------------------------------------------------------------------
# Scoring and the report


class CheckerDetector(nn.Module):
    """Logits [fake, real] from the 1-pixel checkerboard that make_face_folder adds to fakes.

    The signed mean is about 0.12 for fakes and 0 for reals; blur or downscaling erase it.
    """

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        ij = torch.arange(size)[:, None] + torch.arange(size)
        self.register_buffer("sign", (ij % 2 * 2 - 1).float())  # +1 where the checker adds 60
        self.gain = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.gain * ((x * self.sign).mean((1, 2, 3)) - 0.06)  # N
        return torch.stack([logit, -logit], dim=1)


@pytest.fixture(scope="module")
def checker_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "classifier.ts"
    return export_classifier(CheckerDetector(), path, image_size=SIZE, arch="checker")


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 140k layout, 4 images per class and split, plus one broken file in test/fake."""
    root = make_face_folder(tmp_path_factory.mktemp("data") / "faces", per_class=4, size=SIZE)
    (root / "test" / "fake" / "broken.jpg").write_bytes(b"not a JPEG")
    return root


def test_eval_images_perturb_full_resolution_before_the_resize(faces: Path) -> None:
    path = faces / "test" / "real" / "000.jpg"
    item = ImageFiles([path], 32, [None, PERTURBATIONS["crop0.8"]])[0]
    original = load_image(path)
    assert item["index"] == 0 and item["error"] == "" and item["pixels"].shape == (2, 32, 32, 3)
    assert np.array_equal(item["pixels"][0], resize_rgb(original, 32))
    assert np.array_equal(item["pixels"][1], resize_rgb(centre_crop(original, 0.8), 32))
    bad = ImageFiles([faces / "test" / "fake" / "broken.jpg"], 32, [None])[0]
    assert bad["pixels"] is None and "broken.jpg" in bad["error"]


def test_score_files_tta_and_unreadable(faces: Path, checker_model: Path) -> None:
    model, info = load_classifier(checker_model)
    paths = [
        faces / "test" / "fake" / "broken.jpg",
        *sorted((faces / "test" / "real").glob("*.jpg")),
    ]
    scores = score_files(model, info, paths, batch_size=3, tta=True)
    assert list(scores.errors) == [0] and list(scores.readable()) == [False] + [True] * 4
    p_fake = scores.probs["clean"][:, 0]
    batch = torch.stack([preprocess(load_image(p), SIZE) for p in paths[1:]])
    # The mirror of a 64-wide 1-pixel checkerboard is its negative: TTA averages the two views.
    expected = (classify(model, batch) + classify(model, batch.flip(-1))) / 2
    assert np.allclose(p_fake[1:], expected[:, 0].numpy(), atol=1e-6)


def _config(model: str | Path, overrides: list[str]):
    """evaluate's config composed from conf/, as the CLI composes it."""
    return compose("evaluate", [f"classifier={model}", *overrides])


@pytest.mark.slow
def test_cli_writes_every_report_file(faces: Path, checker_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    command = [
        sys.executable, "-m", "fakeface.evaluate", f"classifier={checker_model}", f"data.root={faces}",
        "threshold=auto", "robustness=true", f"hydra.run.dir={out}", "data.num_workers=2",
    ]  # fmt: skip
    result = run_cli(command, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("report.md", "report.json", "predictions.csv", "roc.png", "reliability.png",
                 "confusion.png", "robustness.png", ".hydra/config.yaml"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name

    report = json.loads((out / "report.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(predictions) == 9 and report["data"]["images"] == 9
    readable = predictions[predictions["error"] == ""]
    is_fake = (readable["class_name"] == "fake").to_numpy()
    threshold = report["threshold"]["value"]
    assert report["threshold"]["mode"] == "auto" and report["threshold"]["val_split"] == "valid"
    # The report's numbers are binary_metrics of the per-image probabilities it lists.
    expected = binary_metrics(readable["p_fake"].astype(float), is_fake, threshold)
    got = report["metrics"]
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "ece", "n"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    # An uncalibrated file (temperature 1): the ECE without it is the same ECE.
    assert report["calibration"]["temperature"] == 1.0
    assert report["calibration"]["ece_uncalibrated"] == pytest.approx(got["ece"], abs=1e-9)
    for name in ("fake", "real"):
        assert got["per_class"][name] == pytest.approx(expected["per_class"][name], abs=1e-6)
    assert (
        report["metrics"]["accuracy"] == 1.0
    )  # the checkerboard detector is right on clean images
    # A sigma-2 blur wipes out the checkerboard: every fake is called real.
    sweep = {row["perturbation"]: row for row in report["robustness"]}
    assert list(sweep) == ["clean", *SWEEP]
    assert sweep["blur2"]["accuracy"] == 0.5
    assert report["robustness_metrics"]["blur2"]["confusion_matrix"] == [[0, 4], [0, 4]]
    blur2 = binary_metrics(readable["p_fake_blur2"].astype(float), is_fake, threshold)
    assert sweep["blur2"]["roc_auc"] == pytest.approx(blur2["roc_auc"])

    assert [u["path"] for u in report["unreadable"]] == [
        str(faces / "test" / "fake" / "broken.jpg")
    ]
    markdown = (out / "report.md").read_text()
    assert "broken.jpg" in markdown and "| blur2 | 0.5000 |" in markdown
    assert f"{threshold:.4g} (auto" in markdown


def test_folder_data_reuses_the_training_runs_split(checker_model: Path, tmp_path: Path) -> None:
    from fakeface.data.datamodule import FaceDataModule
    from fakeface.evaluate import evaluate

    folder = make_face_folder(tmp_path / "folder", per_class=10, size=SIZE, splits=("",))
    run = tmp_path / "run"
    run.mkdir()
    split = FaceDataModule(root=str(folder), layout="folder", split_seed=3).folder_split()
    split.to_csv(run / "split.csv", index=False)  # what a data=folder training run writes
    (run / "classifier.ts").write_bytes(checker_model.read_bytes())
    held_out = sorted(split.loc[split["split"] == "test", "image_path"])
    common = ["data=folder", "data.num_workers=0", f"paths.root_dir={tmp_path}"]

    def held_out_by(model: Path, *overrides: str) -> list[str]:
        out = tmp_path / f"eval{len(list(tmp_path.glob('eval*')))}"
        evaluate(_config(model, [*common, f"paths.output_dir={out}", *overrides]))
        return sorted(pd.read_csv(out / "predictions.csv")["image_path"])

    # The split.csv beside the model is found; data.split_seed (0 here) does not matter then.
    assert held_out_by(run / "classifier.ts", f"data.root={folder}") == held_out
    # run_split=false re-splits with data.split_seed=0: other held-out images.
    assert held_out_by(run / "classifier.ts", f"data.root={folder}", "run_split=false") != held_out
    # An explicit split file works for a model stored elsewhere, even without data.root.
    assert held_out_by(checker_model, f"data.split_file={run / 'split.csv'}") == held_out
    report = json.loads((tmp_path / "eval2" / "report.json").read_text())
    assert report["data"]["split_file"] == str(run / "split.csv")
    assert report["data"]["root"] == str(folder)
    # Another folder is scored itself, never replaced by the training run's split of `folder`;
    # the report names the folder whose images it scored.
    other = make_face_folder(tmp_path / "other", per_class=10, size=SIZE, splits=("",))
    scored = held_out_by(run / "classifier.ts", f"data.root={other}")
    assert scored and all(path.startswith(str(other)) for path in scored)
    report = json.loads((tmp_path / "eval3" / "report.json").read_text())
    assert report["data"]["root"] == str(other) and report["data"]["split_file"] is None


def test_missing_model_and_bad_settings_fail_with_one_line(faces: Path, tmp_path: Path) -> None:
    from fakeface.errors import ConfigError
    from fakeface.evaluate import evaluate

    base = [f"data.root={faces}", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    with pytest.raises(ModelFileError, match="not found"):
        evaluate(_config(tmp_path / "missing.ts", base))
    with pytest.raises(ConfigError, match="threshold=1.5"):
        evaluate(_config("x.ts", ["threshold=1.5", *base]))
    with pytest.raises(ConfigError, match="sharpen"):
        evaluate(_config("x.ts", ["robustness=true", "perturbations=[sharpen]", *base]))
