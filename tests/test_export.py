"""Export to TorchScript: parity with the module (fp32 and bf16 autocast), metadata, loader errors."""

from __future__ import annotations

import json
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from fakeface.deploy.export import export_checkpoint, export_classifier, export_ensemble
from fakeface.deploy.modelfile import (
    FORMAT,
    META_FILE,
    ModelFileError,
    classify,
    fast_dtype,
    load_classifier,
    precision_dtype,
    quiet_torchscript,
)
from fakeface.errors import ConfigError
from fakeface.models.nets import SeedCNN
from fakeface.precision import bf16_supported

SIZE = 64  # small images keep the tests fast; SeedCNN works from 22 px up


def seed_cnn() -> SeedCNN:
    """An untrained SeedCNN whose BatchNorm statistics are not the identity (outputs vary)."""
    torch.manual_seed(0)
    net = SeedCNN(image_size=SIZE)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SeedCNN, str]:
    net = seed_cnn()
    path = tmp_path_factory.mktemp("export") / "classifier.ts"
    export_classifier(net, path, SIZE, source="untrained.ckpt", arch="seed_cnn")
    return net, str(path)


def test_fp32_parity_any_batch_size(exported: tuple[SeedCNN, str]) -> None:
    net, path = exported
    model, _ = load_classifier(path)
    for batch in (1, 5):
        x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = net(x).softmax(1)
        got = classify(model, x, dtype=None)
        assert got.shape == (batch, 2) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.sum(1), torch.ones(batch))


def test_bf16_autocast_applies_to_the_loaded_file(exported: tuple[SeedCNN, str]) -> None:
    # Autocast reaches TorchScript ops through the dispatcher: the result moves (bf16 ran)
    # but stays within the tolerance measured for this net (max |diff| ~ 3e-3 on [0, 1] probs).
    net, path = exported
    model, _ = load_classifier(path)
    x = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).softmax(1)
    got = classify(model, x, dtype=torch.bfloat16)
    diff = (got - expected).abs().max().item()
    assert got.dtype == torch.float32  # the wrapper's softmax runs in fp32
    assert 0 < diff < 2e-2


def test_metadata_travels_in_the_file(exported: tuple[SeedCNN, str]) -> None:
    _, path = exported
    _, info = load_classifier(path)
    assert info.format == FORMAT and info.format_version == 1
    assert info.class_names == ("fake", "real")
    assert info.image_size == SIZE
    assert info.scaling == "1/255" and info.input == "RGB float32 NCHW [0,1]"
    assert info.torch_version == torch.__version__ and info.fakeface_version
    assert info.source == "untrained.ckpt" and info.arch == "seed_cnn"
    with zipfile.ZipFile(path) as archive:  # readable without fakeface, as plain JSON
        name = next(n for n in archive.namelist() if n.endswith(f"extra/{META_FILE}"))
        assert json.loads(archive.read(name))["image_size"] == SIZE


def test_export_lightning_module_uses_its_hparams_and_leaves_it_alone(tmp_path) -> None:
    from fakeface.models.classifier import CNNClassifier

    module = CNNClassifier(image_size=SIZE).train()
    path = export_classifier(module, tmp_path / "sub" / "c.ts", source="run/best.ckpt")
    model, info = load_classifier(path)
    assert (info.image_size, info.arch) == (SIZE, "seed_cnn")
    assert module.training  # the caller's module was copied, not switched to eval
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = module.eval()(x).softmax(1)
    torch.testing.assert_close(classify(model, x), expected, atol=1e-5, rtol=0)


def test_export_checkpoint_without_hydra(tmp_path) -> None:
    import lightning

    from fakeface.models.classifier import CNNClassifier

    module = CNNClassifier(image_size=SIZE)
    ckpt = tmp_path / "cnn.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    path = export_checkpoint(ckpt, tmp_path / "classifier.ts")
    _, info = load_classifier(path)
    assert info.source == str(ckpt.resolve()) and info.image_size == SIZE
    with pytest.raises(ModelFileError, match="not found"):
        export_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"foo": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ModelFileError, match="not a CNNClassifier checkpoint"):
        export_checkpoint(tmp_path / "other.ckpt")


