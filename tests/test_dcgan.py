"""DCGAN: networks, one manual-optimization step, the experiment run, divergence guard, generate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose, make_face_folder, quiet_trainer, run_cli
from fakeface.errors import ConfigError, DivergenceError, ModelFileError
from fakeface.generate import generate, load_dcgan
from fakeface.models.dcgan import DCGAN
from fakeface.models.nets import DCGANDiscriminator, Discriminator, Generator
from fakeface.precision import resolve_precision
from fakeface.train import train

SCALARS = ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake")


def dcgan_cfg(root: Path, out: Path, *extra: str, experiment: str = "dcgan"):
    """The real experiment config, shrunk by debug=tiny (2 batches, 1 epoch) and batch 2."""
    return compose(
        "train",
        [
            f"experiment={experiment}",
            "debug=tiny",
            f"data.root={root}",
            f"paths.root_dir={out.parent}",
            f"paths.output_dir={out}",
            "callbacks.progress_bar=null",
            "data.batch_size=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny `experiment=dcgan` run (default precision: bf16-mixed here), shared by tests.

    test=true: a GAN has no test loop, so asking for one must not run (or crash) one.
    """
    base = tmp_path_factory.mktemp("dcgan")
    faces = make_face_folder(base / "faces", per_class=4, size=128, splits=("valid",))
    out = base / "run"
    train(dcgan_cfg(faces, out, "trainer.log_every_n_steps=1", "test=true"))
    return out


def tiny_trainer(root: Path, precision: str, batches: int) -> L.Trainer:
    return quiet_trainer(
        precision=precision, max_epochs=1, limit_train_batches=batches, default_root_dir=root
    )


STEP_SIZE = 32  # the step tests' GAN side: the same layers as 128 px, two x2 stages fewer


def random_faces(n: int = 4) -> DataLoader:
    side = STEP_SIZE
    images = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(images, torch.ones(n, dtype=torch.long)), batch_size=2)


def test_generator_makes_128px_images_in_unit_range() -> None:
    images = Generator(latent_dim=128)(torch.randn(3, 128))
    assert images.shape == (3, 3, 128, 128)
    assert images.min() >= 0 and images.max() <= 1


def test_untrained_generator_draws_a_different_image_for_each_z() -> None:
    # With PyTorch's (or Keras') default initialisation every z gave the same grey (pixel std
    # across z about 1.5e-4); the He initialisation keeps the signal through the stack, and the
    # deliberately small last layer turns it into faint (~0.015) but z-dependent images.
    torch.manual_seed(0)
    with torch.no_grad():
        images = Generator()(torch.randn(16, 128))
    assert images.std(dim=0).mean() > 0.005  # per-pixel spread across the 16 noise vectors
    assert 0.4 < images.mean() < 0.6  # centred in the sigmoid, not saturated


def test_discriminator_output_varies_across_inputs() -> None:
    # The original ended in a one-unit softmax: constant 1 for every input, so D never learned.
    torch.manual_seed(0)
    d = Discriminator(image_size=128).eval()
    x = torch.rand(6, 3, 128, 128)
    x[3:] *= 0.2  # three dark images
    logits = d(x)
    assert logits.shape == (6,)
    assert logits.std() > 1e-3
    assert torch.sigmoid(logits).std() > 1e-4
    single = torch.stack([d(image[None])[0] for image in x])  # no batch coupling in eval mode
    assert torch.allclose(single, logits, atol=1e-5)
    assert len(set(single.tolist())) == 6


