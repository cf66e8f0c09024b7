"""ONNX and int8 export: parity with the checkpoint and TorchScript, metadata, bad files, the extra."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_face_folder, run_cli
from fakeface.deploy.export import Ensemble, Probabilities, export_classifier, load_checkpoint
from fakeface.deploy.formats import FILES, MAX_AUC_DROP, auc_check, export_formats, roc_auc
from fakeface.deploy.inference import CLEAN, score_files
from fakeface.deploy.modelfile import ClassifierInfo, load_classifier, model_dtype
from fakeface.deploy.onnxfile import OnnxClassifier
from fakeface.errors import ConfigError, ModelFileError
from fakeface.preprocess import find_images, preprocess_file

pytest.importorskip("onnxruntime")

SIZE = 64
TEMPERATURE = 1.7  # not 1, so a file that dropped it would give other probabilities


def _classifier(seed: int = 0):
    """An untrained CNNClassifier whose BatchNorm statistics are not the identity."""
    from fakeface.models.classifier import CNNClassifier

    torch.manual_seed(seed)
    module = CNNClassifier(image_size=SIZE)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 2.0)
    module.eval()
    with torch.no_grad():  # untrained logits barely move with the image: spread them out...
        head = module.net.head[-1]
        head.weight.mul_(200)
        # ... around p = 0.5 on images like make_face_folder's (pixels in 60..190 / 255)
        x = 0.25 + 0.5 * torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        head.bias.sub_(module(x).mean(0))
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint, its three exported files (ts, onnx, int8) and 24 synthetic face images."""
    root = tmp_path_factory.mktemp("onnx")
    images = make_face_folder(root / "faces", per_class=4, size=SIZE)
    module = _classifier()
    ckpt = root / "cnn.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    written = export_formats(
        load_checkpoint(ckpt),
        root / "out",
        ["ts", "onnx", "int8"],
        calib=images / "valid",
        source=ckpt,
        temperature=TEMPERATURE,
    )
    return {"ckpt": ckpt, "images": images, **written}


def _scores(path: Path, images: list[Path]) -> np.ndarray:
    """Probabilities through predict's path: load_classifier -> score_files, fp32."""
    model, info = load_classifier(path)
    return score_files(model, info, images, batch_size=5, dtype=None).probs[CLEAN]


def test_checkpoint_torchscript_and_onnx_give_the_same_probabilities(files) -> None:
    images = find_images(files["images"])
    module = load_checkpoint(files["ckpt"]).eval()
    pixels = torch.stack([preprocess_file(p, SIZE) for p in images])
    with torch.no_grad():
        expected = torch.softmax(module(pixels) / TEMPERATURE, 1).numpy()
    ts, onnx = _scores(files["ts"], images), _scores(files["onnx"], images)
    assert expected.shape == (24, 2) and expected[:, 0].std() > 1e-3  # outputs vary
    np.testing.assert_allclose(ts, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx, expected, atol=1e-4, rtol=0)
    assert isinstance(load_classifier(files["onnx"])[0], OnnxClassifier)  # ORT, not torch


def test_onnx_takes_any_batch_size_and_ignores_autocast(files) -> None:
    model, _ = load_classifier(files["onnx"])
    reference, _ = load_classifier(files["ts"])
    for batch in (1, 7):
        x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            got = model(x.contiguous(memory_format=torch.channels_last))
        with torch.no_grad():
            expected = reference(x)
        assert got.dtype == torch.float32 and got.shape == (batch, 2)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # what evaluate's report names as the precision: ONNX runs its own graph
    assert model_dtype(model, torch.bfloat16) is None
    assert model_dtype(reference, torch.bfloat16) is torch.bfloat16


def test_metadata_round_trips(files) -> None:
    _, ts = load_classifier(files["ts"])
    _, onnx = load_classifier(files["onnx"])
    _, int8 = load_classifier(files["int8"])
    assert onnx == ts  # every field: size, classes, preprocessing, temperature, versions, source
    assert (onnx.image_size, onnx.class_names, onnx.temperature) == (SIZE, ("fake", "real"), 1.7)
    assert (onnx.scaling, onnx.input) == ("1/255", "RGB float32 NCHW [0,1]")
    assert onnx.source == str(files["ckpt"]) and onnx.quantization == {}
    # the int8 file: the same contract plus how it was quantized and how far it moved
    assert int8.image_size == SIZE and int8.temperature == TEMPERATURE
    assert int8.quantization["calibration"]["images"] == 8  # valid/: 4 fake + 4 real
    assert 0 <= int8.quantization["p_fake_max_abs_diff"] < 1
    assert ClassifierInfo(**{**int8.__dict__, "quantization": {}}) == ts
    # valid/ holds fake/ and real/: ROC-AUC fp32 vs int8 measured on them at export time
    auc = int8.quantization["roc_auc"]
    assert auc["drop"] == pytest.approx(auc["fp32"] - auc["int8"], abs=2e-4)
    assert int8.quantization["within_rule"] == (auc["drop"] <= MAX_AUC_DROP)


