"""Shared fixtures: a tiny 140k-layout folder made in the test (no downloads, no shared data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def quiet_trainer(accelerator: str = "cpu", **settings: Any) -> Any:
    """A one-device Lightning Trainer that writes nothing (no logger, checkpoints, progress bar
    or model summary), with `settings` on top."""
    import lightning as L

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(
        accelerator=accelerator, devices=1, enable_model_summary=False, **(quiet | settings)
    )


def make_face_folder(
    root: Path, per_class: int = 6, size: int = 64, splits=("train", "valid", "test")
) -> Path:
    """{split}/{fake,real}/*.jpg with a learnable difference: fakes carry a checkerboard."""
    rng = np.random.default_rng(0)
    checker = (np.indices((size, size)).sum(0) % 2 * 60).astype(np.int16)[..., None]
    for split in splits:
        for name in ("fake", "real"):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = rng.integers(60, 190, (size, size, 3)).astype(np.int16)
                pixels = base + checker if name == "fake" else base
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / f"{i:03d}.jpg", quality=95)
    return root


@pytest.fixture
def face_folder(tmp_path: Path) -> Path:
    return make_face_folder(tmp_path / "faces")


def compose(config_name: str, overrides: list[str]):
    """Compose a config from the repository's conf/ (override paths.* since there is no Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)
