"""FaceDataModule: any folder in the 140k layout (train/valid/test x fake/real), or the synthetic set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from fakeface import SPLITS
from fakeface.data.augment import check_augment
from fakeface.data.cache import (
    CACHE_AUGMENTS,
    CachedDataset,
    DecodedSplit,
    DeviceBatches,
    load_or_build,
)
from fakeface.data.dataset import FaceDataset, Tracked, collate_tracked
from fakeface.data.index import (
    concat_sources,
    folder_list,
    index_split,
    source_name,
    sources,
    split_folder,
)
from fakeface.errors import ConfigError, DatasetError
from fakeface.preprocess import IMAGE_SIZE

log = logging.getLogger(__name__)


class FaceDataModule(L.LightningDataModule):
    """Train on `train`, validate on `valid`, test on `test` (the original validated on test).

    Args:
        root: folder holding the split folders (layout=folder: the class folders), or a list
            of such folders, indexed together (each row of the index names its `source`);
            `~` is expanded. Required unless layout=folder reads a `split_file`.
        val_root: layout=folder: other folders (one or a list) to select and calibrate the
            model by, never trained on. Each is split, stratified and seeded, into
            `val_root_fraction` validation and the rest test; the validation split is then
            theirs alone, the test split stays that of `root` (evaluate scores a val_root's
            test part with data.root=<val_root> and the run's split.csv).
        classes: keep only these classes (the DCGAN trains on `[real]`); None = both, and then
            exactly two classes (fake, real) are required.
        synthetic: if given, generate the synthetic dataset into `root` first (kwargs of
            `fakeface.data.synthetic.generate_synthetic`: n_train, n_valid, n_test, seed).
        augment: training-split augmentation: a preset of augment.AUGMENTS (none, flip, robust,
            strong, source) or augment.STEPS joined by "+" (e.g. flip+resample+jpeg).
        train_crop: train on random train_crop x train_crop patches of the image_size images
            (validation and test read whole images); needs a fully convolutional model.arch.
        cache: decode each split once into a memory-mapped uint8 array under `cache_dir`.
        device_resident: keep each split's uint8 pixels on the training device and batch there
            (implies cache); no worker processes, no JPEG decoding during the epoch. With an
            augment the cache cannot do (anything but none and flip), the training split is
            read from the files by workers, and validation and test stay cached or resident.
        group_regex: layout=folder: split files whose name this regex matches by its first
            captured group (a person, a prompt's subject group), so that no group is in two
            splits; other files are split one by one.
        balance: draw training images so that each class gives half of every epoch and, within
            a class, every source folder (generator, real source) an equal share (sampling with
            replacement; the epoch keeps the training split's size unless epoch_size is set).
        epoch_size: with balance, training images drawn per epoch (null: the split's size).
        source_weights: with balance, {folder name: weight}: a source's share of its class is
            its weight over the class's total (unnamed folders weigh 1). A class folder
            (faces-dev/real) is named with its parent, faces-dev/real.
        face_crop: {"detector": <FaceDetector preset>, "margin": m}: every image cropped to its
            largest face as predict detect=true and serve crop it (fakeface.data.faceboxes);
            the boxes are found once and cached under `cache_dir`. None: whole images.
        on_bad_image: `skip` (count, log once, carry on) or `error` (stop at the first one).
        max_bad_fraction: stop with DatasetError once more than this fraction of a split was
            skipped as unreadable.
    """

    def __init__(
        self,
        root: str | list[str] | None = "data/synthetic",
        image_size: int = IMAGE_SIZE,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augment: str = "none",
        train_crop: int | None = None,
        classes: list[str] | None = None,
        train_split: str = "train",
        val_split: str = "valid",
        test_split: str = "test",
        on_bad_image: str = "skip",
        max_bad_fraction: float = 0.01,
        synthetic: dict[str, Any] | None = None,
        cache: bool = False,
        cache_dir: str = "data/cache",
        device_resident: bool = False,
        layout: str = "splits",
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        split_file: str | None = None,
        val_root: str | list[str] | None = None,
        val_root_fraction: float = 0.5,
        group_regex: str | None = None,
        balance: bool = False,
        epoch_size: int | None = None,
        source_weights: dict[str, float] | None = None,
        face_crop: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._check_settings()
        self.roots = [Path(r).expanduser() for r in folder_list(root)]
        self.root = self.roots[0] if self.roots else None  # the synthetic set's folder
        self.val_roots = [Path(r).expanduser() for r in folder_list(val_root)]
        self.classes = list(classes) if classes is not None else None
        self.frames: dict[str, pd.DataFrame] = {}
        self.skipped: dict[str, str] = {}  # unreadable file -> reason, in the main process
        self._split_by_path: dict[str, str] = {}  # for counting skips per split

    def _check_settings(self) -> None:
        """ConfigError (one line, naming the key and the fix) for settings that cannot work."""
        hp = self.hparams
        augment, image_size, crop = hp.augment, hp.image_size, hp.train_crop
        check_augment(augment)
        if augment not in CACHE_AUGMENTS and (hp.cache or hp.device_resident):
            # The cache holds resized pixels; these steps need the full-resolution image. The
            # recipe wins over the speed setting: only the training split is read from files.
            setting = "data.device_resident=true" if hp.device_resident else "data.cache=true"
            log.info(
                "data.augment=%s works on the full-resolution image: the training split is read "
                "from the image files (data.num_workers=%d workers); validation and test keep %s",
                augment, hp.num_workers, setting,
            )  # fmt: skip
        if crop is not None and not 0 < crop < image_size:
            raise ConfigError(
                f"data.train_crop={crop}: use a patch side between 1 and "
                f"data.image_size-1={image_size - 1}, or null for whole images"
            )
        if crop is not None and (hp.cache or hp.device_resident):
            raise ConfigError(
                "data.train_crop cannot run with data.cache=true or data.device_resident=true"
                "; set those to false (the patches are cut from decoded images per item)"
            )
        folder = hp.layout == "folder"
        if hp.root is None and not (folder and hp.split_file):
            where = "a folder holding real/ and fake/" if folder else "the data"
            raise ConfigError(
                f"data.root is not set: pass data.root=/path/to/folder ({where})"
                + (" or data.split_file=<run>/split.csv" if folder else "")
            )
        if folder_list(hp.val_root) and not folder:
            raise ConfigError("data.val_root needs data=folder (folders of class subfolders)")
        if not 0 < hp.val_root_fraction < 1:
            raise ConfigError(
                f"data.val_root_fraction={hp.val_root_fraction}: use a share in (0, 1), e.g. 0.5"
            )
        if hp.face_crop and (hp.cache or hp.device_resident):
            # as with the full-resolution augmentations, the recipe wins over the speed setting
            log.info("data.face_crop: every split is read from the image files (no cache)")
        if hp.face_crop and not {"detector", "margin"} <= set(hp.face_crop):
            raise ConfigError("data.face_crop needs keys detector (a preset) and margin, or null")
        if hp.balance and (hp.cache or hp.device_resident):
            # the balanced draws need the loader's sampler: the recipe wins over the speed setting
            log.info("data.balance=true: the training split is read from the image files")
        if hp.epoch_size is not None and (not hp.balance or hp.epoch_size < 1):
            raise ConfigError(
                f"data.epoch_size={hp.epoch_size}: needs data.balance=true and a count >= 1"
            )
        if not 0.0 <= hp.max_bad_fraction <= 1.0:
            raise ValueError(
                f"data.max_bad_fraction={hp.max_bad_fraction}: use a fraction in [0, 1]"
            )

    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from fakeface.data.synthetic import generate_synthetic

            generate_synthetic(self.root, **self.hparams.synthetic)

    def folder_split(self) -> pd.DataFrame:
        """layout=folder: every image with its assigned split (what the run saves as split.csv)."""
        hp = self.hparams
        if "all" not in self.frames:
            if hp.split_file:
                frame = pd.read_csv(Path(hp.split_file).expanduser())
                if self.roots or self.val_roots:  # only the rows of the folders asked for
                    wanted = {str(r.resolve()) for r in self.roots + self.val_roots}
                    frame = frame[sources(frame).isin(wanted)].reset_index(drop=True)
                    if frame.empty:
                        raise DatasetError(
                            f"data.split_file={hp.split_file} lists no image of "
                            f"{', '.join(sorted(wanted))}"
                        )
                frame.attrs["classes"] = sorted(frame["class_name"].unique())
            else:
                held_out = (0.0, hp.val_root_fraction, 1 - hp.val_root_fraction)
                fractions, regex = tuple(hp.split_fractions), hp.group_regex
                frame = concat_sources(
                    [split_folder(r, fractions, hp.split_seed, regex) for r in self.roots]
                    + [split_folder(r, held_out, hp.split_seed, regex) for r in self.val_roots]
                )
            self.frames["all"] = frame
        return self.frames["all"]

    def index(self, split: str) -> pd.DataFrame:
        """The index DataFrame of one split (image_path, label, class_name, split), cached."""
        if split in self.frames:
            return self.frames[split]
        layout = self.hparams.layout
        if layout == "folder":
            everything = self.folder_split()
            keep = (everything["split"] == split) | (split == "all")
            if self.val_roots and split != "all":
                # Validation from the val_root folders alone, training and test from data.root.
                val_sources = {str(r.resolve()) for r in self.val_roots}
                from_val_root = sources(everything).isin(val_sources)
                keep &= from_val_root if split == self.hparams.val_split else ~from_val_root
            if self.classes is not None:
                keep &= everything["class_name"].isin(self.classes)
            frame = everything[keep].reset_index(drop=True)
            frame.attrs["classes"] = everything.attrs["classes"]
            if frame.empty:
                raise DatasetError(
                    f"split {split!r} of {self.root} is empty: check split_fractions"
                )
        elif layout == "splits":
            splits = SPLITS if split == "all" else (split,)
            frame = concat_sources(
                [index_split(root, s, self.classes) for root in self.roots for s in splits]
            )
        else:
            raise DatasetError(f"data.layout={layout!r}: use 'splits' or 'folder'")
        found = frame.attrs["classes"]
        if self.classes is None and len(found) != 2:
            raise DatasetError(
                f"{self.root} ({split}) has {len(found)} class folders {found}; the classifier "
                "needs exactly two: fake/ and real/"
            )
        missing = set(found) - set(frame["class_name"])
        if self.classes is None and split == self.hparams.train_split and missing:
            raise DatasetError(
                f"the training split has no {'/'.join(sorted(missing))} images: data.root "
                f"({', '.join(str(r) for r in self.roots)}) needs folders of both classes"
            )
        self.frames[split] = frame
        return frame

    @property
    def class_names(self) -> list[str]:
        return self.index(self.hparams.train_split).attrs["classes"]

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None):
            self.train_set = self._dataset(hp.train_split, hp.augment, hp.train_crop)
            self.val_set = self._dataset(hp.val_split, "none")
        if stage in ("validate",):
            self.val_set = self._dataset(hp.val_split, "none")
        if stage in ("test", None):
            self.test_set = self._dataset(hp.test_split, "none")

    def decoded(self, split: str) -> DecodedSplit:
        """The split decoded into the uint8 cache (built on first use, reused while unchanged)."""
        hp = self.hparams
        return load_or_build(self.index(split), hp.cache_dir, hp.image_size, hp.num_workers)

    def _face_boxes(self, split: str) -> dict | None:
        """data.face_crop: the split's face boxes (found once, cached); None without face_crop."""
        crop = self.hparams.face_crop
        if not crop:
            return None
        from fakeface.data.faceboxes import face_boxes

        cache = Path(self.hparams.cache_dir).expanduser() / "faceboxes.csv"
        return face_boxes(list(self.index(split)["image_path"]), dict(crop["detector"]), cache)

    def _dataset(self, split: str, augment: str, crop: int | None = None) -> Dataset:
        hp = self.hparams
        if hp.face_crop:  # every split cut from the files (the cache holds whole images)
            return FaceDataset(
                self.index(split), hp.image_size, augment, hp.on_bad_image, crop,
                face_boxes=self._face_boxes(split), face_margin=float(hp.face_crop["margin"]),
            )  # fmt: skip
        from_files = augment not in CACHE_AUGMENTS or (hp.balance and split == hp.train_split)
        if from_files:  # full-resolution steps, or balanced draws: from the files (see __init__)
            return FaceDataset(self.index(split), hp.image_size, augment, hp.on_bad_image, crop)
        if hp.device_resident:
            return self.decoded(split)  # batched on the device by _loader
        if hp.cache:
            return CachedDataset(self.decoded(split), augment)
        return FaceDataset(self.index(split), hp.image_size, augment, hp.on_bad_image, crop)

    def _loader(self, dataset: Dataset | DecodedSplit, shuffle: bool) -> DataLoader | DeviceBatches:
        hp = self.hparams
        if isinstance(dataset, DecodedSplit):
            trainer = self.trainer
            return DeviceBatches(
                dataset,
                hp.batch_size,
                device=trainer.strategy.root_device if trainer else "cpu",
                shuffle=shuffle,
                augment=hp.augment if shuffle else "none",  # the training split only
                rank=trainer.global_rank if trainer else 0,
                world_size=trainer.world_size if trainer else 1,
                seed=torch.initial_seed() % 2**31,
            )
        sampler = self._balanced_sampler() if shuffle and hp.balance else None
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=collate_tracked,
        )

    def _balanced_sampler(self) -> WeightedRandomSampler:
        """data.balance: weights giving each class half and each source within it an equal share."""
        frame = self.index(self.hparams.train_split)  # the dataset's rows, in its order
        names = sources(frame).map(source_name)
        keys = frame["class_name"] + "|" + names
        # a source's share of its class: its weight (default 1) over the class's total weight
        wanted = dict(self.hparams.source_weights or {})
        unknown = set(wanted) - set(names)
        if unknown:
            raise ConfigError(
                f"data.source_weights names {sorted(unknown)}, not among the training folders "
                f"({', '.join(sorted(set(names)))})"
            )
        weight = names.map(lambda name: float(wanted.get(name, 1.0)))
        class_weight = frame["class_name"].map(
            weight.groupby(keys).first().groupby(lambda key: key.split("|")[0]).sum()
        )
        per_key = keys.map(keys.value_counts())
        weights = weight / (per_key * class_weight * frame["class_name"].nunique())
        size = self.hparams.epoch_size or len(frame)
        return WeightedRandomSampler(torch.as_tensor(weights.to_numpy()), size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the files skipped to make this batch (main process); hand on a plain tuple."""
        if not isinstance(batch, Tracked):
            return batch
        for path, reason in batch.skipped:
            self._record_skip(path, reason)
        return tuple(batch)

    @property
    def skipped_images(self) -> list[dict[str, str]]:
        """The unreadable files skipped so far, for metrics.json."""
        return [{"path": path, "reason": reason} for path, reason in self.skipped.items()]

    def _record_skip(self, path: str, reason: str) -> None:
        if path in self.skipped:
            return
        self.skipped[path] = reason
        log.warning("skipped unreadable image (data.on_bad_image=skip): %s: %s", path, reason)
        if path not in self._split_by_path:  # built on the first skip, again if splits were added
            self._split_by_path = {
                p: name for name, f in self.frames.items() if name != "all" for p in f["image_path"]
            }
        split = self._split_by_path.get(path)
        in_split = [p for p in self.skipped if self._split_by_path.get(p) == split]
        total = len(self.frames[split]) if split else len(self._split_by_path) or len(in_split)
        # Each DDP rank reads 1/world_size of the split and counts only its own skips.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        limit = self.hparams.max_bad_fraction * total / world_size
        if len(in_split) > limit:
            raise DatasetError(
                f"{len(in_split)} of {total // world_size} images read from split {split!r} are "
                f"unreadable, more than data.max_bad_fraction={self.hparams.max_bad_fraction} "
                f"(latest: {path}: {reason}); fix or delete those files, or raise "
                "data.max_bad_fraction"
            )
