"""Bench section `dcgan`: one DCGAN training step (D and G), fp32 vs bf16, for two recipes."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fakeface.bench.common import CONF, resident, row
from fakeface.bench.train import fit_rate


def bench_dcgan(cfg: DictConfig, precisions: list[str], rows: list[dict]) -> None:
    """The original recipe (model/dcgan.yaml) and the one docs/dcgan.md recommends for real
    photos (experiment/dcgan_faces.yaml's model keys: DCGAN-paper D, DiffAugment, G EMA, BN in G),
    each at the bench's batch size."""
    dm = resident(cfg)  # both classes: the same work per image as the real-faces-only run
    original = OmegaConf.load(CONF / "model" / "dcgan.yaml")
    faces = OmegaConf.load(CONF / "experiment" / "dcgan_faces.yaml").model
    recipes = {"DCGAN": original, "DCGAN dcgan_faces": OmegaConf.merge(original, faces)}
    for precision in precisions:
        for name, model_cfg in recipes.items():
            gan = instantiate(model_cfg, image_size=cfg.data.image_size)
            gan.on_train_epoch_end = lambda: None  # no sample PNGs: only the steps are timed
            rate = fit_rate(gan, dm, precision, cfg.bench, Path(cfg.paths.output_dir))
            rows.append(row("dcgan", f"{name} {precision} (D and G step)", rate, "img/s"))
