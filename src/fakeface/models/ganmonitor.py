"""The DCGAN's progress against its time budget (callbacks.gan_monitor of experiment=dcgan_cpu):
an ETA line, KID during training, and checkpoints at set minutes."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from fakeface.models.callbacks import _duration

log = logging.getLogger(__name__)


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
                # step = training batches, the x axis of Lightning's own train/* scalars
                logger.log_metrics({"train/kid": value}, step=steps)
            path = Path(trainer.default_root_dir) / "kid.csv"
            new = not path.is_file()
            with open(path, "a") as f:
                f.write("seconds,generator_steps,kid\n" if new else "")
                f.write(f"{elapsed:.0f},{steps},{value:.6f}\n")
            line += f"; KID {value:.4f}"
        log.info(line)
