"""Decoded cache: same batches as the JPEGs, reused while unchanged, rebuilt when the folder changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.data import cache
from fakeface.data.cache import DeviceBatches, chunk_size, load_or_build
from fakeface.data.datamodule import FaceDataModule
from fakeface.preprocess import load_image, resize_rgb


def _batches(dm: FaceDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup("fit")
    dm.setup("test")
    loader = {"valid": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_cached_batches_equal_jpeg_batches(face_folder: Path, tmp_path: Path) -> None:
    kwargs = dict(root=str(face_folder), batch_size=5, num_workers=0, cache_dir=str(tmp_path / "c"))
    x_jpeg, y_jpeg = _batches(FaceDataModule(**kwargs), "valid")
    x_cache, y_cache = _batches(FaceDataModule(**kwargs, cache=True), "valid")
    x_dev, y_dev = _batches(FaceDataModule(**kwargs, device_resident=True), "valid")
    assert torch.equal(x_jpeg, x_cache) and torch.equal(y_jpeg, y_cache)
    assert torch.equal(x_jpeg, x_dev) and torch.equal(y_jpeg, y_dev)


def test_cache_is_reused_then_rebuilt_when_the_folder_changes(
    face_folder: Path, tmp_path: Path
) -> None:
    dm = FaceDataModule(root=str(face_folder), num_workers=0, cache_dir=str(tmp_path / "c"))
    first = dm.decoded("test")
    path = Path(first.pixels.filename)
    stamp = path.stat().st_mtime_ns
    assert Path(FaceDataModule(**dm.hparams).decoded("test").pixels.filename) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten
    changed = face_folder / "test" / "real" / "000.jpg"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(stamp + 10**9, stamp + 10**9))
    rebuilt = FaceDataModule(**dm.hparams).decoded("test")
    assert Path(rebuilt.pixels.filename) != path
    red = rebuilt.pixels[len(rebuilt.labels) // 2].astype(int)  # the first real image, now red
    assert (abs(red - [255, 0, 0]) <= 3).all()  # JPEG rounding


def test_unreadable_files_are_left_out_of_the_cache(face_folder: Path, tmp_path: Path) -> None:
    (face_folder / "test" / "fake" / "001.jpg").write_bytes(b"not a jpeg")
    dm = FaceDataModule(root=str(face_folder), num_workers=0, cache_dir=str(tmp_path / "c"))
    decoded = dm.decoded("test")
    assert len(decoded.labels) == 11 and 1 not in decoded.rows.tolist()


def test_device_batches_shuffle_flip_and_shard(face_folder: Path, tmp_path: Path) -> None:
    dm = FaceDataModule(root=str(face_folder), num_workers=0, cache_dir=str(tmp_path / "c"))
    decoded = dm.decoded("train")
    plain = torch.cat([x for x, _ in DeviceBatches(decoded, 4, "cpu", shuffle=False)])
    shuffled = DeviceBatches(decoded, 4, "cpu", shuffle=True, augment="flip", seed=1)
    assert len(shuffled) == 3
    x, _ = zip(*shuffled, strict=True)
    x = torch.cat(x)
    # Every shuffled image is one of the originals, as is or mirrored.
    for image in x:
        assert any(torch.equal(image, p) or torch.equal(image, p.flip(-1)) for p in plain)
    halves = [DeviceBatches(decoded, 4, "cpu", shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    assert [len(h.labels) for h in halves] == [6, 6]


@pytest.mark.parametrize("workers", [0, 2])
def test_chunked_build_writes_each_kept_image_in_order(
    face_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Chunks of at most 5 images: the two unreadable files sit in different chunks.
    monkeypatch.setattr(cache, "CHUNK", 5)
    frame = FaceDataModule(root=str(face_folder), num_workers=workers).index("train")
    for bad in (2, 11):
        Path(frame["image_path"].iloc[bad]).write_bytes(b"not a jpeg")
    decoded = load_or_build(frame, tmp_path / "c", 32, num_workers=workers)
    rows = [i for i in range(len(frame)) if i not in (2, 11)]
    assert decoded.rows.tolist() == rows and decoded.pixels.shape == (len(rows), 32, 32, 3)
    for kept, row in enumerate(rows):
        expected = resize_rgb(load_image(frame["image_path"].iloc[row]), 32)
        assert np.array_equal(decoded.pixels[kept], expected)
    assert decoded.labels.tolist() == frame["label"].to_numpy()[rows].tolist()


def test_chunk_size_keeps_every_worker_busy() -> None:
    assert chunk_size(100_000, 16) == cache.CHUNK
    assert chunk_size(12, 2) == 2  # 6 chunks for 2 workers
    assert chunk_size(1, 0) == 1


def test_two_builds_of_one_split_at_once_both_finish(
    face_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDP ranks (or parallel runs sharing data.cache_dir) that build the same split at the same
    time: here a second build runs to the end while the first is decoding; both must finish
    with the same cache, and no temporary file may be left behind."""
    frame = FaceDataModule(root=str(face_folder), num_workers=0).index("test")
    real_loader = cache.DataLoader
    inner: list[cache.DecodedSplit | None] = []

    def loader_with_a_rival(*args: object, **kwargs: object) -> object:
        if not inner:  # the first build is under way: a rival starts and completes its own
            inner.append(None)  # (whose own loader is a plain one)
            inner[0] = load_or_build(frame, tmp_path / "c", 32, num_workers=0)
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(cache, "DataLoader", loader_with_a_rival)
    outer = load_or_build(frame, tmp_path / "c", 32, num_workers=0)
    assert np.array_equal(outer.pixels, inner[0].pixels) and len(outer.labels) == len(frame)
    assert np.array_equal(outer.rows, inner[0].rows)
    assert not [p.name for p in (tmp_path / "c").rglob("*tmp*")]
