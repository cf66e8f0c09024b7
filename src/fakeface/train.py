"""Training entry point: python -m fakeface.train experiment=cnn data=synthetic"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from fakeface.checkpointing import AtomicCheckpointIO, InterruptCheckpoint
from fakeface.cli import ConfigError, one_line_errors
from fakeface.models.classifier import CNNClassifier
from fakeface.precision import resolve_precision

log = logging.getLogger(__name__)


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


def save_curves(history: list[dict[str, float]], path: Path) -> None:
    """Accuracy and loss, train vs val, per epoch (the original's two plots); else every metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {key.split("/", 1)[1] for row in history for key in row if "/" in key}
    # Models without acc/loss (the DCGAN: d_loss, g_loss, d_real, d_fake) get one panel per metric.
    names = [name for name in ("acc", "loss") if name in present] or sorted(present)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    epochs = [row["epoch"] + 1 for row in history]
    for ax, name in zip(axes[0], names, strict=True):
        for stage in ("train", "val"):
            values = [row.get(f"{stage}/{name}", math.nan) for row in history]
            if all(math.isnan(v) for v in values):
                continue  # e.g. no val/d_loss: a GAN has no validation loop
            ax.plot(epochs, values, marker="o", label=stage)
        ax.set(xlabel="epoch", ylabel=name, title=f"{name}: train vs val")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def find_last_checkpoint(log_dir: Path, task_name: str, exclude: Path) -> Path:
    """The newest `last.ckpt` among earlier runs of this task (for ckpt_path=last)."""
    candidates = [
        p
        for p in (log_dir / task_name).glob("*/*/checkpoints/last.ckpt")
        if exclude not in p.parents
    ]
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path=last: no earlier run of task {task_name!r} has a last.ckpt under "
            f"{log_dir / task_name}; give ckpt_path=<file.ckpt> or start without ckpt_path"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


# key -> (smallest valid value, an example): caught here with a message, not deep in a library
# (or, for trainer.max_epochs=-1, silently: Lightning reads -1 as "train forever").
WHOLE_NUMBERS = {
    "data.batch_size": (1, 32),
    "data.num_workers": (0, 2),
    "data.image_size": (1, 128),
    "trainer.max_epochs": (1, 15),
}


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and a valid value for common wrong types and ranges."""
    for key, (smallest, example) in WHOLE_NUMBERS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < smallest
        ):
            raise ConfigError(
                f"{key}={value!r}: must be a whole number >= {smallest}, e.g. {key}={example}"
            )
    lr = OmegaConf.select(cfg, "model.lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"model.lr={lr!r}: must be a positive number, e.g. model.lr=0.01")
    if (
        OmegaConf.select(cfg, "data.train_crop")
        and OmegaConf.select(cfg, "model.arch") == "seed_cnn"
    ):
        raise ConfigError(
            "data.train_crop needs a model that reads any image size; the seed_cnn's dense layer "
            "fixes its input at data.image_size: use e.g. model.arch=resnet18, or data.train_crop=null"
        )


def check_ddp_sweep(trainer: L.Trainer) -> None:
    """Refuse a -m sweep whose DDP processes Lightning would start: each re-runs the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if trainer.world_size == 1 or not HydraConfig.initialized():
        return
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return  # SLURM (hydra/launcher=slurm) or torchrun started every process
    raise ConfigError(
        "a -m sweep with several DDP processes on one machine: Lightning would re-run the whole "
        "sweep in each process; run the sweep points one at a time, or submit them with "
        "hydra/launcher=slurm"
    )


def gather_skipped(trainer: L.Trainer, skipped: list[dict[str, str]]) -> list[dict[str, str]]:
    """The unreadable images skipped on every DDP rank (each rank reads only its own shard)."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return skipped
    ranks: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(ranks, skipped)
    return list({item["path"]: item for rank in ranks for item in rank}.values())


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, export it, and write metrics.json + curves.png."""
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    # Plain lists/dicts, not DictConfig: hyperparameters travel into checkpoints, and torch.load's
    # weights_only=True (the safe default) refuses OmegaConf objects.
    datamodule: L.LightningDataModule = instantiate(cfg.data, _convert_="all")
    model: L.LightningModule = instantiate(cfg.model, _convert_="all")
    throughput, history = Throughput(), History()
    # A group entry set to null on the command line (callbacks.progress_bar=null) is switched off.
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(
        trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto")
    )
    log.info("precision: %s", trainer_cfg["precision"])
    trainer: L.Trainer = instantiate(
        trainer_cfg,
        callbacks=[*callbacks, throughput, history, InterruptCheckpoint(out_dir / "checkpoints")],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],  # a kill while saving leaves the previous file loadable
    )
    check_ddp_sweep(trainer)
    for lg in loggers:
        lg.log_hyperparams(
            {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
        )

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(find_last_checkpoint(Path(cfg.paths.log_dir), cfg.task_name, out_dir))
        log.info("resuming from %s", ckpt_path)

    start = time.perf_counter()
    if cfg.get("train", True):
        # weights_only: a checkpoint is tensors and plain values; never run pickled code from one.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    train_batches = trainer.num_training_batches  # per process: DDP shards the training split
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None

    metrics: dict[str, Any] = {
        "task_name": cfg.task_name,
        "precision": str(trainer_cfg["precision"]),
        "epochs": trainer.current_epoch,
        "best_checkpoint": best,
        "train_wall_time_s": round(time.perf_counter() - start, 2),
        "train_images_per_s": round(throughput.images_per_s, 2),
        "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "history": history.epochs,
        "world_size": trainer.world_size,
        "train_batches_per_epoch": train_batches if math.isfinite(train_batches) else None,
    }
    if cfg.get("test", True) and hasattr(model, "test_step"):
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best)
        metrics["test"] = results[0] if results else {}
    if cfg.get("export", True) and isinstance(model, CNNClassifier) and trainer.is_global_zero:
        from fakeface.export import export_classifier

        source = type(model).load_from_checkpoint(best, map_location="cpu") if best else model
        metrics["exported"] = str(
            export_classifier(source, out_dir / "classifier.ts", source=best or "in-memory")
        )
    metrics["skipped_images"] = gather_skipped(trainer, getattr(datamodule, "skipped_images", []))
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        if getattr(datamodule, "hparams", {}).get("layout") == "folder":
            datamodule.folder_split().to_csv(out_dir / "split.csv", index=False)  # reusable
        if history.epochs:
            save_curves(history.epochs, out_dir / "curves.png")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("run directory: %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Noise, not news: the sanity check's two batches hold one class (splits are listed class by
    # class), and Lightning 2.6 trips over its own deprecation of torch's LeafSpec.
    warnings.filterwarnings("ignore", message="No (negative|positive) samples in targets")
    warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
    with one_line_errors():
        try:
            metrics = train(cfg)
        except SIGTERMException:
            # Lightning exits 0 on SIGTERM; schedulers and shells expect 128 + 15 for "terminated".
            raise SystemExit(143) from None
    # Sweepers (Optuna) maximise this value; plain runs ignore it.
    key = cfg.get("optimized_metric")
    value = metrics.get("val", {}).get(key) if key else None
    return value


if __name__ == "__main__":
    main()
