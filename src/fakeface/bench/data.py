"""Bench section `data`: batches from a JPEG folder vs from the decoded cache."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fakeface.bench.common import row


def loader_rate(loader: Any, batches: int, warmup: int) -> float:
    """Images/s delivered by a data loader (workers' start-up paid in the warm-up)."""

    def endless() -> Any:
        while True:
            yield from loader

    stream = endless()
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    count = sum(len(next(stream)[0]) for _ in range(batches))
    return count / (time.perf_counter() - start)


def datamodule(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    dm = instantiate(cfg.data, _convert_="all", **overrides)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def bench_data(cfg: DictConfig, rows: list[dict]) -> None:
    b = cfg.bench
    jpeg = datamodule(cfg, cache=False, device_resident=False)
    rate = loader_rate(jpeg.train_dataloader(), b.data_batches, b.warmup)
    rows.append(row("data", f"JPEG folder, {cfg.data.num_workers} workers", rate, "img/s"))
    start = time.perf_counter()
    cached = datamodule(cfg, cache=True, device_resident=False)
    rows.append(
        row("data", "decoded cache: build or reuse (all splits)", time.perf_counter() - start, "s")
    )
    rate = loader_rate(cached.train_dataloader(), b.data_batches, b.warmup)
    rows.append(row("data", f"decoded cache, {cfg.data.num_workers} workers", rate, "img/s"))