def test_roc_auc_and_the_int8_rule() -> None:
    y = np.array([True, True, False, False, True])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), y) == 1.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5, 0.5]), y) == 0.5  # ties count one half
    assert roc_auc(np.array([0.9, 0.1, 0.2, 0.3, 0.8]), y) == pytest.approx(4 / 6)
    labels = ["fake", "fake", "real", "real", "fake"]
    p32 = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    kept = auc_check(p32, p32 + 0.01, labels, "fake")
    assert kept == {"roc_auc": {"fp32": 1.0, "int8": 1.0, "drop": 0.0}, "within_rule": True}
    lost = auc_check(p32, np.array([0.9, 0.1, 0.2, 0.3, 0.8]), labels, "fake")
    assert lost["within_rule"] is False and lost["roc_auc"]["drop"] == 0.3333
    assert auc_check(p32, p32, ["fake"] * 5, "fake") == {}  # one class: no AUC to check


def test_ensemble_members_round_trip_in_onnx(tmp_path) -> None:
    nets = [_classifier(seed).net for seed in (1, 2)]
    members = [Probabilities(net, t) for net, t in zip(nets, (1.0, 2.0), strict=True)]
    calibration = {"members": [{"temperature": 1.0}, {"temperature": 2.0}]}
    path = export_classifier(
        Ensemble(members).eval(), tmp_path / "ensemble.onnx", SIZE,
        arch="ensemble of 2 (seed_cnn)", calibration=calibration,
    )  # fmt: skip
    model, info = load_classifier(path)
    assert info.calibration == calibration and info.arch == "ensemble of 2 (seed_cnn)"
    x = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        mean = torch.stack([m.eval()(x) for m in members]).mean(0)
        torch.testing.assert_close(model(x), mean, atol=1e-4, rtol=0)


def test_int8_file_loads_and_stays_close_to_fp32(files) -> None:
    images = find_images(files["images"])
    fp32, int8 = _scores(files["onnx"], images), _scores(files["int8"], images)
    moved = np.abs(int8[:, 0] - fp32[:, 0])
    # Measured on this untrained net (p_fake spread 0.48..0.57): max 0.025, mean 0.010
    # (torch 2.14, onnxruntime 1.32, EPYC-BF16). The bounds are 2x that: int8 moves the
    # probabilities (so 0 < max) but a broken calibration or graph would move them far more.
    assert 0 < moved.max() < 0.05 and moved.mean() < 0.02
    assert np.corrcoef(int8[:, 0], fp32[:, 0])[0, 1] > 0.7  # measured 0.84: the order mostly holds
    np.testing.assert_allclose(int8.sum(1), 1, atol=1e-5)


