"""Batch prediction: any Pillow mode, unreadable files listed, batching, face crops, TTA, CLI."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_cli
from fakeface import Detector
from fakeface.batch import COLUMNS, RowWriter, predict_table, read_rows, scored_files
from fakeface.deploy.modelfile import classify, load_classifier
from fakeface.errors import ConfigError
from fakeface.preprocess import find_images, preprocess_file

SIZE = 64


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


def whole(model_file: Path, **kwargs: object) -> Detector:
    """Whole images, fp32: the numbers `classify` gives on each file."""
    return Detector(model_file, precision="fp32", faces=None, **kwargs)


def test_folder_with_every_mode_and_a_corrupt_file(model_file: Path, images: Path) -> None:
    model, _ = load_classifier(model_file)
    paths = find_images(images)
    assert [p.name for p in paths] == [
        "cmyk.jpg", "corrupt.jpg", "gray.png", "deep16.png", "no_face.png", "rgb.jpg", "rgba.png"
    ]  # fmt: skip
    table = predict_table(whole(model_file), paths, batch_size=3)
    assert list(table.columns) == list(COLUMNS)
    bad = table[table["error"] != ""]
    assert (
        list(bad["path"]) == [str(images / "corrupt.jpg")] and "corrupt.jpg" in bad["error"].iloc[0]
    )
    assert bad["p_fake"].isna().all() and (bad["label"] == "").all()
    good = table[table["error"] == ""]
    assert len(good) == 6 and good["faces"].isna().all()  # no face search
    np.testing.assert_allclose(good["p_fake"] + good["p_real"], 1.0, atol=1e-6)
    assert set(good["label"]) <= {"fake", "real"}
    assert ((good["p_fake"] >= 0.5) == (good["label"] == "fake")).all()
    sizes = {p.name: Image.open(p).size for p in paths if p.name != "corrupt.jpg"}
    for _, row in good.iterrows():
        # the box is the whole image; the same numbers as the one preprocessing path
        assert (row["x"], row["y"], (row["w"], row["h"])) == (0, 0, sizes[Path(row["path"]).name])
        expected = classify(model, preprocess_file(row["path"], SIZE)[None])[0]
        np.testing.assert_allclose([row["p_fake"], row["p_real"]], expected.numpy(), atol=1e-6)
        assert row["file_bytes"] == Path(row["path"]).stat().st_size


def test_batch_size_does_not_change_results(model_file: Path, images: Path) -> None:
    paths = find_images(images)
    one = predict_table(whole(model_file), paths, batch_size=1)
    many = predict_table(whole(model_file), paths, batch_size=64)
    pd.testing.assert_frame_equal(one, many, atol=1e-6, rtol=0)


def test_detect_scores_every_face_and_not_an_image_without_one(
    model_file: Path, images: Path, tmp_path: Path
) -> None:
    two = Image.new("RGB", (512, 256))
    rgb = Image.open(images / "rgb.jpg")
    two.paste(rgb, (0, 0))
    two.paste(rgb.resize((240, 240)), (266, 8))
    two.save(tmp_path / "two.png")
    det = Detector(model_file, precision="fp32", faces="haar")
    paths = [images / "rgb.jpg", images / "nested" / "no_face.png", images / "corrupt.jpg"]
    table = predict_table(det, [*paths, tmp_path / "two.png"], num_workers=1)  # cv2 in a worker
    assert table["path"].tolist() == [str(p) for p in paths] + [str(tmp_path / "two.png")] * 2
    assert table["faces"].tolist()[1:] == [0, pd.NA, 2, 2] and table["face"].tolist()[3:] == [0, 1]
    assert table["w"][3] > table["w"][4]  # largest first
    plain = predict_table(whole(model_file), paths[:2])
    assert table["p_fake"][0] != pytest.approx(plain["p_fake"][0], abs=1e-7)  # a crop, not all
    # no face: reported as such, not scored as if the whole image were a face
    assert np.isnan(table["p_fake"][1]) and table["verdict"][1] == "no face"
    assert table["error"][1] == "" and table["label"][1] == ""


def test_tta_averages_with_the_mirror(model_file: Path, images: Path) -> None:
    model, _ = load_classifier(model_file)
    path = images / "rgb.jpg"
    x = preprocess_file(path, SIZE)[None]
    expected = (classify(model, x) + classify(model, x.flip(-1))) / 2
    table = predict_table(whole(model_file, tta=True), [path])
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
    assert list(table.columns) == list(COLUMNS)
    assert table["path"].nunique() == 7 and (table["error"] != "").sum() == 1
    assert "unreadable" in run.stdout and "corrupt.jpg" in run.stdout
    # no_face.png, deep16.png: reported, not scored
    assert (table["verdict"] == "no face").sum() == 2 and run.stdout.count("no face found") == 2
    assert "this model file does not say what it was trained on" in run.stdout
    assert (out.parent / ".hydra" / "config.yaml").is_file()


def face_photos(folder: Path, count: int) -> Path:
    """`count` different 160 px photos of one face (shifted crops of the astronaut)."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()
    for i in range(count):
        dx, dy = 8 * (i % 10), 8 * (i // 10 % 10)
        Image.fromarray(photo[dy : dy + 400, dx + 60 : dx + 460]).resize((160, 160)).save(
            folder / f"{i:03d}.jpg", quality=90
        )
    return folder


def predict_command(model_file: Path, photos: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fakeface.predict", f"classifier={model_file}", f"input={photos}",
        f"out={out}", "detect=true", "detector=default", "batch_size=1", "data.num_workers=0",
        "precision=fp32", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output_scoring_each_file_once(
    model_file: Path, tmp_path: Path
) -> None:
    photos = face_photos(tmp_path / "photos", 150)
    whole_run = run_cli(predict_command(model_file, photos, tmp_path / "whole"), cwd=tmp_path)
    assert whole_run.returncode == 0, whole_run.stderr
    part = tmp_path / "part" / "predictions.csv"

    def kill_midway(pid: int) -> None:
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.read_text().count("\n") > 10):
            assert time.monotonic() < deadline, "predict wrote nothing"
            time.sleep(0.005)
        os.killpg(pid, signal.SIGKILL)

    killed = run_cli(predict_command(model_file, photos, part.parent), cwd=tmp_path,
                     started=kill_midway)  # fmt: skip
    assert killed.returncode != 0
    written = pd.read_csv(part, keep_default_na=False, on_bad_lines="skip")["path"].nunique()
    assert 5 < written < 150, written  # really stopped halfway
    refused = run_cli(predict_command(model_file, photos, part.parent), cwd=tmp_path)
    assert refused.returncode == 1 and "resume=true" in refused.stderr  # nothing overwritten
    resumed = run_cli(
        predict_command(model_file, photos, part.parent, "resume=true"), cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(re.search(r"resume: (\d+) of 150 files already scored", resumed.stdout)[1])
    assert written - 1 <= skipped <= written  # a half-written last image is scored again
    one, two = (
        pd.read_csv(f, keep_default_na=False).sort_values(["path", "face"], ignore_index=True)
        for f in (tmp_path / "whole" / "predictions.csv", part)
    )
    assert len(one) >= 150 and not two.duplicated(["path", "face"]).any()
    pd.testing.assert_frame_equal(one, two, atol=1e-6, rtol=0)


def test_resume_repairs_a_torn_tail(tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    row = {name: None for name in COLUMNS}
    writer = RowWriter(out, "csv")
    for i, faces in enumerate((1, 2)):
        rows = [row | {"path": f"{i}.jpg", "faces": faces, "face": k, "p_fake": 0.5,
                       "file_bytes": 10 + i, "file_mtime_ns": 7} for k in range(faces)]  # fmt: skip
        writer.write(rows)
    writer.close()
    text = out.read_text()
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + "2.jpg,1,0,3")  # torn
    assert scored_files(out, "csv") == {("0.jpg", 10, 7)}  # 1.jpg lost a face, 2.jpg a line
    assert out.read_text().count("\n") == 2 and "1.jpg" not in out.read_text()
    assert scored_files(out, "csv") == {("0.jpg", 10, 7)}  # repaired: stable


@pytest.mark.slow
def test_jsonl_parquet_and_a_list_file(model_file: Path, tmp_path: Path) -> None:
    face_photos(tmp_path / "photos", 5)
    (tmp_path / "list.txt").write_text("photos/000.jpg\nphotos/003.jpg\n# a comment\nmissing.jpg\n")
    tables = {}
    for fmt, extra in (("jsonl", []), ("parquet", ["shard_rows=2"])):
        run = run_cli(predict_command(model_file, tmp_path / "list.txt", tmp_path / fmt,
                                      f"format={fmt}", *extra), cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr
        tables[fmt] = read_rows(tmp_path / fmt / f"predictions.{fmt}", fmt)
    assert len(list((tmp_path / "parquet" / "predictions.parquet").glob("part-*"))) == 2
    for table in tables.values():
        assert [Path(p).name for p in table["path"]] == ["000.jpg", "003.jpg", "missing.jpg"]
        assert "missing.jpg" in table["error"].iloc[2] and table["faces"].iloc[0] == 1
    np.testing.assert_allclose(tables["jsonl"]["p_fake"][:2], tables["parquet"]["p_fake"][:2])
