"""DCGAN: the original project's generator and one-logit discriminator, trained adversarially.

Label convention (the same as the dataset's class ids, fake=0 and real=1): the discriminator is
taught real=1 and generated=0; the generator is trained towards D(G(z)) = 1 ("real"). The original
Keras code used the opposite coding (generated=1); the game is the same either way.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger

from fakeface.errors import DivergenceError
from fakeface.models.nets import Discriminator, Generator

log = logging.getLogger(__name__)

GENERATOR_SIZE = 128  # the original generator always makes 128 x 128 images
G_LOSSES = ("bce", "feature_matching")


def sample_grid(images: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """A near-square grid (ceil(sqrt(N)) columns) of N x 3 x H x W images in [0, 1]."""
    columns = max(1, math.ceil(math.sqrt(len(images))))
    return torchvision.utils.make_grid(images, nrow=columns, padding=padding)


class DCGAN(L.LightningModule):
    """The original DCGAN recipe: Adam 1e-4 for both nets, BCE on logits, noisy labels.

    Args:
        latent_dim: size of the noise vector z (128 in the original).
        image_size: side of the training images; must be 128, the generator's output size.
        lr: Adam learning rate of both networks.
        betas: Adam betas; Keras' defaults (0.9, 0.999) as the original, (0.5, 0.999) in the paper.
        label_noise: the discriminator's targets move by label_noise * U(0, 1) towards 0.5.
        n_samples: images drawn from the fixed noise after every epoch (10 in the original).
        sample_seed: seed of that fixed noise; the noise itself is stored in the checkpoint.
        g_loss: the generator's objective. `bce` (the original): D(G(z)) towards "real".
            `feature_matching` (Salimans et al. 2016): the batch mean of D's last conv features
            (64 x 13 x 13, before dropout) on generated images towards their mean on real ones.
        channels_last: run both convnets in NHWC (about 2x faster on CPU, fp32 and bf16 alike).
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
    ) -> None:
        super().__init__()
        if g_loss not in G_LOSSES:
            raise ValueError(f"DCGAN g_loss={g_loss!r}: use one of {', '.join(G_LOSSES)}")
        if image_size != GENERATOR_SIZE:
            raise ValueError(
                f"DCGAN image_size={image_size}: the original generator makes "
                f"{GENERATOR_SIZE}x{GENERATOR_SIZE} images; set data.image_size={GENERATOR_SIZE}"
            )
        if n_samples < 1:
            raise ValueError(f"DCGAN n_samples={n_samples}: need at least one sample image")
        # Plain floats: a Hydra ListConfig in the hyperparameters would not load with weights_only.
        betas = (float(betas[0]), float(betas[1]))
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped by hand in training_step
        self.generator = Generator(latent_dim)
        self.discriminator = Discriminator(image_size)
        if channels_last:
            # NHWC weights make the (transposed) convolutions pick NHWC kernels for their outputs too
            self.generator = self.generator.to(memory_format=torch.channels_last)
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        fixed = torch.Generator().manual_seed(sample_seed)
        # n_samples x latent_dim; a buffer, so it moves with the module and lives in the checkpoint.
        self.register_buffer("sample_z", torch.randn(n_samples, latent_dim, generator=fixed))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: N x latent_dim -> N x 3 x 128 x 128 images in [0, 1]
        return self.generator(z)

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """`images` in the memory format D's weights use (NHWC with channels_last)."""
        if self.hparams.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _judge(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits (N, float32) for N x 3 x 128 x 128 images."""
        return self.discriminator(self._layout(images)).float()

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """D's last conv block output (N x 64*13*13, float32), before its final dropout."""
        return self.discriminator.features[:-1](self._layout(images)).float().flatten(1)

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
        real = batch[0]  # N x 3 x 128 x 128 in [0, 1]; the class labels are all one class: unused
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

        probs = logits.detach().sigmoid()
        metrics = {
            "train/d_loss": d_loss.detach(),
            "train/g_loss": g_loss.detach(),
            "train/d_real": probs[:n].mean(),  # mean D(x): 1 = real faces recognised
            "train/d_fake": probs[n:].mean(),  # mean D(G(z)) before the G step: 1 = D fooled
        }
        self.log_dict(metrics, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images (float32 on the CPU, N x 3 x 128 x 128 in [0, 1]) for `z`, or the fixed noise."""
        z = self.sample_z if z is None else z.to(self.device)
        return self.generator(z).float().cpu().contiguous()  # NCHW again, for saving

    def on_train_epoch_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        images = self.sample()
        grid = sample_grid(images)
        epoch = self.current_epoch
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
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=betas)
        return [opt_d, opt_g]  # the order training_step steps them in
