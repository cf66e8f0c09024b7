"""Bench section `train`: the CNN training step (fp32 vs the fast path) and a real epoch through
Trainer.fit. `fit_rate` times the DCGAN too (bench/dcgan.py)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from fakeface.bench.common import classifier, median_rate, resident, row, synced_now
from fakeface.errors import ConfigError


class StepTimer(Callback):
    """Wall time of each training step (forward, backward, optimizer), data fetching excluded."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.batch_size = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        self._start = synced_now(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.durations.append(synced_now(module) - self._start)
        self.batch_size = len(batch[0])


def fit_rate(
    module: L.LightningModule,
    dm: L.LightningDataModule,
    precision: str,
    cfg: DictConfig,
    root: Path,
) -> float:
    """Training img/s: median step time over `steps` batches after `warmup` batches (Lightning);
    the step alone, without data loading, logging or callbacks (see `epoch_rate` for those)."""
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=cfg.warmup + cfg.steps,  # batches: the DCGAN steps twice per batch
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    if len(timer.durations) <= cfg.warmup:
        raise ConfigError(
            f"bench: the training split has only {len(timer.durations)} batches; lower "
            f"bench.warmup ({cfg.warmup}) and bench.steps ({cfg.steps}) or use more data"
        )
    return median_rate(timer.durations[cfg.warmup :], timer.batch_size)


class EpochTimer(Callback):
    """Images/s of a real training epoch: from the start of batch `warmup` to the end of fit
    (data loading, logging, callbacks and the epoch-end checkpoint included; no validation)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.seconds = warmup, 0, 0.0
        self._start: float | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            self._start = synced_now(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self._start is not None:
            self.images += len(batch[0])

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._start is not None:
            self.seconds = synced_now(module) - self._start

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def epoch_rate(
    module: L.LightningModule,
    dm: L.LightningDataModule,
    precision: str,
    cfg: DictConfig,
    root: Path,
) -> float:
    """Training img/s of one epoch through Trainer.fit with the training callbacks and a
    TensorBoard logger, as `fakeface.train` runs it, validation left out."""
    from lightning.pytorch.loggers import TensorBoardLogger

    timer = EpochTimer(cfg.bench.warmup)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = L.Trainer(
        accelerator=cfg.bench.accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=cfg.bench.epoch_batches,  # null: the whole training split
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(root / "epoch", name="tensorboard"),
        log_every_n_steps=10,
        enable_model_summary=False,
        default_root_dir=root / "epoch",
        callbacks=[*callbacks, timer],
    )
    trainer.fit(module, datamodule=dm)
    if not timer.images:
        raise ConfigError(
            f"bench: the training epoch has no batches after bench.warmup={cfg.bench.warmup}; "
            "lower bench.warmup or use more data"
        )
    return timer.rate


def bench_train(cfg: DictConfig, precisions: list[str], rows: list[dict], device: str) -> None:
    dm = resident(cfg)
    compiled = f", compile={cfg.model.compile}" if cfg.model.get("compile") else ""
    for precision in precisions:
        model = classifier(cfg)
        rate = fit_rate(model, dm, precision, cfg.bench, Path(cfg.paths.output_dir))
        rows.append(row("train", f"CNN {precision}{compiled}", rate, "img/s", target="train"))
    if compiled:  # the eager step beside it, as model.compile=null trains
        model = classifier(cfg, compile=None)
        rate = fit_rate(model, dm, precisions[-1], cfg.bench, Path(cfg.paths.output_dir))
        rows.append(row("train", f"CNN {precisions[-1]}, eager", rate, "img/s", target="train"))
    # The honest figure: a whole epoch through Trainer.fit, as configured (loader batch, optimizer
    # step size, model.compile) and, on a GPU, with loader batches of bench.epoch_gpu_batch_size:
    # one optimizer step each, and split into steps of data.batch_size (model.step_batch_size).
    batch, step = cfg.data.batch_size, cfg.model.get("step_batch_size")
    runs = [(batch, step)]
    big = cfg.bench.epoch_gpu_batch_size
    if device == "cuda" and big and big != batch:
        runs += [(big, None)] + ([(big, batch)] if big % batch == 0 else [])
    for size, step in runs:
        data = dm if size == batch else resident(cfg, batch_size=size)
        model = classifier(cfg, step_batch_size=step)
        rate = epoch_rate(model, data, precisions[-1], cfg, Path(cfg.paths.output_dir))
        steps = f" in steps of {step}" if step else ""
        name = f"CNN {precisions[-1]} epoch via Trainer.fit, batch {size}{steps}{compiled}"
        rows.append(row("train", name, rate, "img/s"))
        rows.append(row("train", f"  -> a 100k-image epoch, batch {size}{steps}", 1e5 / rate, "s"))