def test_truncated_and_foreign_onnx_files_give_one_line_errors(files, tmp_path) -> None:
    truncated = tmp_path / "truncated.onnx"
    data = files["onnx"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("these are notes, not a model\n")
    for path, message in (
        (truncated, "is not a readable ONNX file"),
        (text, "is not a readable TorchScript or ONNX file"),
    ):
        with pytest.raises(ModelFileError, match=message) as err:
            load_classifier(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_onnx_without_fakeface_metadata_is_refused(tmp_path) -> None:
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        torch.nn.Conv2d(3, 2, 3).eval(), (torch.rand(1, 3, 8, 8),), str(path), dynamo=True,
        input_names=["image"], output_names=["probabilities"], verbose=False,
    )  # fmt: skip
    with pytest.raises(ModelFileError, match="not a fakeface classifier") as err:
        load_classifier(path)
    assert str(path) in str(err.value)


def test_missing_onnxruntime_names_the_extra(files, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ModelFileError, match=r'pip install -e "\.\[onnx\]"') as err:
        load_classifier(files["onnx"])
    assert "\n" not in str(err.value)
    load_classifier(files["ts"])  # TorchScript needs no extra


def test_int8_needs_calibration_images(tmp_path) -> None:
    with pytest.raises(ConfigError, match="format=int8 needs calibration images"):
        export_formats(_classifier(), tmp_path, "int8")
    with pytest.raises(ConfigError, match="unknown"):
        export_formats(_classifier(), tmp_path, ["onnx", "fp16"])
    assert sorted(FILES) == ["int8", "onnx", "ts"]


def test_int8_alone_into_a_new_folder(files, tmp_path) -> None:
    out = tmp_path / "new" / "folder"
    written = export_formats(_classifier(), out, "int8", calib=files["images"] / "valid")
    assert list(written) == ["int8"] and sorted(p.name for p in out.iterdir()) == [FILES["int8"]]


@pytest.mark.slow
def test_predict_cli_gives_the_same_csv_for_ts_and_onnx(files, tmp_path) -> None:
    tables = {}
    for name in ("ts", "onnx"):
        run = run_cli(
            [sys.executable, "-m", "fakeface.predict", f"classifier={files[name]}",
             f"input={files['images']}", "precision=fp32", f"out={tmp_path / name}"],
            cwd=tmp_path, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        tables[name] = pd.read_csv(tmp_path / name / "predictions.csv", keep_default_na=False)
    ts, onnx = tables["ts"], tables["onnx"]
    assert len(ts) == 24 and list(ts["path"]) == list(onnx["path"])
    assert list(ts["label"]) == list(onnx["label"])
    np.testing.assert_allclose(onnx[["p_fake", "p_real"]], ts[["p_fake", "p_real"]], atol=1e-4)


def test_realtime_gives_the_same_faces_with_ts_and_onnx(files, tmp_path) -> None:
    import cv2
    from skimage import data

    from fakeface.faces.detect import FaceDetector
    from fakeface.realtime.source import FrameSource
    from fakeface.realtime.stream import run

    photo = cv2.resize(np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (320, 320))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(6):
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[100:420, 20 * i : 20 * i + 320] = photo
        writer.write(frame)
    writer.release()
    logs = {}
    for name in ("ts", "onnx"):
        model, info = load_classifier(files[name])
        logs[name] = tmp_path / f"{name}.jsonl"
        run(model, info, FrameSource(clip), FaceDetector(), log=logs[name], dtype=None)
    ts, onnx = ([json.loads(line) for line in logs[n].read_text().splitlines()] for n in logs)
    faces = [
        (a, b)
        for x, y in zip(ts, onnx, strict=True)
        for a, b in zip(x["faces"], y["faces"], strict=True)
    ]
    assert len(ts) == 6 and len(faces) == sum(len(x["faces"]) for x in ts) >= 5
    for a, b in faces:
        assert a["box"] == b["box"] and a["label"] == b["label"]
        assert a["p_fake"] == pytest.approx(b["p_fake"], abs=1e-4)


@pytest.mark.slow
def test_training_exports_every_format_it_is_asked_for(tmp_path) -> None:
    from conftest import compose
    from fakeface.train import train

    faces = make_face_folder(tmp_path / "faces", per_class=4, size=32)
    cfg = compose("train", [
        "experiment=cnn", "debug=tiny", f"data.root={faces}", "data.image_size=32",
        f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "logger=null",
        "callbacks.progress_bar=null", "test=false", "export_format=[ts,onnx,int8]",
    ])  # fmt: skip
    metrics = train(cfg)

    paths = {name: Path(path) for name, path in metrics["exported_files"].items()}
    assert paths == {name: tmp_path / "run" / FILES[name] for name in ("ts", "onnx", "int8")}
    assert metrics["exported"] == str(paths["ts"])
    images = find_images(str(faces / "test"))
    np.testing.assert_allclose(
        _scores(paths["ts"], images), _scores(paths["onnx"], images), atol=1e-4
    )
    assert load_classifier(paths["int8"])[1].quantization  # calibrated on the valid folder


def test_a_wrong_export_format_stops_before_training(tmp_path) -> None:
    from conftest import compose
    from fakeface.train import check_config

    for value, says in (("pt", "export_format=pt: unknown"), ("[]", "export_format=\\[\\]")):
        cfg = compose("train", ["experiment=cnn", f"export_format={value}"])
        with pytest.raises(ConfigError, match=says):
            check_config(cfg)
