"""FaceDataset: image files listed in an index -> (tensor, label) items that name the files
they had to skip (Tracked), and the collate function that keeps those names."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from fakeface.data.augment import ImageAugment, check_augment
from fakeface.data.faceboxes import crop_to_face
from fakeface.errors import BadImageError, DatasetError
from fakeface.preprocess import IMAGE_SIZE, load_image, preprocess


class Tracked(tuple):
    """A tuple (x, y) that also names the unreadable files skipped to make it: `.skipped`.

    Skips happen in DataLoader worker processes; the names ride along with the data to the main
    process, where `FaceDataModule.on_before_batch_transfer` counts them. `x, y = batch` and
    `batch[0]` work as with a plain tuple.
    """

    skipped: tuple[tuple[str, str], ...]  # (path, reason) pairs

    def __new__(cls, items: Any, skipped: Any = ()) -> Tracked:
        tracked = super().__new__(cls, items)
        tracked.skipped = tuple(skipped)
        return tracked

    def __reduce__(self) -> tuple:
        # Workers pickle batches to the main process; the default would drop `skipped`.
        return (Tracked, (tuple(self), self.skipped))

    def pin_memory(self) -> Tracked:
        # torch's pin_memory rebuilds plain tuples without their attributes; keep ours.
        return Tracked((t.pin_memory() for t in self), self.skipped)


def collate_tracked(items: list[Any]) -> Any:
    """torch's default_collate; Tracked items make a Tracked batch with all their skipped files."""
    if not any(isinstance(item, Tracked) for item in items):
        return default_collate(items)  # another dataset (the cache): its batches as they were
    skipped = dict.fromkeys(s for item in items for s in getattr(item, "skipped", ()))
    return Tracked(default_collate([tuple(item) for item in items]), skipped)


class FaceDataset(Dataset):
    """Images listed in an index DataFrame -> (3 x size x size float in [0, 1], label).

    Args:
        frame: rows with `image_path` and `label`.
        augment: a preset of augment.AUGMENTS or steps joined by "+"; every step but the flip works on
            the decoded full-resolution image before `fakeface.preprocess` resizes it.
        on_bad_image: `skip` stands the next readable image in for an unreadable one and names
            the file in the item's `.skipped` (the DataModule logs and counts it); `error` raises
            BadImageError.
        crop: if set, a random crop x crop patch of the image_size image (no resize: the pixels
            keep their scale, so a fully convolutional net trained on patches sees the same
            textures when it reads the whole image at test time).
        face_boxes: data.face_crop: path -> the largest face's box (None: no face, used whole);
            each image is cropped to the window deployment crops, `face_margin` around the box.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        image_size: int = IMAGE_SIZE,
        augment: str = "none",
        on_bad_image: str = "skip",
        crop: int | None = None,
        face_boxes: dict[str, tuple[int, int, int, int] | None] | None = None,
        face_margin: float = 0.4,
    ) -> None:
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"data.on_bad_image={on_bad_image!r}: use 'skip' or 'error'")
        self.paths = frame["image_path"].tolist()
        self.labels = torch.tensor(frame["label"].tolist(), dtype=torch.long)
        self.image_size = image_size
        self.augment = augment
        steps = check_augment(augment)
        self.flip = "flip" in steps
        self.image_augment = ImageAugment(steps) if set(steps) - {"flip"} else None
        self.on_bad_image = on_bad_image
        self.crop = crop
        self.face_boxes, self.face_margin = face_boxes, face_margin

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tracked:
        skipped: list[tuple[str, str]] = []
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            try:
                image = load_image(self.paths[i])
            except BadImageError as err:
                if self.on_bad_image == "error":
                    raise
                # A stand-in rather than a dropped item: batches keep their size (BatchNorm cannot
                # train on a batch of one, and an all-bad batch would be empty).
                skipped.append((self.paths[i], str(err.__cause__ or err)))
                continue
            if self.face_boxes is not None:  # data.face_crop: deployment's face window
                image = crop_to_face(image, self.face_boxes.get(self.paths[i]), self.face_margin)
            if self.image_augment is not None:
                image = self.image_augment(image)
            x = preprocess(image, self.image_size)
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
            if self.crop is not None:
                top, left = (int(v) for v in torch.randint(self.image_size - self.crop + 1, (2,)))
                x = x[:, top : top + self.crop, left : left + self.crop]
            return Tracked((x, self.labels[i]), skipped)
        raise DatasetError(f"none of the {len(self.paths)} images is readable ({skipped[0]})")
