"""The embedded synthetic dataset: layout, format, determinism, caching and argument checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fakeface.data.synthetic import MANIFEST, generate_synthetic
from fakeface.errors import ConfigError, DatasetError
from fakeface.preprocess import load_image, resize_rgb

TINY = {"n_train": 4, "n_valid": 2, "n_test": 3}


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.jpg"))}


def _checker(pixels: np.ndarray) -> float:
    """Period-2 trace: how much odd and even columns/rows differ in their second differences."""
    x = pixels.astype(np.float64).mean(2)
    dx = x[:, 1:-1] - (x[:, :-2] + x[:, 2:]) / 2
    dy = x[1:-1] - (x[:-2] + x[2:]) / 2
    return abs(dx[:, ::2].mean() - dx[:, 1::2].mean()) + abs(dy[::2].mean() - dy[1::2].mean())


def test_layout_counts_and_format(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path / "ds", **TINY)
    assert root == tmp_path / "ds"
    counts = {
        f"{s}/{c}": len(list((root / s / c).glob("*.jpg")))
        for s in ("train", "valid", "test")
        for c in ("fake", "real")
    }
    # The odd test split gives its extra image to "fake".
    expected = {
        "train/fake": 2,
        "train/real": 2,
        "valid/fake": 1,
        "valid/real": 1,
        "test/fake": 2,
        "test/real": 1,
    }
    assert counts == expected
    assert "train/real/00001.jpg" in _files(root)
    for path in _files(root).values():
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (256, 256))
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["counts"] == {"train": 4, "valid": 2, "test": 3}
    assert manifest["image_size"] == 256 and manifest["seed"] == 0


def test_byte_identical_regeneration(tmp_path: Path) -> None:
    a = _files(generate_synthetic(tmp_path / "a", **TINY))
    b = _files(generate_synthetic(tmp_path / "b", **TINY))
    assert a.keys() == b.keys()
    assert all(a[k].read_bytes() == b[k].read_bytes() for k in a)
    images = {p.read_bytes() for p in a.values()}
    assert len(images) == len(a)  # every image is a different face
    c = _files(generate_synthetic(tmp_path / "c", seed=1, **TINY))
    assert a["train/real/00000.jpg"].read_bytes() != c["train/real/00000.jpg"].read_bytes()


def test_second_call_does_not_rewrite(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, **TINY)
    paths = [*_files(root).values(), root / MANIFEST]
    before = [p.stat().st_mtime_ns for p in paths]
    assert generate_synthetic(tmp_path, **TINY) == root
    assert [p.stat().st_mtime_ns for p in paths] == before


def test_changed_params_regenerate_and_keep_foreign_files(tmp_path: Path) -> None:
    generate_synthetic(tmp_path, **TINY)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    generate_synthetic(tmp_path, n_train=6, n_valid=2, n_test=2, image_size=70)
    files = _files(tmp_path)
    assert len(files) == 10 and "test/fake/00001.jpg" not in files  # old files are gone
    with Image.open(files["train/fake/00002.jpg"]) as im:
        assert im.size == (70, 70)  # a side that is not a multiple of 4 works too
    assert json.loads((tmp_path / MANIFEST).read_text())["counts"]["train"] == 6
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "other").is_dir()


def test_interrupted_run_is_redone(tmp_path: Path) -> None:
    generate_synthetic(tmp_path, **TINY)
    (tmp_path / MANIFEST).unlink()  # as if the run died before its last step ...
    (tmp_path / ".synthetic-incomplete").touch()  # ... which leaves the in-progress marker
    (tmp_path / "train" / "real" / "00000.jpg").write_bytes(b"truncated")
    generate_synthetic(tmp_path, **TINY)
    with Image.open(tmp_path / "train" / "real" / "00000.jpg") as im:
        assert im.size == (256, 256)
    assert (tmp_path / MANIFEST).exists() and not (tmp_path / ".synthetic-incomplete").exists()


def test_refuses_to_delete_foreign_dataset(tmp_path: Path) -> None:
    photo = tmp_path / "train" / "real" / "photo.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"someone's data")
    with pytest.raises(DatasetError, match="did not write"):
        generate_synthetic(tmp_path, **TINY)
    assert photo.read_bytes() == b"someone's data"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": 1},
        {"n_valid": 0},
        {"n_test": -2},
        {"n_train": 3.0},
        {"image_size": 32},
        {"quality": 0},
        {"seed": -1},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs)).replace("_", ".")):
        generate_synthetic(tmp_path / "ds", **{**TINY, **kwargs})
    assert not (tmp_path / "ds").exists()  # checked before anything is written


def test_fake_fingerprint_survives_downscale(tmp_path: Path) -> None:
    """The period-2 trace is still there after the pipeline's 256 -> 128 resize."""
    files = _files(generate_synthetic(tmp_path, n_train=12, n_valid=2, n_test=2))
    trace: dict[str, list[float]] = {"fake": [], "real": []}
    for key, path in files.items():
        if key.startswith("train/"):
            trace[key.split("/")[1]].append(_checker(resize_rgb(load_image(path), 128)))
    assert np.mean(trace["fake"]) > 5 * np.mean(trace["real"])


@pytest.mark.slow
def test_command_line(tmp_path: Path) -> None:
    """A Hydra app like every command: data=synthetic's settings, overridable on the line."""
    command = [
        sys.executable, "-m", "fakeface.data.synthetic", "data.synthetic.n_train=2",
        "data.synthetic.n_valid=2", "data.synthetic.n_test=2",
    ]  # fmt: skip
    run = run_cli(command, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(_files(tmp_path / "data" / "synthetic-64px")) == 6  # 64-px images by default
    assert "synthetic dataset ready in data/synthetic-64px" in run.stdout
    bad = run_cli([*command, "data.synthetic.image_size=10"], cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr == "fakeface: error: image_size must be an integer >= 64, got 10\n"
