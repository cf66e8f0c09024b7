"""fakeface: tell real face photos from GAN-generated ones."""

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# The two classes in torchvision ImageFolder's (alphabetical) order: label 0 = fake, 1 = real, and
# the order of every classifier's outputs [p_fake, p_real]. Defined here, once, for every layer.
CLASS_NAMES = ("fake", "real")
# The split folders of the 140k layout, root/{train,valid,test}/<class>/ (data=synthetic too).
SPLITS = ("train", "valid", "test")


def conf_dir() -> Path:
    """The Hydra config folder: packaged inside fakeface by a wheel, else the checkout's conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    # train.yaml, not just the folder: an old checkout can leave an empty src/fakeface/conf/ behind
    found = (packaged / "train.yaml").is_file()
    return packaged if found else Path(__file__).resolve().parents[2] / "conf"


# The public API (docs/api.md), imported on first use: `import fakeface` stays light for the
# modules (errors, realtime) that must not pull in torch's scoring stack.
_API = ("Detector", "Face", "ImageInputError", "Result")


def __getattr__(name: str) -> Any:
    if name in _API:
        from fakeface import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'fakeface' has no attribute {name!r}")
