"""Fake faces from a DCGAN checkpoint: python -m fakeface.generate ckpt=<dcgan.ckpt> n=64

Writes 0000.png ... and grid.png into the run directory (or `out`); with report=true and
reference=<folder of real faces> also report.json and report.md (fakeface.evaluation.ganreport).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
import torchvision
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fakeface.cli import hydra_main
from fakeface.errors import ConfigError, ModelFileError
from fakeface.models.dcgan import DCGAN, sample_grid

log = logging.getLogger(__name__)

_OURS = re.compile(r"^(\d{4,}|grid)\.png$")  # the files generate() writes


def load_dcgan(ckpt: str | Path, device: str | torch.device = "cpu") -> DCGAN:
    """Load a DCGAN checkpoint; clear errors for a missing file or another kind of checkpoint."""
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise ModelFileError(
            f"ckpt={ckpt}: no such file; give a DCGAN checkpoint, e.g. "
            "outputs/dcgan/runs/<timestamp>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file gets the same clear message)
        raise ModelFileError(f"ckpt={ckpt} is not a Lightning checkpoint (.ckpt): {err}") from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    keys = list(state) if isinstance(state, dict) else []
    if "sample_z" not in keys or not any(k.startswith("generator.") for k in keys):
        raise ModelFileError(
            f"ckpt={ckpt} is not a DCGAN checkpoint (no generator weights); train one with "
            "python -m fakeface.train experiment=dcgan (classifier checkpoints go to fakeface.export)"
        )
    model = DCGAN.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.to(device).eval()


def generate(
    ckpt: str | Path,
    n: int = 64,
    out: str | Path = "generated",
    seed: int = 0,
    batch_size: int = 64,
    grid_max: int = 64,
    overwrite: bool = False,
    device: str = "cpu",
) -> list[Path]:
    """Write `n` PNGs (0000.png, ...; the model's image_size) and grid.png to `out`; return paths.

    Args:
        seed: seeds the noise; the same checkpoint, seed, batch_size and device give
            byte-identical files.
        batch_size: images per forward pass; the noise is drawn up front, so only float rounding
            (a pixel off by one) depends on it.
        grid_max: grid.png shows the first `grid_max` images (0: no grid.png).
        overwrite: allow replacing the numbered PNGs and grid.png of an earlier run in `out`.
    """
    if n < 1:
        raise ConfigError(f"n={n}: ask for at least one image")
    out = Path(out).expanduser()
    earlier = sorted(p for p in out.glob("*.png") if _OURS.match(p.name)) if out.is_dir() else []
    if earlier and not overwrite:
        raise ConfigError(
            f"out={out} already holds {len(earlier)} generated PNGs; pass overwrite=true to "
            "replace them or choose another out"
        )
    model = load_dcgan(ckpt, device)
    for path in earlier:  # stale files of a larger earlier run would break the count
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)

    noise = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.hparams.latent_dim, generator=noise)  # on the CPU: same z everywhere
    width = max(4, len(str(n - 1)))
    paths: list[Path] = []
    kept: list[torch.Tensor] = []  # the first grid_max images, for grid.png
    for chunk in z.split(batch_size):
        images = model.sample(chunk)  # B x 3 x S x S float32 in [0, 1] on the CPU
        for image in images:
            path = out / f"{len(paths):0{width}d}.png"
            torchvision.utils.save_image(image, path)
            paths.append(path)
        room = grid_max - sum(len(k) for k in kept)
        if room > 0:
            kept.append(images[:room])
    if kept:  # grid_max=0: no grid
        torchvision.utils.save_image(sample_grid(torch.cat(kept)), out / "grid.png")
    log.info("wrote %d images (and grid.png of the first %d) to %s", n, min(n, grid_max), out)
    return paths


def p_fake(classifier: str | Path, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """An exported classifier's P(fake) for N x S x S x 3 uint8 RGB images (resized if needed)."""
    from fakeface.deploy.modelfile import classify, fast_dtype, load_classifier
    from fakeface.preprocess import resize_rgb, to_tensor

    model, info = load_classifier(classifier, device)
    if "fake" not in info.class_names:
        raise ModelFileError(f"classifier={classifier} has no 'fake' class ({info.class_names})")
    column = info.class_names.index("fake")
    scores = []
    for start in range(0, len(images), 64):
        chunk = [resize_rgb(image, info.image_size) for image in images[start : start + 64]]
        probs = classify(model, to_tensor(np.stack(chunk)), fast_dtype(device))
        scores.append(probs[:, column].numpy())
    return np.concatenate(scores)


def report(
    paths: list[Path],
    reference: str | Path,
    out: str | Path,
    classifier: str | Path | None = None,
    device: str = "cpu",
    kid_reference: str | Path | None = None,
    detector: str = "mtcnn",
) -> dict:
    """Score the generated PNGs against a folder of real faces; write report.json and report.md.

    Args:
        reference: the training photos (memorisation, diversity, the reference face rate).
        kid_reference: held-back real photos for KID; None: `reference`.
        detector: the face finder of the face rate, a preset of conf/detector/ (mtcnn, default).
    """
    from fakeface.evaluation.ganreport import gan_report, load_images, write_report
    from fakeface.faces.detect import build_detector

    preset = Path(__file__).resolve().parents[2] / "conf" / "detector" / f"{detector}.yaml"
    if not preset.is_file():
        raise ConfigError(f"detector={detector}: no preset {preset}")
    finder = build_detector(OmegaConf.to_container(OmegaConf.load(preset)), device)
    samples = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    real = load_images(reference, size=samples.shape[1], key="reference")  # resized like training
    kid_real = (
        load_images(kid_reference, size=samples.shape[1], key="kid_reference")
        if kid_reference
        else real
    )
    if len(samples) < 2 or len(real) < 2:
        raise ConfigError(
            f"report=true needs at least 2 samples (n={len(samples)}) and 2 reference images "
            f"(reference={reference} has {len(real)})"
        )
    scores = p_fake(classifier, samples, device) if classifier else None
    from fakeface.evaluation.kid import KIDFeatures

    result = {"face_detector": detector}
    result |= gan_report(
        samples, real, finder, scores, kid_reference=kid_real, features=KIDFeatures(device)
    )
    result |= {
        "reference": str(reference),
        "kid_reference": str(kid_reference or reference),
        "classifier": str(classifier) if classifier else None,
    }
    json_path, md_path = write_report(result, out)
    m = result["memorisation"]
    log.info(
        "face rate %.3f (reference %.3f), diversity ratio %.3f, near-copies %.3f, KID %.4f: %s",
        result["face_rate"],
        result["face_rate_reference"],
        result["diversity_ratio"],
        m["near_copy_fraction"],
        result["kid"],
        md_path,
    )
    return result


@hydra_main("generate")
def main(cfg: DictConfig) -> None:
    """CLI: write cfg.n images and grid.png into <out> (and the report, with report=true)."""
    if not cfg.ckpt:
        raise ConfigError("give the DCGAN checkpoint: python -m fakeface.generate ckpt=<file.ckpt>")
    if cfg.report and not cfg.reference:
        raise ConfigError(
            "report=true needs reference=<folder of real face photos> (e.g. the training faces)"
        )
    if cfg.report not in (True, False):
        raise ConfigError(f"report={cfg.report!r}: use true or false")
    paths = generate(
        cfg.ckpt,
        n=cfg.n,
        out=cfg.out,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        grid_max=cfg.grid_max,
        overwrite=cfg.overwrite,
        device=cfg.device,
    )
    if cfg.report:
        report(
            paths,
            cfg.reference,
            cfg.out,
            cfg.classifier,
            cfg.device,
            kid_reference=cfg.get("kid_reference"),
            detector=cfg.get("detector", "mtcnn"),
        )


if __name__ == "__main__":
    main()