def test_the_128px_generator_is_the_original_layer_for_layer() -> None:
    g = Generator()
    assert sum(p.numel() for p in g.parameters()) == 1_520_643  # the original's layers
    convs = [m for m in g.upsample if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [64, 128, 64, 64]
    assert list(g.state_dict()) == [
        "project.weight", "project.bias", *(f"upsample.{i}.{k}" for i in (0, 2, 4, 6, 8)
                                            for k in ("weight", "bias")),
    ]  # fmt: skip


@pytest.mark.parametrize("size", [16, 32, 64, 256])
def test_generator_builds_one_stage_per_doubling(size: int) -> None:
    g = Generator(image_size=size)
    stages = [m for m in g.upsample if isinstance(m, torch.nn.ConvTranspose2d)]
    assert 2 ** (3 + len(stages)) == size
    with torch.no_grad():
        assert g(torch.randn(2, 128)).shape == (2, 3, size, size)
        assert DCGANDiscriminator(image_size=size)(torch.rand(2, 3, size, size)).shape == (2,)


@pytest.mark.parametrize("size", [0, 8, 96, 100])
def test_dcgan_rejects_an_image_size_the_generator_cannot_make(size: int) -> None:
    with pytest.raises(ConfigError, match=f"data.image_size={size}: .*power of two >= 16"):
        DCGAN(image_size=size)


@pytest.mark.slow
@pytest.mark.parametrize("discriminator", ["seed_cnn", "dcgan"])
def test_dcgan_trains_at_64px(discriminator: str, tmp_path: Path) -> None:
    L.seed_everything(0)
    model = DCGAN(image_size=64, discriminator=discriminator)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(images, torch.ones(4, dtype=torch.long)), batch_size=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = tiny_trainer(tmp_path, "32-true", batches=2)
    trainer.fit(model, loader)
    assert all(not torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert torch.isfinite(trainer.callback_metrics["train/g_loss_epoch"])
    assert model.sample().shape == (10, 3, 64, 64)


@pytest.mark.slow
def test_experiment_dcgan_on_data_synthetic_trains_at_64px(tmp_path: Path) -> None:
    # data=synthetic is 64 px: the original recipe (experiment=dcgan) on it builds a 64-px GAN
    out = tmp_path / "run"
    cfg = dcgan_cfg(
        tmp_path / "synthetic",
        out,
        "data=synthetic",
        f"data.root={tmp_path / 'synthetic'}",
        "data.synthetic.n_train=4",
        "data.synthetic.n_valid=8",
        "data.synthetic.n_test=2",
        "trainer.precision=32-true",
    )
    assert cfg.data.image_size == 64 and cfg.data.train_split == "valid"
    metrics = train(cfg)
    assert metrics["epochs"] == 1
    assert Image.open(out / "samples" / "epoch_000" / "00.png").size == (64, 64)
    model = load_dcgan(out / "checkpoints" / "last.ckpt")
    assert model.hparams.image_size == 64 and model.sample().shape[-1] == 64


def test_fixed_noise_comes_from_sample_seed() -> None:
    a, b, c = DCGAN(sample_seed=3), DCGAN(sample_seed=3), DCGAN(sample_seed=4, n_samples=5)
    assert torch.equal(a.sample_z, b.sample_z)
    assert a.sample_z.shape == (10, 128) and c.sample_z.shape == (5, 128)
    assert not torch.equal(a.sample_z[:5], c.sample_z)
    assert "sample_z" in a.state_dict()  # a buffer: it travels in checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_steps_update_both_networks(precision: str, tmp_path: Path) -> None:
    L.seed_everything(0)
    model = DCGAN(image_size=STEP_SIZE)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = tiny_trainer(tmp_path, precision, batches=2)
    trainer.fit(model, random_faces())
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    g_params = {k for k in before if k.startswith("generator.")}
    d_params = {k for k in before if k.startswith("discriminator.")}
    # every weight of both nets moved: the D step and the G step each reached their optimizer
    assert g_params <= changed and d_params <= changed
    assert all(torch.isfinite(v).all() for v in model.parameters())
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[f"{key}_epoch"]) for key in SCALARS)
    assert trainer.global_step == 4  # manual optimization: 2 optimizer steps per batch
    # Both steps run D in train mode on a real + fake batch (the G step judges the fakes the way
    # the D step trained D), so its BatchNorms saw 2 batches per training batch.
    bn = model.discriminator.features[2]
    assert isinstance(bn, torch.nn.BatchNorm2d) and int(bn.num_batches_tracked) == 4