def test_no_torchscript_deprecation_warning_reaches_users(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the test
        path = export_classifier(seed_cnn(), tmp_path / "c.ts", SIZE)
        load_classifier(path)
    # ... and the silencer is narrow: other FutureWarnings still show.
    with pytest.warns(FutureWarning, match="unrelated"), quiet_torchscript():
        warnings.warn("unrelated", FutureWarning, stacklevel=1)


def _foreign(path, extra: dict[str, str] | None = None) -> None:
    with quiet_torchscript():
        traced = torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.rand(1, 4))
        torch.jit.save(traced, str(path), _extra_files=extra or {})


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "not found"),
        ("corrupt", "not a readable TorchScript or ONNX file"),
        ("truncated", "not a readable TorchScript file"),
        ("foreign", "not a fakeface classifier"),
        ("other-json", "not a fakeface classifier"),
        ("bad-json", "not valid JSON"),
        ("future", "format version 99"),
    ],
)
def test_loader_errors_are_one_clear_line(tmp_path, exported, case: str, message: str) -> None:
    path = tmp_path / f"{case}.ts"
    if case == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
    elif case == "truncated":
        path.write_bytes(Path(exported[1]).read_bytes()[:5000])
    elif case == "foreign":
        _foreign(path)
    elif case == "other-json":
        _foreign(path, {META_FILE: json.dumps({"format": "something-else"})})
    elif case == "bad-json":
        _foreign(path, {META_FILE: "{not json"})
    elif case == "future":
        _foreign(path, {META_FILE: json.dumps({"format": FORMAT, "format_version": 99})})
    with pytest.raises(ModelFileError, match=message) as err:
        load_classifier(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_fast_dtype_and_precision_option() -> None:
    assert fast_dtype("cpu") == (torch.bfloat16 if bf16_supported("cpu") else None)
    assert fast_dtype("cuda") is None  # fp32: measured faster for the exported CNN on a GPU
    assert precision_dtype("auto") == fast_dtype("cpu")
    assert precision_dtype("fp32") is None and precision_dtype("bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="precision='fp16'"):
        precision_dtype("fp16")


@pytest.mark.slow  # a command line
def test_cli_errors_without_traceback(tmp_path) -> None:
    run = run_cli(
        [sys.executable, "-m", "fakeface.export", f"ckpt={tmp_path / 'nope.ckpt'}"],
        cwd=tmp_path,
    )
    assert run.returncode == 1 and run.stderr.startswith("fakeface: error: checkpoint")
    assert "nope.ckpt not found" in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.rglob("*.ts"))  # nothing exported


def test_the_temperature_round_trips_and_scales_the_logits(tmp_path) -> None:
    net = seed_cnn()
    fitted = {"split": "valid", "images": 40, "ece_before": 0.2, "ece_after": 0.05}
    path = export_classifier(net, tmp_path / "t.ts", SIZE, temperature=2.5, calibration=fitted)
    model, info = load_classifier(path)
    assert info.temperature == 2.5 and info.calibration == fitted
    x = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(net(x) / 2.5, dim=1)
        assert torch.allclose(model(x), expected, atol=1e-5)
    # An old file without the key reads as uncalibrated.
    assert load_classifier(export_classifier(net, tmp_path / "u.ts", SIZE))[1].temperature == 1.0
    with pytest.raises(ConfigError, match="temperature=0"):
        export_classifier(net, tmp_path / "bad.ts", SIZE, temperature=0)


def test_an_ensemble_file_returns_the_mean_of_its_members(tmp_path) -> None:
    nets = [seed_cnn(), SeedCNN(image_size=SIZE).eval()]
    members = [
        export_classifier(net, tmp_path / f"m{i}.ts", SIZE, arch="seed_cnn", temperature=t)
        for i, (net, t) in enumerate(zip(nets, (1.0, 2.0), strict=True))
    ]
    path = export_ensemble(members, tmp_path / "ensemble.ts")
    model, info = load_classifier(path)
    assert info.arch == "ensemble of 2 (seed_cnn)" and info.temperature == 1.0
    assert [m["temperature"] for m in info.calibration["members"]] == [1.0, 2.0]
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = (torch.softmax(nets[0](x), 1) + torch.softmax(nets[1](x) / 2, 1)) / 2
        assert torch.allclose(model(x), expected, atol=1e-5)
    other = export_classifier(seed_cnn(), tmp_path / "other.ts", SIZE, class_names=("a", "b"))
    with pytest.raises(ConfigError, match="same input size and classes"):
        export_ensemble([members[0], other], tmp_path / "bad.ts")
    with pytest.raises(ConfigError, match="at least two"):
        export_ensemble(members[:1], tmp_path / "bad.ts")
