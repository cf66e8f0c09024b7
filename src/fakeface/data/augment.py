"""data.augment: the training split's augmentation presets and the image-side steps."""

from __future__ import annotations

import random

import torch
from PIL import Image

from fakeface.errors import ConfigError
from fakeface.evaluation.perturb import RANDOM_STEPS, random_steps

# data.augment presets -> their steps: `flip` (on the resized tensor) and the RANDOM_STEPS of
# fakeface.evaluation.perturb (on the decoded full-resolution image). Steps also combine with "+".
AUGMENTS = {
    "none": (),
    "flip": ("flip",),
    "robust": ("flip", "blur", "jpeg"),  # Wang et al. 2020
    "strong": ("flip", "crop", "jitter", "blur", "jpeg"),
    "source": ("flip", "jitter", "resample", "blur", "jpeg"),  # forget the storage history
    "wild": ("flip", "crop", "jitter", "light", "resample", "blur", "jpeg"),  # + framing and light
    # + the capture chain of cameras, film and scans not in training (issue 43)
    "capture": ("flip", "crop", "jitter", "light", "camera", "resample", "blur", "jpeg"),
}
STEPS = ("flip", *RANDOM_STEPS)


def check_augment(augment: str) -> tuple[str, ...]:
    """The steps of data.augment (a preset of AUGMENTS, or steps joined by "+"); else ConfigError."""
    if isinstance(augment, str) and augment in AUGMENTS:
        return AUGMENTS[augment]
    steps = tuple(augment.split("+")) if isinstance(augment, str) else ()
    if not steps or any(step not in STEPS for step in steps):
        raise ConfigError(
            f"data.augment={augment!r}: use one of {', '.join(AUGMENTS)}, or steps joined by "
            f"'+' from {', '.join(STEPS)} (e.g. data.augment=flip+resample+jpeg)"
        )
    return steps


class ImageAugment:
    """The image-side steps of data.augment (fakeface.evaluation.perturb.RANDOM_STEPS), before the resize.

    Works on the decoded full-resolution image so that `fakeface.preprocess` stays the one
    resize path (the flip is done after it, on the tensor). Each image gets a fresh stdlib
    generator seeded from torch's global one, which Lightning's `seed_everything(workers=True)`
    and the DataLoader seed differently in each worker process and each epoch: the draws are
    reproducible and no worker repeats another's.
    """

    def __init__(self, steps: tuple[str, ...]) -> None:
        self.steps = tuple(step for step in steps if step in RANDOM_STEPS)

    def __call__(self, image: Image.Image) -> Image.Image:
        return random_steps(image, random.Random(int(torch.randint(2**62, ()))), self.steps)