@pytest.mark.slow
def test_feature_matching_generator_step_trains_the_generator(tmp_path: Path) -> None:
    L.seed_everything(0)
    model = DCGAN(image_size=STEP_SIZE, g_loss="feature_matching")
    before = {k: v.detach().clone() for k, v in model.generator.named_parameters()}
    trainer = tiny_trainer(tmp_path, "bf16-mixed", batches=2)
    trainer.fit(model, random_faces())
    assert all(not torch.equal(v, before[k]) for k, v in model.generator.named_parameters())
    g_loss = trainer.callback_metrics["train/g_loss_epoch"]
    assert torch.isfinite(g_loss) and g_loss > 0
    # The G step reads D's conv features and never its head: the conv BatchNorms saw both steps'
    # batches (2 per training batch), the head's BatchNorm only the D steps' (1 per batch).
    conv_bn, head_bn = model.discriminator.features[2], model.discriminator.head[3]
    assert isinstance(head_bn, torch.nn.BatchNorm1d)
    assert int(conv_bn.num_batches_tracked) == 4 and int(head_bn.num_batches_tracked) == 2


def test_dcgan_rejects_an_unknown_generator_loss() -> None:
    with pytest.raises(ValueError, match="g_loss='wgan'.*feature_matching"):
        DCGAN(g_loss="wgan")


