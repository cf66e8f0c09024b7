"""The run's own Lightning callbacks, listed in conf/callbacks/: throughput and history for
metrics.json; the weights' moving average; crash-safe checkpoints (atomic writes, a `last.ckpt`
on Ctrl-C or SIGTERM)."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class EMAWeights(EMAWeightAveraging):
    """Lightning's EMA of the weights (callbacks.ema), tested and exported as it is checkpointed.

    A checkpoint's state_dict holds the average; Lightning's callback, loading one outside a fit
    (the test after training), puts the live weights back in, so the test would score weights
    that are never exported. Only a resumed fit needs the live weights.
    """

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temp file in its own folder, fsync, then `os.replace` it.

    A crash or kill while saving leaves the previous file intact and loadable. (Lightning's own
    save stages the bytes in the system temp folder and moves them over: a copy, not an atomic
    rename, when /tmp is another filesystem, and the whole checkpoint held twice in memory.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec's way
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden, per process, same folder: os.replace is atomic only within one filesystem.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (a power cut right after os.replace keeps the new file).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM during fit, save `last.ckpt` so that `ckpt_path=last` resumes there.

    Lightning 2.6 stops after the current batch on both (SIGTERM on every launcher, through its
    SIGTERMException) and calls `on_exception`, but saves nothing itself.

    Args:
        dirpath: where to save when there is no ModelCheckpoint (else its folder is used).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None

    def on_exception(
        self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if trainer.state.fn != TrainerFn.FITTING:
            return  # a checkpoint saved while testing would not resume a fit
        checkpoint = trainer.checkpoint_callback
        folder = Path(checkpoint.dirpath) if checkpoint and checkpoint.dirpath else self.dirpath
        path = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        # All DDP ranks get here together (Lightning broadcasts SIGTERM; Ctrl-C reaches the whole
        # process group), so the barrier inside save_checkpoint is met.
        trainer.save_checkpoint(path)
        self.saved = path
        signal_name = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        log.warning(
            "%s: saved %s (epoch %d, step %d); resume with ckpt_path=last",
            signal_name,
            path,
            trainer.current_epoch,
            trainer.global_step,
        )


class FinalCheckpoint(Callback):
    """At the end of a fit, write `last.ckpt` if its ModelCheckpoint skipped the final epoch.

    A `last.ckpt` saved every n epochs (experiment=dcgan_faces: every 25 short epochs) would
    otherwise miss the final weights whenever trainer.max_epochs is not a multiple of n.
    """

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            if callback.filename != ModelCheckpoint.CHECKPOINT_NAME_LAST or not callback.dirpath:
                continue
            # Lightning's own record of the step it last saved at (2.x)
            if getattr(callback, "_last_global_step_saved", -1) == trainer.global_step:
                continue
            path = Path(callback.dirpath) / f"{callback.filename}{ModelCheckpoint.FILE_EXTENSION}"
            trainer.save_checkpoint(path)
            log.info("saved the final weights to %s (epoch %d)", path, trainer.current_epoch)


class Throughput(Callback):
    """Training images/s over the training batches, data loading included, validation excluded."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._last = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        now = time.perf_counter()
        self.seconds += now - self._last
        self.images += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
        self._last = now

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


class History(Callback):
    """Per-epoch scalars (train/loss, val/acc, ...) for curves.png and metrics.json."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch}
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train/", "val/")) and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        self.epochs.append(row)


class RunEstimate(Callback):
    """Log what the fit will do before it starts, then how long it will take once measured.

    Two estimates, each logged once per fit: the training rate after the first few batches (the
    first batch, which pays for warm-up, is not timed), then the whole first epoch (validation
    and precise BN included) times the epochs left.

    Args:
        batches: training batches to time for the first estimate.
    """

    def __init__(self, batches: int = 10) -> None:
        self.batches = batches
        self._start = self._epoch_start = 0.0
        self._rate_logged = self._epoch_logged = False

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._rate_logged = self._epoch_logged = not trainer.is_global_zero
        if not trainer.is_global_zero:
            return
        val = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        log.info(
            "fit: %s training batches per epoch x %d epochs (epochs %d-%d), %s validation "
            "batches per epoch, precision %s",
            trainer.num_training_batches, trainer.max_epochs - trainer.current_epoch,
            trainer.current_epoch + 1, trainer.max_epochs, val, trainer.precision,
        )  # fmt: skip

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self._rate_logged:
            return
        if batch_idx == 0:
            self._start = time.perf_counter()  # timing starts after the warm-up batch
            return
        per_epoch = trainer.num_training_batches
        if batch_idx < min(self.batches, per_epoch - 1) or not math.isfinite(per_epoch):
            return
        self._rate_logged = True
        per_batch = (time.perf_counter() - self._start) / batch_idx
        left = per_batch * (
            per_epoch * (trainer.max_epochs - trainer.current_epoch) - batch_idx - 1
        )
        log.info(
            "measured %.1f training images/s over %d batches: training alone needs about %s "
            "more; validation, precise BN and the test come on top",
            len(batch[0]) / per_batch, batch_idx, _duration(left),
        )  # fmt: skip

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._epoch_logged or trainer.sanity_checking or not self._epoch_start:
            return
        self._epoch_logged = True
        epoch = time.perf_counter() - self._epoch_start
        left = epoch * (trainer.max_epochs - trainer.current_epoch - 1)
        log.info(
            "epoch %d took %s with validation: the fit ends in about %s",
            trainer.current_epoch + 1, _duration(epoch), _duration(left),
        )  # fmt: skip


def _duration(seconds: float) -> str:
    """3.2 min / 45 s / 1.5 h: a duration as people read it."""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
