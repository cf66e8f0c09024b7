"""data.augment: none | flip | robust | strong on the training split, seeded per worker; clear errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader

from conftest import compose, run_cli
from fakeface.cli import one_line
from fakeface.data.augment import AUGMENTS
from fakeface.data.cache import CachedDataset, DecodedSplit, DeviceBatches
from fakeface.data.datamodule import FaceDataModule, FaceDataset
from fakeface.errors import ConfigError
from fakeface.preprocess import preprocess_file

SIZE = 32  # the training size in these tests; the source image is larger and not square


@pytest.fixture
def photo_frame(tmp_path: Path) -> pd.DataFrame:
    """One textured 96x80 JPEG, listed 8 times (so every item is the same source image)."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(40, 215, (12, 10, 3)), np.ones((8, 8, 1)))  # 96 x 80 blocks
    path = tmp_path / "face.jpg"
    Image.fromarray(smooth.astype(np.uint8)).save(path, quality=95)
    return pd.DataFrame({"image_path": [str(path)] * 8, "label": [1] * 8})


def _draws(dataset: FaceDataset, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [dataset[i][0] for i in range(len(dataset))]


def _is_plain(x: torch.Tensor, plain: torch.Tensor) -> bool:
    return torch.equal(x, plain) or torch.equal(x, plain.flip(-1))


@pytest.mark.parametrize("augment", list(AUGMENTS))
def test_each_mode_gives_the_training_tensor(augment: str, photo_frame: pd.DataFrame) -> None:
    plain = preprocess_file(photo_frame["image_path"][0], SIZE)
    dataset = FaceDataset(photo_frame, SIZE, augment)
    draws = _draws(dataset, seed=0)
    for x in draws:
        assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert all(torch.equal(a, b) for a, b in zip(draws, _draws(dataset, seed=0), strict=True))
    mirrored = sum(torch.equal(x, plain.flip(-1)) for x in draws)
    changed = sum(not _is_plain(x, plain) for x in draws)  # more than a flip
    if augment == "none":
        assert all(torch.equal(x, plain) for x in draws)  # the one preprocessing path, as is
    elif augment == "flip":
        assert changed == 0 and 0 < mirrored < len(draws)
    elif augment == "robust":
        assert 0 < changed < len(draws)  # each of blur and JPEG has p=0.5: some stay plain
    else:  # strong, source: the colour jitter changes every draw
        assert changed == len(draws)
    if augment != "none":  # another torch seed, other draws
        assert any(not torch.equal(a, b) for a, b in zip(draws, _draws(dataset, 1), strict=True))


def test_robust_and_strong_work_on_the_full_resolution_image(photo_frame: pd.DataFrame) -> None:
    # A blur of sigma ~1-3 full-resolution pixels survives the 3x downscale as a mild softening:
    # the augmented tensors have less high-frequency energy on average than the plain one.
    plain = preprocess_file(photo_frame["image_path"][0], SIZE)

    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    for augment in ("robust", "strong", "source", "resample"):
        draws = _draws(FaceDataset(pd.concat([photo_frame] * 4), SIZE, augment), seed=0)
        assert np.mean([roughness(x) for x in draws]) < roughness(plain)


def test_workers_draw_different_augmentations(photo_frame: pd.DataFrame) -> None:
    # Each worker's torch generator is seeded differently; a fixed-seed rng would repeat.
    dataset = FaceDataset(photo_frame, SIZE, "robust")
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=1, num_workers=2)  # worker 0: items 0, 2, 4, 6
    draws = [x[0] for x, _ in loader]
    assert any(not torch.equal(a, b) for a, b in zip(draws[0::2], draws[1::2], strict=True))
    assert len({x.numpy().tobytes() for x in draws}) > 2


def test_only_the_training_split_is_augmented(face_folder: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), image_size=SIZE, num_workers=0, augment="strong")
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_set.augment == "strong"
    assert dm.val_set.augment == "none" and dm.test_set.augment == "none"
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (12, 3, SIZE, SIZE)


@pytest.mark.parametrize("augment", ["robust", "source"])
@pytest.mark.parametrize("setting", ["cache", "device_resident"])
def test_full_resolution_augments_read_the_training_split_from_files(
    augment: str, setting: str, face_folder: Path, tmp_path: Path
) -> None:
    # The cache holds resized pixels: the training split of an augment that needs the
    # full-resolution image comes from the files; validation and test keep the cache.
    cfg = compose(
        "train",
        [f"data.augment={augment}", f"data.{setting}=true", f"data.root={face_folder}",
         f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", f"paths.root_dir={tmp_path}"],
    )  # fmt: skip
    dm = instantiate(cfg.data, _convert_="all", image_size=SIZE)
    dm.setup("fit")
    assert isinstance(dm.train_set, FaceDataset) and dm.train_set.augment == augment
    assert isinstance(dm.val_set, DecodedSplit if setting == "device_resident" else CachedDataset)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (len(x), 3, SIZE, SIZE) and x.dtype == torch.float32
    # flip (and none) are what the cache itself can do: the training split stays cached then.
    flipped = instantiate(cfg.data, _convert_="all", image_size=SIZE, augment="flip")
    flipped.setup("fit")
    assert not isinstance(flipped.train_set, FaceDataset)


def test_cache_datasets_flip_or_refuse(face_folder: Path, tmp_path: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), num_workers=0, cache_dir=str(tmp_path / "c"))
    decoded = dm.decoded("valid")
    with pytest.raises(ValueError, match="does only none or flip"):
        CachedDataset(decoded, "robust")
    with pytest.raises(ValueError, match="does only none or flip"):
        DeviceBatches(decoded, 4, "cpu", shuffle=True, augment="strong")
    torch.manual_seed(0)
    flipped = CachedDataset(decoded, "flip")
    plain = CachedDataset(decoded, "none")
    mirrored = [torch.equal(flipped[i][0], plain[i][0].flip(-1)) for i in range(len(plain))]
    assert 0 < sum(mirrored) < len(plain)