@pytest.mark.slow
def test_experiment_dcgan_writes_samples_events_and_last_ckpt(run_dir: Path) -> None:
    samples = run_dir / "samples"
    grid = Image.open(samples / "epoch_000.png")
    assert grid.size == (4 * 130 + 2, 3 * 130 + 2)  # 10 images: 4 columns x 3 rows, 2 px padding
    singles = sorted((samples / "epoch_000").glob("*.png"))
    assert [p.name for p in singles] == [f"{i:02d}.png" for i in range(10)]
    assert Image.open(singles[0]).size == (128, 128)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {f"{key}_{when}" for key in SCALARS for when in ("step", "epoch")} <= scalars
    assert "samples/fixed_noise" in events.Tags()["images"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"] == str(resolve_precision("auto", "cpu"))  # bf16-mixed here
    assert set(SCALARS) <= set(metrics["history"][0])
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert "test" not in metrics and "exported" not in metrics


@pytest.mark.slow
def test_last_ckpt_loads_without_hydra_and_reproduces_the_samples(run_dir: Path) -> None:
    model = DCGAN.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    assert model.hparams.lr == 1e-4 and tuple(model.hparams.betas) == (0.9, 0.999)
    assert model.hparams.latent_dim == 128 and model.hparams.label_noise == 0.05
    assert torch.equal(model.sample_z, DCGAN(sample_seed=model.hparams.sample_seed).sample_z)
    # the weights and fixed noise in last.ckpt are the ones that drew epoch_000/00.png
    expected = (model.sample()[0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    saved = np.asarray(Image.open(run_dir / "samples" / "epoch_000" / "00.png"))
    assert np.abs(saved.astype(int) - expected.numpy().astype(int)).max() <= 1


@pytest.mark.slow
def test_experiment_dcgan_demo_runs_on_synthetic_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = dcgan_cfg(
        tmp_path / "synthetic",
        out,
        f"data.root={tmp_path / 'synthetic'}",
        "data.synthetic.n_train=8",
        "data.synthetic.n_valid=2",
        "data.synthetic.n_test=2",
        "trainer.limit_train_batches=1",
        "trainer.precision=32-true",
        experiment="dcgan_demo",
    )
    # experiment/dcgan_demo.yaml: the synthetic valid split is too small for a GAN, and the
    # original's BCE generator loss collapses on it (docs/dcgan.md)
    assert cfg.data.synthetic.n_train == 8
    assert cfg.data.classes == ["real"] and cfg.data.train_split == "train"
    assert cfg.model.g_loss == "feature_matching" and cfg.model.lr == 2e-4
    assert list(cfg.model.betas) == [0.5, 0.999]
    metrics = train(cfg)
    assert metrics["precision"] == "32-true" and metrics["epochs"] == 1
    assert (out / "samples" / "epoch_000.png").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_experiment_dcgan_defaults_are_the_originals(tmp_path: Path) -> None:
    cfg = compose("train", ["experiment=dcgan", f"paths.root_dir={tmp_path}"])
    assert cfg.trainer.max_epochs == 30 and cfg.data.batch_size == 32
    assert cfg.data.classes == ["real"] and cfg.data.train_split == "valid"
    assert cfg.model.lr == 1e-4 and list(cfg.model.betas) == [0.9, 0.999]
    assert cfg.model.n_samples == 10 and cfg.model.label_noise == 0.05
    assert cfg.model.g_loss == "bce"
    assert not cfg.test and not cfg.export
    assert cfg.callbacks.model_checkpoint is None and cfg.callbacks.last_checkpoint.save_top_k
    # experiment=dcgan data=synthetic means exactly those two files: no hidden per-data recipe
    mixed = compose("train", ["experiment=dcgan", "data=synthetic", f"paths.root_dir={tmp_path}"])
    assert mixed.model.g_loss == "bce" and mixed.data.train_split == "valid"
    assert mixed.data.root == f"{tmp_path}/data/synthetic-64px"


@pytest.mark.slow
def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faces = make_face_folder(tmp_path / "faces", per_class=4, size=128, splits=("valid",))

    def poison(self: DCGAN, batch: object, batch_idx: int) -> None:
        if self.current_epoch == 1:  # epoch 0 trains and checkpoints normally
            with torch.no_grad():
                self.discriminator.head[-1].weight.fill_(float("nan"))

    monkeypatch.setattr(DCGAN, "on_train_batch_start", poison)
    out = tmp_path / "run"
    with pytest.raises(
        DivergenceError, match=r"discriminator loss is nan at epoch 1, batch 0"
    ) as err:
        train(
            dcgan_cfg(
                faces,
                out,
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=1",
                "trainer.precision=32-true",
            )
        )
    last = out / "checkpoints" / "last.ckpt"
    assert str(last) in str(err.value)  # the message tells the user what to resume or sample from
    assert not (out / "samples" / "epoch_001.png").exists()

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0
    model = DCGAN.load_from_checkpoint(last, map_location="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.sample()).all()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_generate_cli_writes_n_images_and_grid_deterministically(
    run_dir: Path, tmp_path: Path
) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    command = [
        sys.executable, "-m", "fakeface.generate", f"ckpt={ckpt}", "n=5", "seed=0",
    ]  # fmt: skip
    result = run_cli(command, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "generate" / "runs").iterdir()  # the run directory
    first = {name: data for name, data in _files(run).items() if name.endswith(".png")}
    assert sorted(first) == ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png", "grid.png"]
    image = Image.open(run / "0003.png")
    assert image.size == (128, 128) and image.mode == "RGB"
    assert (run / ".hydra" / "config.yaml").is_file()

    paths = generate(ckpt, n=5, out=tmp_path / "second", seed=0)  # another process, same seed
    assert len(paths) == 5
    assert _files(tmp_path / "second") == first
    generate(ckpt, n=5, out=tmp_path / "third", seed=1)
    assert _files(tmp_path / "third")["0000.png"] != first["0000.png"]


@pytest.mark.slow
def test_generate_refuses_to_mix_runs_unless_overwrite(run_dir: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "out"
    generate(ckpt, n=6, out=out)
    with pytest.raises(ConfigError, match="overwrite=true"):
        generate(ckpt, n=3, out=out)
    (out / "notes.txt").write_text("kept")
    generate(ckpt, n=3, out=out, overwrite=True, grid_max=2)
    assert sorted(p.name for p in out.iterdir()) == [
        "0000.png", "0001.png", "0002.png", "grid.png", "notes.txt"
    ]  # fmt: skip
    assert Image.open(out / "grid.png").size == (2 * 130 + 2, 130 + 2)


@pytest.mark.slow
def test_generate_errors_name_the_problem(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        load_dcgan(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a Lightning checkpoint"):
        load_dcgan(garbage)
    classifier = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {"net.head.5.weight": torch.zeros(2, 128)}}, classifier)
    with pytest.raises(ModelFileError, match="not a DCGAN checkpoint"):
        load_dcgan(classifier)
    with pytest.raises(ConfigError, match="at least one image"):
        generate(run_dir / "checkpoints" / "last.ckpt", n=0, out=tmp_path / "none")
    command = [sys.executable, "-m", "fakeface.generate", "ckpt=nope.ckpt"]
    result = run_cli(command, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "fakeface: error: ckpt=nope.ckpt: no such file; give a DCGAN checkpoint, e.g. "
        "outputs/dcgan/runs/<timestamp>/checkpoints/last.ckpt"
    )


# --- The recipe options of experiment=dcgan_faces: each one trains, each bad value is one line.

OPTIONS = [
    {"discriminator": "dcgan"},
    {"diffaugment": "color,translation,cutout"},
    {"g_ema": 0.9},
    {"lr_g": 1e-4, "lr_d": 4e-4},
    {"g_norm": "batch"},
]


@pytest.mark.slow
@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: "-".join(map(str, o)))
def test_each_recipe_option_trains_one_step(option: dict, tmp_path: Path) -> None:
    L.seed_everything(0)
    model = DCGAN(image_size=STEP_SIZE, **option)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = tiny_trainer(tmp_path, "bf16-mixed", batches=1)
    trainer.fit(model, random_faces(2))
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert {k for k in before if k.startswith("generator.")} <= changed
    assert {k for k in before if k.startswith("discriminator.")} <= changed
    assert torch.isfinite(trainer.callback_metrics["train/g_loss_epoch"])
    assert torch.isfinite(model.sample()).all()


def test_ttur_learning_rates_reach_the_optimizers() -> None:
    opt_d, opt_g = DCGAN(lr=1e-4, lr_g=5e-5, lr_d=3e-4).configure_optimizers()
    assert opt_d.param_groups[0]["lr"] == 3e-4 and opt_g.param_groups[0]["lr"] == 5e-5
    opt_d, opt_g = DCGAN(lr=2e-4).configure_optimizers()  # null: both take model.lr
    assert opt_d.param_groups[0]["lr"] == opt_g.param_groups[0]["lr"] == 2e-4
    assert opt_d.defaults["foreach"] and opt_g.defaults["foreach"]  # a CPU (fused on CUDA)


@pytest.mark.slow
def test_g_ema_averages_the_generator_and_draws_the_samples(tmp_path: Path) -> None:
    L.seed_everything(0)
    model = DCGAN(image_size=STEP_SIZE, g_ema=0.5, g_norm="batch")
    start = [p.detach().clone() for p in model.generator_ema.parameters()]
    trainer = tiny_trainer(tmp_path, "32-true", batches=1)
    trainer.fit(model, random_faces(2))
    live, ema = list(model.generator.parameters()), list(model.generator_ema.parameters())
    for s, g, e in zip(start, live, ema, strict=True):  # one G step: ema = (start + G) / 2
        assert torch.allclose(e, (s + g) / 2, atol=1e-6)
    assert not any(p.requires_grad for p in ema) and not model.generator_ema.training
    assert torch.equal(model.generator_ema.project_norm.running_mean,
                       model.generator.project_norm.running_mean)  # fmt: skip
    assert not torch.equal(model.sample(), model.sample(ema=False))
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    loaded = DCGAN.load_from_checkpoint(path, map_location="cpu")  # no Hydra
    assert torch.equal(loaded.sample(), model.sample())


def test_diffaugment_is_differentiable_and_changes_each_image() -> None:
    from fakeface.models.diffaugment import diffaugment

    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = diffaugment(x, ("color", "translation", "cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # translation alone moves pixels without changing them; cutout alone zeroes a square
    flat = torch.ones(8, 3, 32, 32)
    moved = diffaugment(flat, ("translation",))
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    holes = diffaugment(flat, ("cutout",))
    assert (holes == 0).flatten(1).sum(1).min() > 0  # every image lost a patch


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"discriminator": "resnet"}, "model.discriminator='resnet': use one of seed_cnn, dcgan"),
        ({"diffaugment": "color,flip"}, "model.diffaugment='color,flip': unknown flip"),
        ({"g_norm": "layer"}, "model.g_norm='layer': use one of none, batch"),
        ({"g_ema": 1.5}, "model.g_ema=1.5: give a decay in (0, 1)"),
    ],
)
def test_unknown_recipe_option_is_a_config_error(option: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        DCGAN(**option)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.slow
def test_unknown_option_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "fakeface.train", "experiment=dcgan_faces",
        f"data.root={tmp_path}", "model.discriminator=resnet",
    ]  # fmt: skip
    result = run_cli(command, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]  # after "Seed set to 42"
    assert line.startswith("fakeface: error: model.discriminator='resnet': use one of")


@pytest.mark.slow
def test_experiment_dcgan_faces_trains_on_every_real_photo(tmp_path: Path) -> None:
    faces = tmp_path / "faces"
    make_face_folder(faces, per_class=3, size=128, splits=("flat",))
    folder = faces / "flat"  # a class-folder dataset: flat/real, flat/fake
    out = tmp_path / "run"
    cfg = dcgan_cfg(folder, out, "trainer.precision=32-true", experiment="dcgan_faces")
    # last.ckpt every 25 epochs (docs/dcgan.md): a one-epoch run must ask for it every epoch
    assert cfg.callbacks.last_checkpoint.every_n_epochs == 25
    cfg.callbacks.last_checkpoint.every_n_epochs = 1
    assert cfg.model.discriminator == "dcgan" and cfg.model.g_norm == "batch"
    assert cfg.model.diffaugment == "color,translation,cutout" and cfg.model.g_ema == 0.999
    assert list(cfg.data.split_fractions) == [1.0, 0.0, 0.0] and cfg.data.classes == ["real"]
    metrics = train(cfg)
    assert metrics["epochs"] == 1
    split = (out / "split.csv").read_text()
    assert split.count("/real/") == 3 and ",train" in split and ",valid" not in split
    assert (out / "samples" / "epoch_000.png").is_file()  # the first (and last) epoch
    model = load_dcgan(out / "checkpoints" / "last.ckpt")
    assert model.generator_ema is not None and model.hparams.discriminator == "dcgan"


@pytest.mark.slow
def test_old_checkpoints_without_the_new_keys_still_load(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    new = ("discriminator", "diffaugment", "g_ema", "lr_g", "lr_d", "g_norm", "sample_every")
    for key in new:  # as written before these options existed
        checkpoint["hyper_parameters"].pop(key, None)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    model = DCGAN.load_from_checkpoint(old, map_location="cpu")
    assert model.generator_ema is None and model.hparams.discriminator == "seed_cnn"
    assert isinstance(model.discriminator, Discriminator)


@pytest.mark.slow
def test_generate_report_writes_json_and_markdown(run_dir: Path, tmp_path: Path) -> None:
    from fakeface.generate import report

    reference = make_face_folder(tmp_path / "ref", per_class=3, size=96, splits=("all",))
    paths = generate(run_dir / "checkpoints" / "last.ckpt", n=4, out=tmp_path / "gen")
    result = report(paths, reference / "all" / "real", tmp_path / "gen")
    saved = json.loads((tmp_path / "gen" / "report.json").read_text())
    assert saved["n_samples"] == 4 and saved["n_reference"] == 3
    # the fields: face rate by MTCNN, diversity, near-copies, KID (Lite0 features)
    assert saved["face_detector"] == "mtcnn" and 0 <= saved["face_rate"] <= 1
    assert saved["memorisation"]["near_copy_fraction"] >= 0 and saved["kid"] > 0
    assert saved["kid_reference"] == str(reference / "all" / "real")
    assert saved["diversity_ratio"] == pytest.approx(result["diversity_ratio"])
    assert "| diversity ratio |" in (tmp_path / "gen" / "report.md").read_text()
    command = [sys.executable, "-m", "fakeface.generate", "ckpt=x.ckpt", "report=true"]
    result = run_cli(command, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("fakeface: error: report=true needs reference=")


def test_narrow_networks_follow_g_width_and_d_width() -> None:
    model = DCGAN(image_size=64, discriminator="dcgan", g_norm="batch", g_width=8, d_width=4)
    convs = [m for m in model.generator.upsample if isinstance(m, torch.nn.ConvTranspose2d)]
    # 64 px: three x2 stages from 8 x 8, the width halving towards the pixels
    assert [c.out_channels for c in convs] == [32, 16, 8] and convs[0].in_channels == 64
    assert model.discriminator.features[0].out_channels == 4
    assert model.sample().shape == (10, 3, 64, 64)
    with pytest.raises(ConfigError, match="model.d_width=32 needs model.discriminator=dcgan"):
        DCGAN(image_size=64, d_width=32)  # the SeedCNN discriminator has no width
    with pytest.raises(ConfigError, match="model.d_width=0"):
        DCGAN(image_size=64, discriminator="dcgan", d_width=0)
    with pytest.raises(ConfigError, match="model.g_width=0"):
        DCGAN(image_size=64, g_width=0)


def _fit(model: DCGAN, ckpt: Path | None, epochs: int, root: Path) -> L.Trainer:
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(images, torch.ones(8, dtype=torch.long)), batch_size=4)
    trainer = quiet_trainer(precision="32-true", max_epochs=epochs, default_root_dir=root)
    trainer.fit(model, loader, ckpt_path=ckpt, weights_only=True)
    return trainer


def test_resume_restores_both_optimizers_the_average_and_the_step(tmp_path: Path) -> None:
    hp = dict(image_size=64, discriminator="dcgan", g_norm="batch", g_width=8, d_width=8)
    L.seed_everything(0)
    first = DCGAN(g_ema=0.9, **hp)
    trainer = _fit(first, None, 1, tmp_path / "a")
    ckpt = tmp_path / "one_epoch.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)

    class Restored(L.Callback):  # what the resumed fit starts from, before its first step
        def on_train_start(self, trainer: L.Trainer, module: DCGAN) -> None:
            self.step = trainer.global_step
            self.ema = {k: v.clone() for k, v in module.generator_ema.state_dict().items()}
            self.adam = [o.state_dict()["state"][0]["step"].item() for o in trainer.optimizers]

    restored = Restored()
    second = DCGAN(g_ema=0.9, **hp)  # fresh weights: everything must come from the file
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(images, torch.ones(8, dtype=torch.long)), batch_size=4)
    resumed = quiet_trainer(
        precision="32-true", max_epochs=2, default_root_dir=tmp_path / "b", callbacks=[restored]
    )
    resumed.fit(second, loader, ckpt_path=ckpt, weights_only=True)
    assert restored.step == 4  # 2 batches x 2 optimizers in the first epoch
    assert restored.adam == [2.0, 2.0]  # D's and G's Adam each made 2 steps
    for key, value in restored.ema.items():
        assert torch.equal(value, saved["state_dict"][f"generator_ema.{key}"])
    assert resumed.global_step == 8


def test_experiment_dcgan_cpu_trains_saves_resumes_and_generates(tmp_path: Path) -> None:
    faces = make_face_folder(tmp_path / "faces", per_class=4, size=64, splits=("flat",))
    common = (
        "trainer.precision=32-true",
        "model.g_width=8",  # the recipe's networks, narrowed: seconds, not minutes
        "model.d_width=8",
        "callbacks.gan_monitor.kid_samples=0",  # KID has its own tests (test_ganreport.py)
        "callbacks.gan_monitor.every_minutes=0.0001",  # a progress line after every batch
        "callbacks.gan_monitor.snapshot_minutes=[0.000001]",  # after the first batch
    )
    cfg = dcgan_cfg(faces / "flat", tmp_path / "run", *common, experiment="dcgan_cpu")
    assert cfg.data.image_size == 64 and cfg.trainer.max_time == "00:01:00:00"
    assert cfg.model.diffaugment == "color,translation" and cfg.model.g_ema == 0.995
    assert cfg.data.batch_size == 2  # dcgan_cfg shrinks the recipe's 32
    metrics = train(cfg)
    assert metrics["epochs"] == 1
    run = tmp_path / "run"
    assert (run / "checkpoints" / "minute_000.ckpt").is_file()
    assert (run / "samples" / "minute_000.png").is_file()
    resumed = dcgan_cfg(
        faces / "flat",
        tmp_path / "resumed",
        *common,
        "trainer.max_epochs=2",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        experiment="dcgan_cpu",
    )
    assert train(resumed)["epochs"] == 2
    last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8  # 2 epochs x 2 batches x 2 optimizers: it went on
    paths = generate(tmp_path / "resumed" / "checkpoints" / "last.ckpt", n=3, out=tmp_path / "g")
    assert len(paths) == 3 and Image.open(paths[0]).size == (64, 64)


def test_gan_monitor_logs_the_time_left_to_max_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fakeface.models.ganmonitor import GANMonitor

    model = DCGAN(image_size=64, discriminator="dcgan", g_width=8, d_width=8)
    images = torch.rand(8, 3, 64, 64)
    loader = DataLoader(TensorDataset(images, torch.ones(8, dtype=torch.long)), batch_size=4)
    monitor = GANMonitor(every_minutes=0.0001, kid_samples=0)
    trainer = quiet_trainer(
        precision="32-true", max_time="00:00:10:00", max_epochs=1, callbacks=[monitor],
        default_root_dir=tmp_path,
    )  # fmt: skip
    with caplog.at_level("INFO", logger="fakeface.models.ganmonitor"):
        trainer.fit(model, loader)
    lines = [r.getMessage() for r in caplog.records if "generator steps" in r.getMessage()]
    assert lines and "of the 10.0 min budget, ends in about" in lines[0]
    assert "2 generator steps" in lines[-1]
    with pytest.raises(ValueError, match="every_minutes"):
        GANMonitor(every_minutes=0)


def test_gan_monitor_tracks_kid_in_the_logger_and_kid_csv(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from fakeface.models.ganmonitor import GANMonitor

    reference = make_face_folder(tmp_path / "ref", per_class=3, size=64, splits=("all",))
    model = DCGAN(image_size=64, discriminator="dcgan", g_width=8, d_width=8)
    images = torch.rand(8, 3, 64, 64)
    loader = DataLoader(TensorDataset(images, torch.ones(8, dtype=torch.long)), batch_size=4)
    monitor = GANMonitor(
        every_minutes=0.000001, kid_samples=4, kid_reference=str(reference / "all" / "real")
    )
    logger = CSVLogger(tmp_path, name="csv")
    trainer = quiet_trainer(
        precision="32-true", max_epochs=1, callbacks=[monitor], logger=logger,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, loader)
    rows = (tmp_path / "kid.csv").read_text().splitlines()
    assert rows[0] == "seconds,generator_steps,kid" and len(rows) == 4  # 2 batches + the end
    assert all(np.isfinite(float(row.split(",")[2])) for row in rows[1:])
    logged = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "train/kid" in logged.splitlines()[0]
