"""Batch prediction: any Pillow mode, unreadable files listed, batching, face crops, TTA, CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import run_cli
from fakeface.deploy.export import export_classifier
from fakeface.deploy.modelfile import classify, load_classifier
from fakeface.errors import ConfigError
from fakeface.models.nets import SeedCNN
from fakeface.predict import predict_table
from fakeface.preprocess import find_images, preprocess_file

SIZE = 64


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = SeedCNN(image_size=SIZE).eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.running_var.uniform_(0.05, 0.2)  # sharper outputs than the identity statistics
    return export_classifier(net, tmp_path_factory.mktemp("model") / "c.ts", SIZE)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with RGB, grayscale, RGBA, CMYK and 16-bit images, a corrupt JPEG and a note."""
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    astronaut = Image.fromarray(data.astronaut()).resize((256, 256))
    astronaut.save(folder / "rgb.jpg", quality=95)
    astronaut.convert("L").save(folder / "gray.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    astronaut.convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "nested").mkdir()
    Image.fromarray((np.arange(64 * 80).reshape(64, 80) * 13).astype(np.uint16)).save(
        folder / "nested" / "deep16.png"
    )
    Image.new("RGB", (90, 60), (120, 140, 160)).save(folder / "nested" / "no_face.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_with_every_mode_and_a_corrupt_file(model_file: Path, images: Path) -> None:
    model, info = load_classifier(model_file)
    paths = find_images(images)
    assert [p.name for p in paths] == [
        "cmyk.jpg", "corrupt.jpg", "gray.png", "deep16.png", "no_face.png", "rgb.jpg", "rgba.png"
    ]  # fmt: skip
    table = predict_table(model, info, paths, batch_size=3)
    assert list(table.columns) == ["path", "p_fake", "p_real", "label", "verdict", "error"]
    bad = table[table["error"] != ""]
    assert (
        list(bad["path"]) == [str(images / "corrupt.jpg")] and "corrupt.jpg" in bad["error"].iloc[0]
    )
    assert bad["p_fake"].isna().all() and (bad["label"] == "").all()
    good = table[table["error"] == ""]
    assert len(good) == 6
    np.testing.assert_allclose(good["p_fake"] + good["p_real"], 1.0, atol=1e-6)
    assert set(good["label"]) <= {"fake", "real"}
    assert ((good["p_fake"] >= 0.5) == (good["label"] == "fake")).all()
    # The same numbers as the one preprocessing path on each file, one at a time.
    for _, row in good.iterrows():
        expected = classify(model, preprocess_file(row["path"], SIZE)[None])[0]
        np.testing.assert_allclose([row["p_fake"], row["p_real"]], expected.numpy(), atol=1e-6)


def test_batch_size_does_not_change_results(model_file: Path, images: Path) -> None:
    model, info = load_classifier(model_file)
    paths = find_images(images)
    one = predict_table(model, info, paths, batch_size=1)
    many = predict_table(model, info, paths, batch_size=64)
    pd.testing.assert_frame_equal(one, many, atol=1e-6, rtol=0)


def test_detect_crops_the_face_and_does_not_score_an_image_without_one(
    model_file: Path, images: Path
) -> None:
    model, info = load_classifier(model_file)
    paths = [images / "rgb.jpg", images / "nested" / "no_face.png", images / "corrupt.jpg"]
    table = predict_table(model, info, paths, detector={}, num_workers=1)  # cv2 in a worker
    assert list(table["face"]) == [True, False, None]
    whole = predict_table(model, info, paths[:2])
    assert table["p_fake"][0] != pytest.approx(whole["p_fake"][0], abs=1e-7)  # a crop, not all
    # no face: reported as such, not scored as if the whole image were a face
    assert np.isnan(table["p_fake"][1]) and table["verdict"][1] == "no face"
    assert table["error"][1] == "" and table["label"][1] == ""


def test_tta_averages_with_the_mirror(model_file: Path, images: Path) -> None:
    model, info = load_classifier(model_file)
    path = images / "rgb.jpg"
    x = preprocess_file(path, SIZE)[None]
    expected = (classify(model, x) + classify(model, x.flip(-1))) / 2
    table = predict_table(model, info, [path], tta=True)
    np.testing.assert_allclose(table[["p_fake", "p_real"]].to_numpy()[0], expected[0], atol=1e-6)


def test_find_images_glob_and_errors(images: Path, tmp_path: Path) -> None:
    assert [p.name for p in find_images(images / "**" / "*.png")] == [
        "gray.png", "deep16.png", "no_face.png", "rgba.png"
    ]  # fmt: skip
    assert find_images(images / "rgb.jpg") == [images / "rgb.jpg"]
    with pytest.raises(ConfigError, match="no such file"):
        find_images(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no image files"):
        find_images(tmp_path)


@pytest.mark.slow
def test_cli_writes_csv_and_summary(model_file: Path, images: Path, tmp_path: Path) -> None:
    run = run_cli(
        [sys.executable, "-m", "fakeface.predict", f"classifier={model_file}", f"input={images}",
         "batch_size=4", "detect=true", "detector=default", "data.num_workers=0"],
        cwd=tmp_path, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # predictions.csv goes into the run directory, like every command's files
    (out,) = tmp_path.glob("outputs/predict/runs/*/predictions.csv")
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "p_fake", "p_real", "label", "verdict", "face", "error"]
    assert len(table) == 7 and (table["error"] != "").sum() == 1
    assert "unreadable" in run.stdout and "corrupt.jpg" in run.stdout
    # no_face.png, deep16.png: reported, not scored
    assert (table["verdict"] == "no face").sum() == 2 and run.stdout.count("no face found") == 2
    assert "this model file does not say what it was trained on" in run.stdout
    assert (out.parent / ".hydra" / "config.yaml").is_file()
