"""Training entry point: python -m fakeface.train experiment=cnn data=synthetic"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

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
    """Accuracy and loss, train vs val, per epoch (the original's two plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] + 1 for row in history]
    for ax, name in zip(axes, ("acc", "loss"), strict=True):
        for stage in ("train", "val"):
            values = [row.get(f"{stage}/{name}", math.nan) for row in history]
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, export it, and write metrics.json + curves.png."""
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
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
        trainer_cfg, callbacks=[*callbacks, throughput, history], logger=loggers or False
    )
    for lg in loggers:
        lg.log_hyperparams({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"})

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(find_last_checkpoint(Path(cfg.paths.log_dir), cfg.task_name, out_dir))
        log.info("resuming from %s", ckpt_path)

    start = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
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
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        if history.epochs:
            save_curves(history.epochs, out_dir / "curves.png")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("run directory: %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Sweepers (Optuna) maximise this value; plain runs ignore it.
    key = cfg.get("optimized_metric")
    value = metrics.get("val", {}).get(key) if key else None
    return value


if __name__ == "__main__":
    main()
