"""fakeface: tell real face photos from GAN-generated ones."""

from pathlib import Path

__version__ = "0.1.0"


def conf_dir() -> Path:
    """The Hydra config folder: packaged inside fakeface by a wheel, else the checkout's conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    # train.yaml, not just the folder: an old checkout can leave an empty src/fakeface/conf/ behind
    found = (packaged / "train.yaml").is_file()
    return packaged if found else Path(__file__).resolve().parents[2] / "conf"
