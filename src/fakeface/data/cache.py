"""Decoded-image cache: each split decoded once into a memory-mapped uint8 array (N x S x S x 3).

`python -m fakeface.data.cache data.root=...` builds it ahead of time; `data.cache=true` builds or
reuses it during training. The cache stores the output of `fakeface.preprocess.resize_rgb`, so a
cached batch equals the batch decoded from the JPEGs (to_tensor of the same uint8 pixels).
The cache is reused while the source folder is unchanged (file list, sizes, mtimes) and rebuilt
otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from fakeface.cli import hydra_main
from fakeface.errors import BadImageError
from fakeface.preprocess import load_image, resize_rgb, to_tensor

log = logging.getLogger(__name__)

# The data.augment modes the cache can do: a flip of the resized pixels. robust/strong work on
# the full-resolution image, before the resize, which the cache no longer has.
CACHE_AUGMENTS = ("none", "flip")


def _check_cache_augment(augment: str) -> bool:
    """True if `augment` flips; ValueError for a mode the cache cannot do."""
    if augment not in CACHE_AUGMENTS:
        raise ValueError(
            f"data.augment={augment!r}: the decoded cache does only {' or '.join(CACHE_AUGMENTS)}"
        )
    return augment == "flip"


def fingerprint(frame: pd.DataFrame, size: int) -> str:
    """Hash of the file list, sizes and mtimes (cheap: stat only) and the image size."""
    digest = hashlib.sha256(f"size={size}".encode())
    for path in frame["image_path"]:
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


CHUNK = 256  # images one worker decodes and writes as one contiguous block of the cache


class _DecodeChunks(Dataset):
    """Item c: decode + resize images [c * chunk, (c + 1) * chunk) straight into rows of the
    memory-mapped cache file; returns (first row, kept mask: False for unreadable files).

    The worker writes its block into the file itself (the mapping is shared through the page
    cache), so no pixels cross a process boundary and nothing needs /dev/shm.
    """

    def __init__(self, paths: list[str], size: int, file: Path, chunk: int) -> None:
        self.paths, self.size, self.file, self.chunk = paths, size, file, chunk
        self._pixels: np.ndarray | None = None  # opened once in each process that reads items

    def __len__(self) -> int:
        return -(-len(self.paths) // self.chunk)

    def __getitem__(self, c: int) -> tuple[int, np.ndarray]:
        if self._pixels is None:
            self._pixels = np.load(self.file, mmap_mode="r+")
        start = c * self.chunk
        paths = self.paths[start : start + self.chunk]
        block = np.empty((len(paths), self.size, self.size, 3), np.uint8)
        kept = np.ones(len(paths), dtype=bool)
        for j, path in enumerate(paths):
            try:
                block[j] = resize_rgb(load_image(path), self.size)
            except BadImageError as err:
                log.warning("cache: skipping unreadable image: %s", err)
                kept[j] = False
        self._pixels[start : start + len(paths)] = block  # one contiguous write
        return start, kept


def chunk_size(n: int, workers: int) -> int:
    """Images per decoding chunk: CHUNK, smaller for small splits so every worker gets ~4."""
    return max(1, min(CHUNK, -(-n // max(1, 4 * workers))))


@dataclass
class DecodedSplit:
    """A cached split: pixels N x S x S x 3 uint8 (memory-mapped), labels N, source index rows N."""

    pixels: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # row of each cached image in the index DataFrame (bad files are absent)


def load_or_build(
    frame: pd.DataFrame, cache_dir: str | Path, size: int, num_workers: int = 2
) -> DecodedSplit:
    """Return the cached split for `frame`, decoding it first if missing or stale."""
    split = frame["split"].iloc[0]
    key = fingerprint(frame, size)
    folder = Path(cache_dir).expanduser() / f"{split}_{size}_{key[:16]}"
    meta_path = folder / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") == key:
        return _open(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Every file goes through a temporary name of its own and an atomic rename: processes that
    # build the same split at once (DDP ranks, parallel runs sharing data.cache_dir) each finish
    # with identical files, and none reads a half-written one.
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _build(frame, folder, size, num_workers, tag)
    meta = json.dumps({"fingerprint": key, "size": size, "n": len(frame)})
    tmp_meta = folder / f"meta.{tag}.tmp"
    tmp_meta.write_text(meta)
    os.replace(tmp_meta, meta_path)
    return _open(folder)


def _save(path: Path, array: np.ndarray, tag: str) -> None:
    """np.save to `path` through a temporary file named by `tag`, renamed into place."""
    tmp = path.with_name(f"{path.stem}.{tag}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _open(folder: Path) -> DecodedSplit:
    return DecodedSplit(
        pixels=np.load(folder / "pixels.npy", mmap_mode="r"),
        labels=np.load(folder / "labels.npy"),
        rows=np.load(folder / "rows.npy"),
    )


def _build(frame: pd.DataFrame, folder: Path, size: int, num_workers: int, tag: str) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    n = len(frame)
    tmp = folder / f"pixels.{tag}.tmp.npy"
    pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    del pixels  # the header is written; workers map the file and fill their own rows
    chunk = chunk_size(n, num_workers)
    loader = DataLoader(
        _DecodeChunks(frame["image_path"].tolist(), size, tmp, chunk),
        batch_size=None,  # one chunk per item: (first row, kept mask)
        num_workers=num_workers,
    )
    split = frame["split"].iloc[0]
    kept = np.ones(n, dtype=bool)
    start_time = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"caching {split}", total=n)
        for start, mask in loader:
            kept[start : start + len(mask)] = np.asarray(mask)
            progress.advance(task, len(mask))
    seconds = time.perf_counter() - start_time
    rate = n / max(seconds, 1e-9)
    log.info(
        "cache: %s, %d images in %.1f s (%.0f img/s, %d workers)",
        split,
        n,
        seconds,
        rate,
        num_workers,
    )
    rows = np.flatnonzero(kept)
    if len(rows) < n:  # unreadable files left holes: move the kept rows up, drop the tail
        pixels = np.load(tmp, mmap_mode="r+")
        for start in range(0, n, chunk):  # forward, chunk by chunk: never reads a moved row
            block = rows[(rows >= start) & (rows < start + chunk)]
            first = np.searchsorted(rows, start)
            pixels[first : first + len(block)] = pixels[block]
        pixels.flush()
        _save(tmp, pixels[: len(rows)], "kept")
        del pixels
    os.replace(tmp, folder / "pixels.npy")  # atomic: a crash never leaves a half cache in place
    _save(folder / "labels.npy", frame["label"].to_numpy()[rows], tag)
    _save(folder / "rows.npy", rows.astype(np.int64), tag)


class CachedDataset(Dataset):
    """(3 x S x S float in [0, 1], label) from a DecodedSplit; same values as FaceDataset.

    Args:
        augment: `none` or `flip` (random horizontal flip, p=0.5).
    """

    def __init__(self, split: DecodedSplit, augment: str = "none") -> None:
        self.split, self.flip = split, _check_cache_augment(augment)

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor(np.array(self.split.pixels[i]))
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, torch.tensor(int(self.split.labels[i]))


class DeviceBatches:
    """Batches straight from a uint8 tensor on the training device: shuffle, scale, flip there.

    No worker processes and no per-image Python work, so an epoch is bound by the model, not by
    JPEG decoding (the whole split must fit in device memory: 100k x 128 x 128 x 3 = 4.9 GB).

    Args:
        augment: `none` or `flip` (each image mirrored with probability 0.5).
        rank, world_size: shard for data-parallel training (each rank takes every world_size-th).
    """

    def __init__(
        self,
        split: DecodedSplit,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool,
        augment: str = "none",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        pixels = torch.from_numpy(np.array(split.pixels[rank::world_size]))  # a writable copy
        self.pixels = pixels.to(device)  # N x S x S x 3 uint8
        self.labels = torch.from_numpy(split.labels[rank::world_size]).long().to(device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.flip = _check_cache_augment(augment)
        self.generator = torch.Generator(device=self.pixels.device).manual_seed(seed + rank)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):  # noqa: ANN204 (yields (x, y) batches)
        n = len(self.labels)
        device = self.pixels.device
        if self.shuffle:
            order = torch.randperm(n, device=device, generator=self.generator)
        else:
            order = torch.arange(n, device=device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            x = to_tensor(self.pixels[index])  # N x 3 x S x S float in [0, 1]
            if self.flip:
                flip = torch.rand(len(index), device=device, generator=self.generator) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            yield x, self.labels[index]


@hydra_main("cache")
def main(cfg: DictConfig) -> None:
    """CLI: python -m fakeface.data.cache data.root=... : decode every split ahead of training."""
    from hydra.utils import instantiate

    # The cache stores un-augmented pixels: augmentation happens when batches are drawn.
    datamodule = instantiate(cfg.data, cache=True, augment="none")
    datamodule.prepare_data()
    for split in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split):
        decoded = datamodule.decoded(split)
        log.info("%s: %d images cached (%s)", split, len(decoded.labels), decoded.pixels.filename)


if __name__ == "__main__":
    main()
