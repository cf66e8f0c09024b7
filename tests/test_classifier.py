"""CNNClassifier internals: BatchNorm recalibration (precise BN) before validation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import Precision

from conftest import quiet_trainer
from fakeface.deploy.modelfile import load_classifier
from fakeface.errors import ConfigError
from fakeface.models.classifier import CNNClassifier
from fakeface.models.precise_bn import precise_bn_batches, recalibrate_batchnorm


def test_recalibration_sets_population_statistics_with_dropout_off() -> None:
    torch.manual_seed(0)
    model = CNNClassifier(channels_last=False, image_size=64).eval()
    batches = [(torch.rand(8, 3, 64, 64), torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    trainer = SimpleNamespace(precision_plugin=Precision(), train_dataloader=batches, world_size=1)
    first_bn = model.net.features[2]
    first_bn.running_mean.fill_(123.0)  # stale statistics, far from the truth
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    recalibrate_batchnorm(model, trainer, batches=3)  # the 4th batch must not be used

    with torch.no_grad():
        conv = model.net.features[0]
        activations = torch.cat([conv(x).relu() for x, _ in batches[:3]])
    expected = activations.mean(dim=(0, 2, 3))
    torch.testing.assert_close(first_bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    # equal batch sizes: the cumulative average of per-batch (unbiased) variances
    per_batch = torch.stack([a.var(dim=(0, 2, 3)) for a in activations.split(8)])
    torch.testing.assert_close(first_bn.running_var, per_batch.mean(0), rtol=1e-3, atol=1e-5)
    assert first_bn.momentum == 0.1 and not first_bn.training
    assert not any(m.training for m in dropouts)


def test_recalibration_in_steps_equals_recalibration_over_small_batches() -> None:
    """With model.step_batch_size, precise BN splits the loader's batches as training does:
    3 steps of 8 from batches of 16 give the statistics of the first three batches of 8."""
    torch.manual_seed(0)
    images = [torch.rand(16, 3, 64, 64) for _ in range(2)]
    labels = torch.zeros(16, dtype=torch.long)
    small = [(x, labels[:8]) for pair in images for x in pair.split(8)]
    results = []
    for loader, step in (([(x, labels) for x in images], 8), (small, None)):
        torch.manual_seed(1)  # the same weights
        model = CNNClassifier(channels_last=False, image_size=64).eval()
        trainer = SimpleNamespace(
            precision_plugin=Precision(), train_dataloader=loader, world_size=1
        )
        recalibrate_batchnorm(model, trainer, batches=3, step_size=step)
        results.append(model.net.features[2])
    torch.testing.assert_close(results[0].running_mean, results[1].running_mean)
    torch.testing.assert_close(results[0].running_var, results[1].running_var)
    assert int(results[0].num_batches_tracked) == int(results[1].num_batches_tracked) == 3


def test_recalibration_zero_batches_leaves_statistics_alone() -> None:
    model = CNNClassifier(channels_last=False).eval()
    bn = model.net.features[2]
    bn.running_mean.fill_(7.0)
    trainer = SimpleNamespace(precision_plugin=Precision(), train_dataloader=[], world_size=1)
    recalibrate_batchnorm(model, trainer, batches=0)
    assert torch.all(bn.running_mean == 7.0)


@pytest.mark.parametrize("arch", ["seed_cnn", "resnet18", "efficientnet_b0", "npr"])
@pytest.mark.parametrize("size", [128, 256])
def test_each_architecture_builds_and_runs_at_128_and_256(arch: str, size: int) -> None:
    model = CNNClassifier(arch=arch, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_seed_cnn_names_its_smallest_image_size() -> None:
    with pytest.raises(ValueError, match=r"image_size=25 is too small for SeedCNN \(needs >= 26\)"):
        CNNClassifier(image_size=25)
    with torch.no_grad():
        assert CNNClassifier(image_size=26).eval()(torch.rand(1, 3, 26, 26)).shape == (1, 2)


def test_unknown_architecture_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"unknown model.arch='resnet9000'.*resnet18"):
        CNNClassifier(arch="resnet9000")


def test_export_round_trip_carries_architecture_and_image_size(tmp_path: Path) -> None:
    from fakeface.deploy.export import export_classifier
    from fakeface.deploy.modelfile import classify, load_classifier

    model = CNNClassifier(arch="resnet18", image_size=256).eval()
    path = export_classifier(model, tmp_path / "detector.ts", source="test")
    loaded, info = load_classifier(path)
    assert (info.arch, info.image_size) == ("resnet18", 256)
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        expected = model(x).softmax(1)
    torch.testing.assert_close(classify(loaded, x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_experiment_detector_trains_and_exports_its_final_weights(tmp_path: Path) -> None:
    from conftest import compose, make_face_folder
    from fakeface.deploy.modelfile import classify
    from fakeface.train import train

    faces = make_face_folder(tmp_path / "faces")
    out = tmp_path / "run"
    cfg = compose(
        "train",
        [
            "experiment=detector",
            "debug=tiny",
            "trainer.max_epochs=2",
            "data.image_size=64",
            f"data.root={faces}",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={out}",
            "callbacks.progress_bar=null",
            # the capture chain and the weights' average ride along (one training, not three)
            "data.augment=capture",
            "callbacks.ema={_target_:fakeface.models.callbacks.EMAWeights,decay:0.5}",
        ],
    )
    assert cfg.model.scheduler == "onecycle"
    metrics = train(cfg)
    # one-cycle ends at lr ~0: the final epoch (last.ckpt) is tested and exported, not the best
    assert Path(metrics["best_checkpoint"]).name == "last.ckpt"
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert (out / "classifier.ts").is_file() and "test" in metrics
    # The exported file carries the temperature fitted on the validation split, and uses it.
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    _, info = load_classifier(out / "classifier.ts")
    assert info.temperature == pytest.approx(calibration["temperature"]) and info.temperature > 0
    assert info.calibration["images"] == 12 and info.calibration["split"] == "valid"
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    # callbacks.ema: the checkpoint's state_dict is the average, and the exported file scores
    # with it (Lightning's own callback would put the live weights back before the test).
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    average, live = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(average[k], live[k]) for k in average if "weight" in k)
    loaded, _ = load_classifier(out / "classifier.ts")
    x = torch.rand(4, 3, 64, 64)

    def scores(state: dict) -> torch.Tensor:
        model = CNNClassifier(**ckpt["hyper_parameters"]).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            return (model(x) / info.temperature).softmax(1)

    exported = classify(loaded, x)
    torch.testing.assert_close(exported, scores(average), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(exported, scores(live), atol=1e-5)


def test_precise_bn_share_counts_batches_of_the_epoch() -> None:
    assert precise_bn_batches(None, 0.02, 3125) == 63  # the 140k train split at batch 32
    assert precise_bn_batches(None, 0.02, 100) == 16  # never fewer than 16 batches
    assert precise_bn_batches(None, 0.02, 13) == 13  # or the whole epoch, if shorter
    assert precise_bn_batches(None, 0.25, 101) == 26  # rounded up
    assert precise_bn_batches(None, 1, 101) == 101  # 1 is the whole epoch, int or float
    assert precise_bn_batches(None, 0, 101) == 0  # off
    assert precise_bn_batches(50, 0.02, 13) == 50 and precise_bn_batches(0, 0.02, 13) == 0


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"precise_bn_batches": -1}, "model.precise_bn_batches=-1"),
        ({"precise_bn_batches": 1.0}, "model.precise_bn_batches=1.0"),
        ({"precise_bn_batches": True}, "model.precise_bn_batches=True"),
        ({"precise_bn_share": 1.5}, "model.precise_bn_share=1.5"),
        ({"precise_bn_share": -0.1}, "model.precise_bn_share=-0.1"),
        ({"precise_bn_share": "all"}, "model.precise_bn_share='all'"),
        ({"precise_bn_share": True}, "model.precise_bn_share=True"),
    ],
)
def test_bad_precise_bn_settings_are_one_line_errors(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        CNNClassifier(**settings)
    assert str(err.value).startswith(key + ": give ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("old", "batches", "share"), [(10, 10, 0.0), (0, 0, 0.0), (0.02, None, 0.02), (1.0, None, 1.0)]
)
def test_checkpoints_with_the_former_bn_recalibration_key_still_load(
    old: int | float, batches: int | None, share: float, tmp_path: Path
) -> None:
    model = CNNClassifier(image_size=32)
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    del hparams["precise_bn_share"], hparams["precise_bn_batches"]
    hparams["bn_recalibration_batches"] = old  # as written before the two keys
    torch.save(checkpoint, path)
    loaded = CNNClassifier.load_from_checkpoint(path, map_location="cpu")
    assert loaded.hparams.precise_bn_batches == batches
    assert loaded.hparams.precise_bn_share == share
    assert "bn_recalibration_batches" not in loaded.hparams  # saved again: the new keys only
    assert precise_bn_batches(batches, share, 100) == {10: 10, 0: 0, 0.02: 16, 1.0: 100}[old]


@pytest.mark.slow
def test_precise_bn_share_reestimates_over_that_share_in_a_fit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fakeface.models.classifier as classifier

    used: list[int] = []
    monkeypatch.setattr(
        classifier, "recalibrate_batchnorm", lambda m, t, batches, step: used.append(batches)
    )
    data = torch.utils.data.TensorDataset(torch.rand(64, 3, 32, 32), torch.arange(64) % 2)
    loader = torch.utils.data.DataLoader(data, batch_size=2)  # 32 batches per epoch
    trainer = quiet_trainer(
        max_epochs=2, num_sanity_val_steps=0, limit_val_batches=1, default_root_dir=tmp_path
    )
    trainer.fit(CNNClassifier(image_size=32, precise_bn_share=0.75), loader, loader)
    assert used == [24, 24]  # three quarters of 32 batches, before each epoch's validation


def test_ema_checkpoint_loaded_to_test_keeps_the_average() -> None:
    from lightning.pytorch.trainer.states import TrainerFn

    from fakeface.models.callbacks import EMAWeights

    module = torch.nn.Linear(2, 1)
    average = {k: v.clone() for k, v in module.state_dict().items()}
    live = {k: v + 1 for k, v in average.items()}
    checkpoint = {
        "state_dict": average,
        "current_model_state": live,
        "averaging_state": {"n_averaged": torch.tensor(3)},
    }
    callback = EMAWeights(decay=0.9)
    callback._average_model = torch.optim.swa_utils.AveragedModel(torch.nn.Linear(2, 1))
    testing = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.TESTING))
    callback.on_load_checkpoint(testing, module, checkpoint)  # the test after a fit
    assert torch.equal(module.weight, average["weight"])
    fitting = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    callback.on_load_checkpoint(fitting, module, checkpoint)  # a resumed fit: the live weights
    assert torch.equal(module.weight, live["weight"])