def test_unknown_augment_is_a_clear_error(face_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.augment='sharpen': use one of none, flip, robust"):
        FaceDataModule(root=str(face_folder), augment="sharpen")
    with pytest.raises(
        ConfigError,
        match=r"'flip\+sharpen'.*flip, crop, jitter, light, background, camera, resample, blur",
    ):
        FaceDataModule(root=str(face_folder), augment="flip+sharpen")
    with pytest.raises(ConfigError, match="data.augment=True"):
        FaceDataModule(root=str(face_folder), augment=True)  # the old boolean hflip habit


def test_folder_without_root_says_pass_data_root(tmp_path: Path) -> None:
    cfg = compose("train", ["data=folder", f"paths.root_dir={tmp_path}"])
    assert cfg.data.root is None  # folder.yaml's root replaces faces.yaml's default
    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg.data, _convert_="all")
    assert "data.root=/path/to/folder" in one_line(caught.value)
    # A split file names every image: then no root is needed.
    split = tmp_path / "split.csv"
    FaceDataModule(root=None, layout="folder", split_file=str(split))


@pytest.mark.slow
def test_folder_without_root_cli_prints_one_line(tmp_path: Path) -> None:
    run = run_cli(
        [sys.executable, "-m", "fakeface.train", "data=folder", f"paths.root_dir={tmp_path}"],
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("fakeface: error:")]
    assert len(errors) == 1 and errors[0].startswith("fakeface: error: data.root is not set")
    assert "data.root=/path/to/folder" in errors[0]


def test_train_crop_cuts_patches_without_resizing(photo_frame: pd.DataFrame) -> None:
    plain = preprocess_file(photo_frame["image_path"][0], SIZE)
    draws = _draws(FaceDataset(photo_frame, SIZE, "none", crop=20), seed=0)
    windows = {
        (top, left): plain[:, top : top + 20, left : left + 20]
        for top in range(SIZE - 20 + 1)
        for left in range(SIZE - 20 + 1)
    }
    # every patch is a window of the plain tensor (same pixel scale), at varying places
    where = [next(k for k, w in windows.items() if torch.equal(x, w)) for x in draws]
    assert len(set(where)) > 1


def test_train_crop_applies_to_training_only_and_checks_its_size(face_folder: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), image_size=SIZE, num_workers=0, train_crop=24)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (24, 24)
    assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (SIZE, SIZE)
    with pytest.raises(ConfigError, match=r"data.train_crop=32: use a patch side between 1 and"):
        FaceDataModule(root=str(face_folder), image_size=SIZE, train_crop=SIZE)
    with pytest.raises(ConfigError, match="data.train_crop cannot run with data.cache=true"):
        FaceDataModule(root=str(face_folder), image_size=SIZE, train_crop=24, cache=True)


@pytest.mark.slow
def test_experiment_detector_trains_on_data_synthetic(tmp_path: Path) -> None:
    # data=synthetic keeps its pixels decoded in memory; augment=source needs the JPEGs: the
    # training split is read from the files, validation and test stay resident.
    from fakeface.train import train

    root, out = tmp_path / "synthetic", tmp_path / "run"
    cfg = compose(
        "train",
        ["experiment=detector", "data=synthetic", "debug=tiny", f"data.root={root}",
         "data.synthetic.n_train=8", "data.synthetic.n_valid=4", "data.synthetic.n_test=4",
         f"paths.root_dir={tmp_path}", f"paths.output_dir={out}", "callbacks.progress_bar=null",
         "trainer.precision=32-true", "logger=null"],
    )  # fmt: skip
    assert cfg.data.device_resident and cfg.data.augment == "wild"
    metrics = train(cfg)
    assert metrics["epochs"] == 1 and set(metrics["test"]) >= {"test/acc", "test/auroc"}
    assert [math.isfinite(row["train/loss"]) for row in metrics["history"]] == [True]
    assert (out / "classifier.ts").is_file()


def test_capture_chain_keeps_size_varies_and_is_seeded() -> None:
    import random

    from fakeface.evaluation.perturb import bilinear_demosaic, capture_chain

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    draws = [np.asarray(capture_chain(image, random.Random(seed))) for seed in range(40)]
    assert all(d.shape == (48, 40, 3) and d.dtype == np.uint8 for d in draws)
    assert sum(not np.array_equal(d, np.asarray(image)) for d in draws) > 20
    assert len({d.tobytes() for d in draws}) > 20  # each draw its own chain
    again = np.asarray(capture_chain(image, random.Random(7)))
    assert np.array_equal(again, draws[7])
    # black borders: some draws have a whole black edge row or column, the source has none
    edges = [np.concatenate([d[0], d[-1], d[:, 0], d[:, -1]]) for d in draws]
    assert any((e.reshape(-1, 3) == 0).all(1).mean() > 0.2 for e in edges)
    # demosaicing a flat colour gives it back; on a checkerboard it mixes neighbours
    flat = np.full((6, 8, 3), (0.2, 0.5, 0.9), dtype=np.float32)
    np.testing.assert_allclose(bilinear_demosaic(flat), flat, atol=1e-6)
    board = (np.indices((6, 8)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, 2)
    assert np.abs(bilinear_demosaic(board) - board).max() > 0.2
