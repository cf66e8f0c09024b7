"""FaceDataModule: any folder in the 140k layout (train/valid/test x fake/real), or the synthetic set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fakeface.data.cache import CachedDataset, DecodedSplit, DeviceBatches, load_or_build
from fakeface.data.index import DatasetError, index_split
from fakeface.preprocess import IMAGE_SIZE, BadImageError, preprocess_file

log = logging.getLogger(__name__)


class FaceDataset(Dataset):
    """Images listed in an index DataFrame -> (3 x size x size float in [0, 1], label).

    Args:
        frame: rows with `image_path` and `label`.
        hflip: flip each image horizontally with probability 0.5.
        on_bad_image: `skip` replaces an unreadable image by the next readable one (and logs the
            file once); `error` raises.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        image_size: int = IMAGE_SIZE,
        hflip: bool = False,
        on_bad_image: str = "skip",
    ) -> None:
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"data.on_bad_image={on_bad_image!r}: use 'skip' or 'error'")
        self.paths = frame["image_path"].tolist()
        self.labels = torch.tensor(frame["label"].tolist(), dtype=torch.long)
        self.image_size = image_size
        self.hflip = hflip
        self.on_bad_image = on_bad_image
        self.bad: set[str] = set()  # per worker process: each bad file is logged once there

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            try:
                x = preprocess_file(self.paths[i], self.image_size)
            except BadImageError as err:
                if self.on_bad_image == "error":
                    raise
                if self.paths[i] not in self.bad:
                    self.bad.add(self.paths[i])
                    log.warning("skipping unreadable image (data.on_bad_image=skip): %s", err)
                continue
            if self.hflip and torch.rand(()) < 0.5:
                x = x.flip(-1)
            return x, self.labels[i]
        raise DatasetError("no readable image in the dataset")


class FaceDataModule(L.LightningDataModule):
    """Train on `train`, validate on `valid`, test on `test` (the original validated on test).

    Args:
        root: folder holding the split folders; `~` is expanded.
        classes: keep only these classes (the DCGAN trains on `[real]`); None = both, and then
            exactly two classes (fake, real) are required.
        synthetic: if given, generate the synthetic dataset into `root` first (kwargs of
            `fakeface.data.synthetic.generate_synthetic`: n_train, n_valid, n_test, seed).
        hflip: random horizontal flips on the training split.
        cache: decode each split once into a memory-mapped uint8 array under `cache_dir`.
        device_resident: keep each split's uint8 pixels on the training device and batch there
            (implies cache); no worker processes, no JPEG decoding during the epoch.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        image_size: int = IMAGE_SIZE,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        hflip: bool = False,
        classes: list[str] | None = None,
        train_split: str = "train",
        val_split: str = "valid",
        test_split: str = "test",
        on_bad_image: str = "skip",
        synthetic: dict[str, Any] | None = None,
        cache: bool = False,
        cache_dir: str = "data/cache",
        device_resident: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.classes = list(classes) if classes is not None else None
        self.frames: dict[str, pd.DataFrame] = {}

    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from fakeface.data.synthetic import generate_synthetic

            generate_synthetic(self.root, **self.hparams.synthetic)

    def index(self, split: str) -> pd.DataFrame:
        """The index DataFrame of one split (image_path, label, class_name, split), cached."""
        if split not in self.frames:
            frame = index_split(self.root, split, self.classes)
            found = frame.attrs["classes"]
            if self.classes is None and len(found) != 2:
                raise DatasetError(
                    f"{self.root / split} has {len(found)} class folders {found}; the classifier "
                    "needs exactly two: fake/ and real/"
                )
            self.frames[split] = frame
        return self.frames[split]

    @property
    def class_names(self) -> list[str]:
        return self.index(self.hparams.train_split).attrs["classes"]

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None):
            self.train_set = self._dataset(hp.train_split, hp.hflip)
            self.val_set = self._dataset(hp.val_split, False)
        if stage in ("validate",):
            self.val_set = self._dataset(hp.val_split, False)
        if stage in ("test", None):
            self.test_set = self._dataset(hp.test_split, False)

    def decoded(self, split: str) -> DecodedSplit:
        """The split decoded into the uint8 cache (built on first use, reused while unchanged)."""
        hp = self.hparams
        return load_or_build(self.index(split), hp.cache_dir, hp.image_size, hp.num_workers)

    def _dataset(self, split: str, hflip: bool) -> Dataset:
        hp = self.hparams
        if hp.device_resident:
            return self.decoded(split)  # batched on the device by _loader
        if hp.cache:
            return CachedDataset(self.decoded(split), hflip)
        return FaceDataset(self.index(split), hp.image_size, hflip, hp.on_bad_image)

    def _loader(self, dataset: Dataset | DecodedSplit, shuffle: bool) -> DataLoader | DeviceBatches:
        hp = self.hparams
        if isinstance(dataset, DecodedSplit):
            trainer = self.trainer
            return DeviceBatches(
                dataset,
                hp.batch_size,
                device=trainer.strategy.root_device if trainer else "cpu",
                shuffle=shuffle,
                hflip=hp.hflip and shuffle,  # flips on the training split only
                rank=trainer.global_rank if trainer else 0,
                world_size=trainer.world_size if trainer else 1,
                seed=torch.initial_seed() % 2**31,
            )
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
