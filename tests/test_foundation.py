"""Package foundation: SeedCNN, preprocessing, FaceDataModule, configs and the training run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONF_DIR, compose, make_face_folder, run_cli
from fakeface.data.datamodule import FaceDataModule
from fakeface.data.index import build_index
from fakeface.errors import ConfigError, DatasetError
from fakeface.models.nets import SeedCNN
from fakeface.preprocess import preprocess_file
from fakeface.train import train


def test_seed_cnn_matches_the_keras_parameter_count() -> None:
    net = SeedCNN()
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    running = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert trainable == 1_666_114
    assert trainable + running == 1_666_882  # Keras counts BN running mean/var as parameters
    assert net.eval()(torch.rand(2, 3, 128, 128)).shape == (2, 2)


def test_preprocess_is_rgb_128_scaled(tmp_path: Path) -> None:
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[..., 0] = 255  # pure red: must land in channel 0 (RGB, not BGR)
    Image.fromarray(pixels).save(tmp_path / "red.png")
    x = preprocess_file(tmp_path / "red.png")
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(128, 128)) and x[1:].abs().max() == 0


def test_datamodule_reads_each_split_with_imagefolder_labels(face_folder: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), batch_size=4, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    assert set(y.tolist()) <= {0, 1}
    assert dm.class_names == ["fake", "real"]
    for loader, split in ((dm.val_dataloader(), "valid"), (dm.test_dataloader(), "test")):
        paths = loader.dataset.paths
        assert len(paths) == 12 and all(f"/{split}/" in p for p in paths)
        labels = loader.dataset.labels.tolist()
        assert labels == [0 if "/fake/" in p else 1 for p in paths]


def test_class_filter_keeps_one_class_with_its_label(face_folder: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), classes=["real"], train_split="valid")
    dm.setup("fit")
    assert set(dm.train_set.labels.tolist()) == {1}
    assert all("/valid/real/" in p for p in dm.train_set.paths)


def test_index_dataframe(face_folder: Path) -> None:
    frame = build_index(face_folder)
    assert list(frame.columns[:3]) == ["image_path", "label", "class_name"]
    counts = frame.groupby(["split", "class_name"]).size()
    assert counts.tolist() == [6] * 6


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_root", "data=synthetic"),
        ("no_split", "split folder"),
        ("empty_class", "has no images"),
        ("three_classes", "exactly two"),
    ],
)
def test_data_errors_say_what_to_do(face_folder: Path, breakage: str, message: str) -> None:
    root = face_folder
    if breakage == "no_root":
        root = face_folder / "nowhere"
    elif breakage == "no_split":
        for f in (face_folder / "valid").rglob("*.jpg"):
            f.unlink()
        for d in sorted((face_folder / "valid").iterdir()):
            d.rmdir()
        (face_folder / "valid").rmdir()
    elif breakage == "empty_class":
        for f in (face_folder / "train" / "real").glob("*.jpg"):
            f.unlink()
    elif breakage == "three_classes":
        extra = face_folder / "train" / "other"
        extra.mkdir()
        Image.new("RGB", (8, 8)).save(extra / "x.jpg")
    dm = FaceDataModule(root=str(root), num_workers=0)
    with pytest.raises(DatasetError, match=message):
        dm.setup("fit")


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
)
def test_every_experiment_composes(name: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"experiment={name}", f"paths.root_dir={tmp_path}"])
    assert cfg.model._target_.startswith("fakeface.")
    assert cfg.data.batch_size > 0 and cfg.trainer.max_epochs > 0


def tiny_run_cfg(root: Path, out: Path, *extra: str):
    return compose(
        "train",
        [
            "experiment=cnn",
            "debug=tiny",
            f"data.root={root}",
            f"paths.root_dir={out.parent}",
            f"paths.output_dir={out}",
            "callbacks.progress_bar=null",
            *extra,
        ],
    )


@pytest.mark.slow
def test_a_run_writes_everything(trained_run: tuple[Path, dict]) -> None:
    out, metrics = trained_run
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "curves.png").stat().st_size > 1000
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved["train_images_per_s"] > 0
    assert [row["epoch"] for row in saved["history"]] == [0, 1]
    assert Path(saved["best_checkpoint"]).is_file()
    assert saved["test"] == metrics["test"]


@pytest.mark.slow
def test_training_learns_the_fixture(trained_run: tuple[Path, dict]) -> None:
    """The checkerboard on the fakes is learnable: 24 unseen test images, well above chance (0.5).
    Seeds 0, 1 and 2 reach 0.96, 0.96 and 1.00; an untrained or broken step stays near 0.5."""
    _, metrics = trained_run
    assert metrics["test"]["test/acc"] >= 0.8
    assert metrics["test"]["test/auroc"] >= 0.9


@pytest.mark.slow
def test_resume_from_last_checkpoint_continues_epochs(
    trained_run: tuple[Path, dict], tmp_path: Path
) -> None:
    first, _ = trained_run  # 2 epochs done; resuming to 3 runs only the third
    last = first / "checkpoints" / "last.ckpt"
    extra = ("data.image_size=32", "export=false", "test=false", "trainer.max_epochs=3")
    metrics = train(tiny_run_cfg(first.parent / "faces", tmp_path / "second", *extra,
                                 f"ckpt_path={last}"))  # fmt: skip
    assert metrics["epochs"] == 3
    assert [row["epoch"] for row in metrics["history"]] == [2]  # only the resumed epoch ran


@pytest.mark.slow
def test_two_job_multirun_makes_two_run_directories(face_folder: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fakeface.train",
        "-m",
        "experiment=cnn",
        "debug=tiny",
        f"data.root={face_folder}",
        "model.lr=0.1,0.01",
        "export=false",
        "test=false",
        "callbacks.progress_bar=null",
        "logger=null",
    ]
    # As the docs show it: from the project folder, no paths.* overrides (the sweep folder must
    # resolve before Hydra is set up); logger=null switches TensorBoard off.
    result = run_cli(command, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted((tmp_path / "outputs" / "cnn" / "multiruns").glob("*/*/metrics.json"))
    assert len(runs) == 2
    assert not list(tmp_path.rglob("tensorboard"))
    # Before training, each run says what it will do, then how long it will take (train.log).
    log = (runs[0].parent / "train.log").read_text()
    assert "fit: 2 training batches per epoch x 1 epochs" in log
    assert "training images/s over 1 batches" in log and "the fit ends in about" in log
    lrs = sorted(json.loads(p.read_text())["history"][0]["lr"] for p in runs)
    assert lrs == [0.01, 0.1]


def test_folder_layout_split_is_stratified_and_reproducible(tmp_path: Path) -> None:
    make_face_folder(tmp_path / "src", per_class=20, splits=("all",))
    root = tmp_path / "src" / "all"
    dm = FaceDataModule(root=str(root), layout="folder", split_fractions=(0.5, 0.25, 0.25))
    frame = dm.folder_split()
    counts = frame.groupby(["split", "class_name"]).size().to_dict()
    assert counts == {
        (s, c): n for s, n in (("train", 10), ("valid", 5), ("test", 5)) for c in ("fake", "real")
    }
    again = FaceDataModule(root=str(root), layout="folder", split_fractions=(0.5, 0.25, 0.25))
    assert again.folder_split().equals(frame)
    other = FaceDataModule(
        root=str(root), layout="folder", split_seed=1, split_fractions=(0.5, 0.25, 0.25)
    )
    assert not other.folder_split()["image_path"].equals(frame["image_path"])
    frame.to_csv(tmp_path / "split.csv", index=False)
    reused = FaceDataModule(root=str(root), layout="folder", split_file=str(tmp_path / "split.csv"))
    assert reused.index("test")["image_path"].tolist() == dm.index("test")["image_path"].tolist()
    assert set(dm.index("valid")["split"]) == {"valid"}


def test_several_roots_and_a_val_root_index_and_split_as_documented(tmp_path: Path) -> None:
    a, b, c = (make_face_folder(tmp_path / n, per_class=20, splits=("",)) for n in "abc")
    fractions = (0.5, 0.25, 0.25)
    both = FaceDataModule(root=[str(a), str(b)], layout="folder", split_fractions=fractions)
    frame = both.folder_split()
    # Each folder is split on its own, stratified, exactly as it would be alone.
    for folder in (a, b):
        alone = FaceDataModule(root=str(folder), layout="folder", split_fractions=fractions)
        rows = frame[frame["source"] == str(folder.resolve())].reset_index(drop=True)
        assert rows[["image_path", "split"]].equals(alone.folder_split()[["image_path", "split"]])
    assert len(both.index("train")) == 40 and len(both.index("all")) == 80

    # val_root: validation comes from c alone (val_root_fraction of it), never trained on;
    # training and test stay a's.
    held = FaceDataModule(root=str(a), val_root=str(c), layout="folder", split_fractions=fractions)
    split = held.folder_split()
    c_rows = split[split["source"] == str(c.resolve())]
    assert set(c_rows["split"]) == {"valid", "test"} and (c_rows["split"] == "valid").sum() == 20
    assert set(held.index("valid")["image_path"]) == set(
        c_rows.loc[c_rows["split"] == "valid", "image_path"]
    )
    assert set(held.index("valid").groupby("class_name").size()) == {10}
    for name in ("train", "test"):
        assert all(p.startswith(str(a)) for p in held.index(name)["image_path"])

    # The run's split.csv serves each folder again: only that folder's rows.
    split.to_csv(tmp_path / "split.csv", index=False)
    reused = FaceDataModule(root=str(c), layout="folder", split_file=str(tmp_path / "split.csv"))
    assert set(reused.index("test")["image_path"]) == set(
        c_rows.loc[c_rows["split"] == "test", "image_path"]
    )
    with pytest.raises(DatasetError, match="lists no image of"):
        FaceDataModule(root=str(b), layout="folder", split_file=str(tmp_path / "split.csv")).index(
            "test"
        )
    with pytest.raises(ConfigError, match="data.val_root_fraction=1"):
        FaceDataModule(root=str(a), val_root=str(c), layout="folder", val_root_fraction=1)
    with pytest.raises(ConfigError, match="data.val_root needs data=folder"):
        FaceDataModule(root=str(a), val_root=str(c))


def test_roots_with_other_classes_are_refused(tmp_path: Path) -> None:
    a = make_face_folder(tmp_path / "a", per_class=4, splits=("",))
    b = make_face_folder(tmp_path / "b", per_class=4, splits=("",))
    (b / "fake").rename(b / "gan")
    with pytest.raises(DatasetError, match="every data.root needs the same ones"):
        FaceDataModule(root=[str(a), str(b)], layout="folder").folder_split()


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials(tmp_path: Path) -> None:
    """The documented Optuna sweep, shrunk: two trials of a tiny run, from the project folder."""
    command = [
        sys.executable, "-m", "fakeface.train", "-m", "experiment=cnn", "data=synthetic",
        "hparams_search=cnn_optuna", "debug=tiny", "hydra.sweeper.n_trials=2",
        "data.synthetic.n_train=8", "data.synthetic.n_valid=4", "data.synthetic.n_test=4",
        "export=false", "logger=null", "callbacks.progress_bar=null",
    ]  # fmt: skip
    result = run_cli(command, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "outputs" / "cnn" / "multiruns").iterdir()
    assert len(list(sweep.glob("*/metrics.json"))) == 2
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params:" in best and "model.lr:" in best and "best_value:" in best
