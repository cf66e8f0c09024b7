"""The run's own Lightning callbacks, listed in conf/callbacks/: throughput and history for
metrics.json; crash-safe checkpoints (atomic writes, a `last.ckpt` on Ctrl-C or SIGTERM)."""

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
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


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


class GANMonitor(Callback):
    """The DCGAN's progress against its time budget: ETA lines, KID, and timed snapshots.

    Every `every_minutes` of training (the wall time `trainer.max_time` counts, carried over
    by a resumed run) it logs one console line with the elapsed time, the generator steps, the
    image rate and the time left to the budget; with `kid_samples` > 0 it also measures KID
    (fakeface.evaluation.kid: EfficientNet-Lite0 features, not Inception's) of that many
    samples of the (averaged) generator against the reference photos, logs it as `train/kid` and
    appends it to <run>/kid.csv. At each of `snapshot_minutes` it saves
    checkpoints/minute_MMM.ckpt and samples/minute_MMM.png, so a run can be scored at 10 or 30
    minutes afterwards.

    Args:
        every_minutes: minutes between two progress lines (and KID values).
        kid_samples: generated images per KID value (0: no KID).
        kid_reference: a folder of real face photos; null: up to `kid_reference_n` training
            images (the data module's decoded training split, data.device_resident or cache).
        kid_reference_n: reference images drawn from the folder or the training split.
        snapshot_minutes: training minutes at which to keep a checkpoint and a sample grid.
    """

    def __init__(
        self,
        every_minutes: float = 5.0,
        kid_samples: int = 200,
        kid_reference: str | None = None,
        kid_reference_n: int = 500,
        snapshot_minutes: list[float] | None = None,
    ) -> None:
        if every_minutes <= 0:
            raise ValueError(f"GANMonitor every_minutes={every_minutes}: must be > 0")
        if kid_samples == 1 or kid_samples < 0:
            raise ValueError(f"GANMonitor kid_samples={kid_samples}: 0 (off) or >= 2")
        self.every = every_minutes * 60
        self.kid_samples, self.kid_reference = kid_samples, kid_reference
        self.kid_reference_n = kid_reference_n
        self.snapshots = sorted(float(m) * 60 for m in (snapshot_minutes or []))
        self._features = self._reference = None
        self._next = self.every
        self._clock0 = time.perf_counter()
        self._images = 0
        self._kid_values = 0  # KID values measured in this fit
        self._rate_since = (0.0, 0)  # (elapsed s, images) at the last line, for the image rate

    def _elapsed(self, trainer: L.Trainer) -> float:
        """Training seconds so far, as trainer.max_time counts them (resumes included)."""
        from lightning.pytorch.callbacks import Timer

        for callback in trainer.callbacks:
            if isinstance(callback, Timer):
                return callback.time_elapsed("train")
        return time.perf_counter() - self._clock0

    def _left(self, trainer: L.Trainer) -> float | None:
        """Seconds left to trainer.max_time (None without one)."""
        from lightning.pytorch.callbacks import Timer

        for callback in trainer.callbacks:
            if isinstance(callback, Timer):
                return callback.time_remaining("train")
        return None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        # Here, not in on_train_start: the reference features (a minute on 2 busy cores) are
        # then computed before trainer.max_time starts counting.
        if stage != "fit" or not trainer.is_global_zero or not self.kid_samples:
            return
        from fakeface.evaluation.kid import KIDFeatures

        self._features = KIDFeatures(module.device)
        self._reference = self._features(self._reference_images(trainer, module))
        log.info(
            "KID: %d reference images, %d samples a value", len(self._reference), self.kid_samples
        )

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._clock0 = time.perf_counter()
        elapsed = self._elapsed(trainer)
        # A resumed run continues the schedule where the budget stands, not from zero.
        self._next = (math.floor(elapsed / self.every) + 1) * self.every
        self.snapshots = [s for s in self.snapshots if s > elapsed]
        self._rate_since = (elapsed, 0)

    def _reference_images(self, trainer: L.Trainer, module: L.LightningModule) -> torch.Tensor:
        """Up to kid_reference_n reference images, N x 3 x S x S float in [0, 1] (S: the GAN's)."""
        import numpy as np

        size = module.hparams.image_size
        if self.kid_reference:
            from fakeface.evaluation.ganreport import load_images

            pixels = load_images(self.kid_reference, size=size, key="kid_reference")
        else:
            data = trainer.datamodule
            if not hasattr(data, "decoded") or not (
                data.hparams.device_resident or data.hparams.cache
            ):
                raise ValueError(
                    "GANMonitor: give callbacks.gan_monitor.kid_reference=<folder of real faces> "
                    "(the training images are at hand only with data.device_resident or data.cache)"
                )
            pixels = data.decoded(data.hparams.train_split).pixels
        pick = np.random.default_rng(0).permutation(len(pixels))[: self.kid_reference_n]
        return torch.from_numpy(np.asarray(pixels)[np.sort(pick)]).permute(0, 3, 1, 2).float() / 255

    def kid(self, module: L.LightningModule) -> float:
        """KID of kid_samples fresh samples (seed 0: the same z every time) to the reference."""
        from fakeface.evaluation.kid import kid

        z = torch.randn(
            self.kid_samples, module.hparams.latent_dim, generator=torch.Generator().manual_seed(0)
        )
        return kid(self._features(module.sample(z)), self._reference)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._images += len(batch[0])
        elapsed = self._elapsed(trainer)
        if self.snapshots and elapsed >= self.snapshots[0]:
            minute = round(self.snapshots.pop(0) / 60)
            self._snapshot(trainer, module, minute)
        if elapsed >= self._next:
            self._next = (math.floor(elapsed / self.every) + 1) * self.every
            self._report(trainer, module, elapsed)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # The final line; its KID only after a run long enough to have a curve (a smoke run of
        # a few batches skips the 200 samples through EfficientNet).
        self._report(trainer, module, self._elapsed(trainer), kid=self._kid_values > 0)

    def _snapshot(self, trainer: L.Trainer, module: L.LightningModule, minute: int) -> None:
        import torchvision

        from fakeface.models.dcgan import sample_grid

        root = Path(trainer.default_root_dir)
        trainer.save_checkpoint(root / "checkpoints" / f"minute_{minute:03d}.ckpt")
        if trainer.is_global_zero:
            (root / "samples").mkdir(parents=True, exist_ok=True)
            torchvision.utils.save_image(
                sample_grid(module.sample()), root / "samples" / f"minute_{minute:03d}.png"
            )
            log.info(
                "minute %d: saved checkpoints/minute_%03d.ckpt and samples/minute_%03d.png",
                minute,
                minute,
                minute,
            )

    def _report(
        self, trainer: L.Trainer, module: L.LightningModule, elapsed: float, kid: bool = True
    ) -> None:
        if not trainer.is_global_zero:
            return
        since, images = self._rate_since
        rate = (self._images - images) / max(elapsed - since, 1e-9)
        self._rate_since = (elapsed, self._images)
        steps = trainer.global_step // 2  # global_step counts both optimizers' steps
        line = f"{_duration(elapsed)} trained, {steps} generator steps, {rate:.1f} img/s"
        left = self._left(trainer)
        if left is not None:
            left, budget = max(left, 0.0), elapsed + max(left, 0.0)
            end = time.strftime("%H:%M", time.localtime(time.time() + left))
            line += f"; {100 * elapsed / budget:.0f}% of the {_duration(budget)} budget, ends in about {_duration(left)} ({end})"
        if self._features is not None and kid:
            value = self.kid(module)
            self._kid_values += 1
            for logger in trainer.loggers:
                logger.log_metrics({"train/kid": value}, step=trainer.global_step)
            path = Path(trainer.default_root_dir) / "kid.csv"
            new = not path.is_file()
            with open(path, "a") as f:
                f.write("seconds,generator_steps,kid\n" if new else "")
                f.write(f"{elapsed:.0f},{steps},{value:.6f}\n")
            line += f"; KID {value:.4f}"
        log.info(line)
