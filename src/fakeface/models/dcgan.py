"""DCGAN: the original project's generator and one-logit discriminator, trained adversarially.

Label convention (the same as the dataset's class ids, fake=0 and real=1): the discriminator is
taught real=1 and generated=0; the generator is trained towards D(G(z)) = 1 ("real"). The original
Keras code used the opposite coding (generated=1); the game is the same either way.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger

from fakeface.errors import ConfigError, DivergenceError
from fakeface.models.diffaugment import diffaugment, parse_diffaugment
from fakeface.models.nets import G_NORMS, DCGANDiscriminator, Discriminator, Generator

log = logging.getLogger(__name__)

GENERATOR_SIZE = 128  # the original generator makes 128 x 128 images (other sides: nets.Generator)
G_LOSSES = ("bce", "feature_matching")
DISCRIMINATORS = ("seed_cnn", "dcgan")


def sample_grid(images: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """A near-square grid (ceil(sqrt(N)) columns) of N x 3 x H x W images in [0, 1]."""
    columns = max(1, math.ceil(math.sqrt(len(images))))
    return torchvision.utils.make_grid(images, nrow=columns, padding=padding)


class DCGAN(L.LightningModule):
    """The original DCGAN recipe: Adam 1e-4 for both nets, BCE on logits, noisy labels.

    Args:
        latent_dim: size of the noise vector z (128 in the original).
        image_size: side of the training images and of the generated ones: 128 is the original
            generator, any other power of two >= 16 gets one x2 stage per doubling from 8 x 8.
        lr: Adam learning rate of both networks.
        betas: Adam betas; Keras' defaults (0.9, 0.999) as the original, (0.5, 0.999) in the paper.
        label_noise: the discriminator's targets move by label_noise * U(0, 1) towards 0.5.
        n_samples: images drawn from the fixed noise after every epoch (10 in the original).
        sample_seed: seed of that fixed noise; the noise itself is stored in the checkpoint.
        g_loss: the generator's objective. `bce` (the original): D(G(z)) towards "real".
            `feature_matching` (Salimans et al. 2016): the batch mean of D's last conv features
            (64 x 13 x 13, before dropout) on generated images towards their mean on real ones.
        channels_last: run both convnets in NHWC (about 2x faster on CPU, fp32 and bf16 alike).
        discriminator: `seed_cnn` (the original: the SeedCNN body with one logit) or `dcgan`
            (the DCGAN paper's: strided convs, BatchNorm, LeakyReLU; nets.DCGANDiscriminator).
        diffaugment: null (off, the original) or a comma-separated subset of
            "color,translation,cutout": differentiable augmentation of real and generated images
            before D, in the D step and the G step alike (Zhao et al. 2020).
        g_ema: decay of an exponential moving average of G's weights (e.g. 0.999), updated after
            every G step; samples and `fakeface.generate` then use the average. null: off.
        lr_g, lr_d: Adam learning rates of G and D (two time-scale update rule); null = lr.
        g_norm: `none` (the original generator) or `batch` (BatchNorm in the generator).
        sample_every: write the fixed-noise samples every this many epochs (and after the
            first and the last epoch); 1 = every epoch, as the original.
        g_width: channels of G's last stage, doubled towards the 8 x 8 map; null = the
            original's widths (nets.Generator).
        d_width: channels of the `dcgan` discriminator's first block (64 in the paper), doubled
            per block. The two widths set most of a step's cost on a CPU.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        image_size: int = GENERATOR_SIZE,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        label_noise: float = 0.05,
        n_samples: int = 10,
        sample_seed: int = 0,
        channels_last: bool = True,
        g_loss: str = "bce",
        discriminator: str = "seed_cnn",
        diffaugment: str | None = None,
        g_ema: float | None = None,
        lr_g: float | None = None,
        lr_d: float | None = None,
        g_norm: str = "none",
        sample_every: int = 1,
        g_width: int | None = None,
        d_width: int = 64,
    ) -> None:
        super().__init__()
        if g_loss not in G_LOSSES:
            raise ConfigError(f"model.g_loss={g_loss!r}: use one of {', '.join(G_LOSSES)}")
        if discriminator not in DISCRIMINATORS:
            raise ConfigError(
                f"model.discriminator={discriminator!r}: use one of {', '.join(DISCRIMINATORS)}"
            )
        if g_norm not in G_NORMS:
            raise ConfigError(f"model.g_norm={g_norm!r}: use one of {', '.join(G_NORMS)}")
        self.augments = parse_diffaugment(diffaugment)
        if g_ema is not None and not 0.0 < g_ema < 1.0:
            raise ConfigError(f"model.g_ema={g_ema}: give a decay in (0, 1), e.g. 0.999, or null")
        for key, value in (("lr", lr), ("lr_g", lr_g), ("lr_d", lr_d)):
            if value is not None and value <= 0:
                raise ConfigError(f"model.{key}={value}: must be > 0")
        if d_width != 64 and discriminator != "dcgan":  # the SeedCNN body has no width knob
            raise ConfigError(f"model.d_width={d_width} needs model.discriminator=dcgan")
        if sample_every < 1:
            raise ConfigError(f"model.sample_every={sample_every}: must be >= 1 (epochs)")
        if n_samples < 1:
            raise ValueError(f"DCGAN n_samples={n_samples}: need at least one sample image")
        # Plain floats: a Hydra ListConfig in the hyperparameters would not load with weights_only.
        betas = (float(betas[0]), float(betas[1]))
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped by hand in training_step
        self.generator = Generator(latent_dim, norm=g_norm, image_size=image_size, width=g_width)
        if discriminator == "dcgan":
            self.discriminator = DCGANDiscriminator(width=d_width, image_size=image_size)
        else:
            self.discriminator = Discriminator(image_size)
        if channels_last:
            # NHWC weights make the (transposed) convolutions pick NHWC kernels for their outputs too
            self.generator = self.generator.to(memory_format=torch.channels_last)
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        # The averaged generator: no optimizer, no gradients; always run in eval mode.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if g_ema else None
        fixed = torch.Generator().manual_seed(sample_seed)
        # n_samples x latent_dim; a buffer, so it moves with the module and lives in the checkpoint.
        self.register_buffer("sample_z", torch.randn(n_samples, latent_dim, generator=fixed))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: N x latent_dim -> N x 3 x S x S images in [0, 1] (S = image_size)
        return self.generator(z)

    def train(self, mode: bool = True) -> DCGAN:
        super().train(mode)
        if self.generator_ema is not None:  # its BatchNorm statistics come from G, not batches
            self.generator_ema.eval()
        return self

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """`images` in the memory format D's weights use (NHWC with channels_last)."""
        if self.hparams.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return diffaugment(images, self.augments) if self.augments else images

    def _judge(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits (N, float32) for N x 3 x S x S images (augmented if on)."""
        return self.discriminator(self._layout(self._augment(images))).float()

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """D's last conv block output (N x C*H*W, float32; 64*13*13 for seed_cnn)."""
        x = self._layout(self._augment(images))
        return self.discriminator.conv_features(x).float().flatten(1)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """generator_ema <- decay * generator_ema + (1 - decay) * generator; buffers copied."""
        ema, live = self.generator_ema, self.generator
        ema_params = [p for p in ema.parameters()]
        live_params = [p.detach() for p in live.parameters()]
        torch._foreach_lerp_(ema_params, live_params, 1.0 - self.hparams.g_ema)
        for mine, theirs in zip(ema.buffers(), live.buffers(), strict=True):
            mine.copy_(theirs)  # BatchNorm running statistics of the live generator

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, device=self.device)

    def _check_finite(self, name: str, loss: torch.Tensor, batch_idx: int) -> None:
        """Raise DivergenceError (before backward/step) if `loss` is NaN or infinite."""
        if torch.isfinite(loss).item():  # one host sync per step: cheap next to the two convnets
            return
        # Checkpoints are written only after a finished epoch: the newest one is good.
        callback = self.trainer.checkpoint_callback
        last = callback.best_model_path if callback else ""
        keep = (
            f"the last good checkpoint is {last}"
            if last
            else "no checkpoint was written yet (no epoch finished)"
        )
        message = (
            f"DCGAN diverged: the {name} loss is {loss.item()} at epoch {self.current_epoch}, "
            f"batch {batch_idx} (optimizer step {self.trainer.global_step}). Training stopped; "
            f"{keep}. Try a lower model.lr, model.betas=[0.5,0.999] or trainer.precision=32-true."
        )
        log.error(message)
        raise DivergenceError(message)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real = batch[0]  # N x 3 x S x S in [0, 1]; the class labels are all one class: unused
        n = len(real)
        opt_d, opt_g = self.optimizers()
        ones = torch.ones(n, device=self.device)
        zeros = torch.zeros(n, device=self.device)

        # 1) Discriminator on one batch of N real + N generated images (as the original).
        with self.toggled_optimizer(opt_d):
            fake = self.generator(self._noise(n)).detach()
            logits = self._judge(torch.cat([real, fake.to(real.dtype)]))  # 2N: real, then fake
            labels = torch.cat([ones, zeros])
            # Label noise of size label_noise * U(0, 1), as the original, but pointed towards 0.5
            # (real 1 -> 1 - u, generated 0 -> 0 + u): targets above 1 would make BCE-with-logits
            # unbounded below (Keras clipped probabilities; logits have no clip).
            noise = self.hparams.label_noise * torch.rand_like(labels)
            targets = labels + noise * (1 - 2 * labels)
            d_loss = F.binary_cross_entropy_with_logits(logits, targets)
            self._check_finite("discriminator", d_loss, batch_idx)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()

        # 2) Generator on fresh noise, towards D saying "real" (no label noise, as the original).
        # D judges the fakes inside the same kind of batch it was trained on (N real + N fake, BN in
        # train mode), so G is scored by exactly the function the D step shaped. An all-fake batch
        # would be normalised by its own statistics, which hides how fakes differ from real faces;
        # eval-mode BN (running statistics) is a different function again, one that G learned to
        # fool while the trained D still rejected its images (d_fake 0.03 at g_loss log 2).
        # Feature matching asks G for fakes whose average D features match the faces': a target
        # that stays informative when D wins outright, and one a single flat colour cannot meet.
        with self.toggled_optimizer(opt_g):
            fake = self.generator(self._noise(n))
            mixed = torch.cat([real, fake.to(real.dtype)])
            if self.hparams.g_loss == "bce":
                g_loss = F.binary_cross_entropy_with_logits(self._judge(mixed)[n:], ones)
            else:
                features = self._features(mixed)
                g_loss = F.mse_loss(features[n:].mean(0), features[:n].mean(0).detach())
            self._check_finite("generator", g_loss, batch_idx)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
        if self.generator_ema is not None:
            self._update_ema()

        probs = logits.detach().sigmoid()
        metrics = {
            "train/d_loss": d_loss.detach(),
            "train/g_loss": g_loss.detach(),
            "train/d_real": probs[:n].mean(),  # mean D(x): 1 = real faces recognised
            "train/d_fake": probs[n:].mean(),  # mean D(G(z)) before the G step: 1 = D fooled
        }
        self.log_dict(metrics, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """Images (float32 on the CPU, N x 3 x S x S in [0, 1]) for `z`, or the fixed noise.

        Drawn by the averaged generator when model.g_ema is on (and `ema`), else by G, in eval
        mode (BatchNorm with its running statistics; the same image for a z in any batch).
        """
        z = self.sample_z if z is None else z.to(self.device)
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z).float().cpu().contiguous()  # NCHW again, for saving
        finally:
            net.train(was_training and net is self.generator)

    def on_train_epoch_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        epoch, every = self.current_epoch, self.hparams.sample_every
        max_epochs = self.trainer.max_epochs or -1  # -1: no epoch limit (max_time, max_steps)
        last = self.trainer.should_stop or 0 < max_epochs <= epoch + 1
        if epoch % every and not last:
            return
        images = self.sample()
        grid = sample_grid(images)
        out = Path(self.trainer.default_root_dir) / "samples"
        (out / f"epoch_{epoch:03d}").mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(grid, out / f"epoch_{epoch:03d}.png")
        for i, image in enumerate(images):
            torchvision.utils.save_image(image, out / f"epoch_{epoch:03d}" / f"{i:02d}.png")
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                # step = epoch: the image slider then counts epochs, like the PNG names
                logger.experiment.add_image("samples/fixed_noise", grid, global_step=epoch)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        betas = tuple(hp.betas)
        lr_d = hp.get("lr_d") or hp.lr  # .get: checkpoints from before these keys
        lr_g = hp.get("lr_g") or hp.lr
        # One fused kernel per optimizer on CUDA, multi-tensor ops elsewhere, as the classifier's
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr_d, betas=betas, **fast)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr_g, betas=betas, **fast)
        return [opt_d, opt_g]  # the order training_step steps them in
