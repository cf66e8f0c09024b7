"""The GAN quality report's measures on tiny inputs: face rate, diversity, memorisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from fakeface.evaluation.ganreport import (
    diversity_ratio,
    face_rate,
    gan_report,
    mean_pairwise_distance,
    memorisation,
    write_report,
)
from fakeface.preprocess import resize_rgb


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Four 128 x 128 crops of skimage's astronaut photo around her face (a real face photo)."""
    photo = data.astronaut()  # 512 x 512 RGB; the face is at about rows 30-230, columns 150-330
    crops = [photo[0:300, 100:350], photo[10:290, 120:340], photo[0:320, 90:370]]
    images = [resize_rgb(np.ascontiguousarray(c), 128) for c in crops]
    images.append(images[0][:, ::-1].copy())  # mirrored
    return np.stack(images)


def varied(n: int, seed: int = 0) -> np.ndarray:
    """n unrelated 128 x 128 images: smooth random colour fields (blocks upsampled)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return blocks.repeat(16, axis=1).repeat(16, axis=2)


def test_real_face_photos_score_a_high_face_rate(faces: np.ndarray) -> None:
    assert face_rate(faces) >= 0.75


def test_flat_colours_score_no_faces() -> None:
    flat = np.stack([np.full((128, 128, 3), v, np.uint8) for v in (0, 90, 128, 200, 255)])
    assert face_rate(flat) == 0.0


def test_identical_samples_have_diversity_zero() -> None:
    same = np.repeat(varied(1), 6, axis=0)
    assert mean_pairwise_distance(same) == 0.0
    assert diversity_ratio(same, varied(6)) == 0.0
    # a sample set as spread as the reference scores about 1
    assert diversity_ratio(varied(40, seed=1), varied(40, seed=2)) == pytest.approx(1, abs=0.1)


def test_copies_of_the_training_set_are_near_copies() -> None:
    training = varied(20)
    copies = training[:10].copy()
    copies[..., 0] = np.clip(copies[..., 0].astype(int) + 3, 0, 255)  # a slightly tinted copy
    assert memorisation(copies, training)["near_copy_fraction"] == 1.0
    fresh = memorisation(varied(10, seed=5), training)
    assert fresh["near_copy_fraction"] == 0.0
    # unrelated samples are about as far from the training images as those are from each other
    assert fresh["sample_nn_median"] == pytest.approx(fresh["real_nn_median"], rel=0.3)


def test_report_files_hold_every_measure(tmp_path: Path, faces: np.ndarray) -> None:
    report = gan_report(varied(6), faces, p_fake=np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.6]))
    assert report["face_rate"] == 0.0 and report["face_rate_reference"] >= 0.75
    assert report["called_fake"] == pytest.approx(4 / 6)
    json_path, md_path = write_report(report, tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["memorisation"]["near_copy_fraction"] == 0.0
    assert saved["diversity_ratio"] == pytest.approx(report["diversity_ratio"])
    text = md_path.read_text()
    assert "| face rate (Haar, default preset) | 0.000 |" in text and "p_fake" in text


def test_kid_is_near_zero_within_one_distribution_and_positive_between_two() -> None:
    from fakeface.evaluation.kid import kid

    rng = np.random.default_rng(0)
    a, b = (torch.as_tensor(rng.normal(size=(300, 64))) for _ in range(2))
    shifted = torch.as_tensor(rng.normal(0.5, 1.0, size=(300, 64)))
    same, apart = kid(a, b), kid(a, shifted)
    assert abs(same) < 0.01 * apart  # two draws of one distribution: about 0
    # One set against itself: the estimator leaves out k(x, x) within a set but not across,
    # which puts it a little below 0 (order 1/n), still far from a real difference.
    assert -0.1 * apart < kid(a, a.clone()) < 0
    assert apart > 0.5
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


@pytest.fixture(scope="module")
def features():
    from fakeface.evaluation.kid import KIDFeatures

    return KIDFeatures()  # the ImageNet EfficientNet-Lite0 of the pip package: no download


def test_kid_on_efficientnet_features_tells_faces_from_colour_fields(
    faces: np.ndarray, features
) -> None:
    from fakeface.evaluation.kid import kid

    face_features = features(faces)
    assert face_features.shape == (4, 1280) and face_features.dtype == torch.float64
    fields = features(varied(8))
    apart = kid(face_features, fields)
    assert -0.1 * apart < kid(face_features, face_features.clone()) <= 0  # 4 images: -2/n bias
    assert kid(fields[:4], features(varied(4, seed=9))) < 0.5 * apart


def test_report_with_a_kid_reference_holds_kid(tmp_path: Path, faces: np.ndarray, features) -> None:
    report = gan_report(varied(6), faces, kid_reference=faces, features=features)
    assert report["kid"] > 0 and report["n_kid_reference"] == 4
    assert "not comparable" in report["kid_features"]
    _, md_path = write_report(report, tmp_path)
    assert "| KID to 4 real photos (EfficientNet-Lite0 features) |" in md_path.read_text()
