"""Training entry point: python -m fakeface.train experiment=cnn data=synthetic

Composes the config, builds data, model, callbacks, loggers and trainer from it, fits, tests the
best checkpoint, exports a classifier, and writes metrics.json + curves.png into the run directory.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.errors import ConfigError
from fakeface.evaluation.metrics import calibrate
from fakeface.evaluation.plots import plot_curves
from fakeface.models.callbacks import AtomicCheckpointIO, History, Throughput
from fakeface.models.classifier import CNNClassifier
from fakeface.precision import resolve_precision

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, export it, and write metrics.json + curves.png."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    # Plain lists/dicts, not DictConfig: hyperparameters travel into checkpoints, and torch.load's
    # weights_only=True (the safe default) refuses OmegaConf objects.
    datamodule: L.LightningDataModule = instantiate(cfg.data, _convert_="all")
    model: L.LightningModule = instantiate(cfg.model, _convert_="all")
    # A group entry set to null (callbacks.progress_bar=null, logger=null) is switched off.
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if not loggers:  # logger=null: nothing for the learning-rate monitor to write to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    log.info("precision: %s", precision)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        precision=precision,
        callbacks=callbacks,
        logger=loggers or False,
        # progress_bar=null means no bar: Lightning would otherwise add its default Rich bar
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        plugins=[AtomicCheckpointIO()],  # a kill while saving leaves the previous file loadable
    )
    check_ddp_sweep(trainer)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    start = time.perf_counter()
    if cfg.train:
        # weights_only: a checkpoint is tensors and plain values; never run pickled code from one.
        ckpt_path = resume_path(cfg)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = fit_metrics(cfg, trainer, time.perf_counter() - start)
    best = metrics["best_checkpoint"]
    if cfg.test and is_overridden("test_step", model):
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best)
        metrics["test"] = results[0] if results else {}
    out_dir = Path(cfg.paths.output_dir)
    if cfg.export and isinstance(model, CNNClassifier) and trainer.is_global_zero:
        metrics |= export_run(cfg, model, best, datamodule, trainer)
    metrics["skipped_images"] = gather_skipped(trainer, getattr(datamodule, "skipped_images", []))
    if trainer.is_global_zero:
        write_run_files(out_dir, metrics, datamodule)
    return metrics


def fit_calibration(
    module: CNNClassifier, datamodule: L.LightningDataModule, trainer: L.Trainer
) -> dict[str, Any]:
    """Fit the exported file's temperature on the validation split; NLL and ECE before/after.

    Runs the network in fp32 on the training device over the whole validation split (with
    data.device_resident under DDP, over this rank's shard: an unbiased sample of it).
    """
    datamodule.setup("validate")
    device = trainer.strategy.root_device
    net = copy.deepcopy(module.net).to(device, torch.float32).eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in datamodule.val_dataloader():
            x, y = datamodule.on_before_batch_transfer(batch, 0)
            logits.append(net(x.to(device)).float().cpu())
            labels.append(y.cpu())
    calibration = {"split": datamodule.hparams.val_split} | calibrate(
        torch.cat(logits), torch.cat(labels)
    )
    log.info(
        "calibration on %(images)d validation images: temperature %(fitted_temperature).3f "
        "(NLL %(nll_before).4f -> %(nll_after).4f, ECE %(ece_before).4f -> %(ece_after).4f); "
        "the file divides by %(temperature).3f",
        calibration,
    )
    return calibration


def export_run(
    cfg: DictConfig,
    model: CNNClassifier,
    best: str | None,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer,
) -> dict[str, Any]:
    """Calibrate the best checkpoint and export it in each of `export_format`'s formats."""
    from fakeface.deploy.export import describe_training_data
    from fakeface.deploy.formats import export_formats, parse_formats

    out_dir = Path(cfg.paths.output_dir)
    source = type(model).load_from_checkpoint(best, map_location="cpu") if best else model
    calibration = fit_calibration(source, datamodule, trainer) if cfg.calibrate else {}
    formats = parse_formats(cfg.export_format, key="export_format")
    paths = export_formats(
        source,
        out_dir,
        formats,
        calib=int8_calibration(datamodule, out_dir) if "int8" in formats else None,
        source=best or "in-memory",
        temperature=calibration.get("temperature", 1.0),
        calibration=calibration,
        trained_on=describe_training_data(dict(datamodule.hparams)),
    )
    return {
        "exported": str(paths[formats[0]]),  # the first format named
        "exported_files": {name: str(path) for name, path in paths.items()},
        "calibration": calibration,
    }


def int8_calibration(datamodule: L.LightningDataModule, out_dir: Path) -> Path:
    """int8's calibration images: this run's validation split (data=folder: its split.csv,
    written now so that the export can read it; else the validation folder)."""
    hp = datamodule.hparams
    if hp.layout == "folder":
        out_dir.mkdir(parents=True, exist_ok=True)
        datamodule.folder_split().to_csv(out_dir / "split.csv", index=False)
        return out_dir / "split.csv"
    return datamodule.root / hp.val_split


def resume_path(cfg: DictConfig) -> str | None:
    """ckpt_path as given, with `last` mapped to the newest last.ckpt of an earlier run."""
    if cfg.get("ckpt_path") != "last":
        return cfg.get("ckpt_path")
    path = str(
        find_last_checkpoint(Path(cfg.paths.log_dir), cfg.task_name, Path(cfg.paths.output_dir))
    )
    log.info("resuming from %s", path)
    return path


def fit_metrics(cfg: DictConfig, trainer: L.Trainer, seconds: float) -> dict[str, Any]:
    """What the fit did, for metrics.json (and the value a sweeper optimises)."""
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
    checkpoint = trainer.checkpoint_callback  # the first ModelCheckpoint: ranks by val/loss
    batches = trainer.num_training_batches  # per process: DDP shards the training split
    return {
        "task_name": cfg.task_name,
        "precision": str(trainer.precision),
        "epochs": trainer.current_epoch,
        "best_checkpoint": (checkpoint.best_model_path or None) if checkpoint else None,
        "train_wall_time_s": round(seconds, 2),
        "train_images_per_s": round(throughput.images_per_s, 2) if throughput else None,
        "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "history": history.epochs if history else [],
        "world_size": trainer.world_size,
        "train_batches_per_epoch": batches if math.isfinite(batches) else None,
    }


def write_run_files(
    out_dir: Path, metrics: dict[str, Any], datamodule: L.LightningDataModule
) -> None:
    """metrics.json, curves.png and (data=folder) the reusable split.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if getattr(datamodule, "hparams", {}).get("layout") == "folder":
        datamodule.folder_split().to_csv(out_dir / "split.csv", index=False)
    if metrics["history"]:
        plot_curves(metrics["history"], out_dir / "curves.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("run directory: %s", out_dir)


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
    check_step_settings(cfg)
    check_export_format(cfg)


def check_export_format(cfg: DictConfig) -> None:
    """A wrong export_format, or ONNX without its packages, stops before the fit, not after it."""
    from fakeface.deploy.formats import parse_formats

    formats = parse_formats(cfg.get("export_format", "ts"), key="export_format")
    if cfg.export and not formats:
        raise ConfigError("export_format=[]: name one of ts, onnx, int8, or set export=false")
    if cfg.export and {"onnx", "int8"} & set(formats):
        from fakeface.deploy.onnxfile import need_writer

        need_writer()


def check_step_settings(cfg: DictConfig) -> None:
    """model.step_batch_size must divide data.batch_size (else the steps would not be those of
    data.batch_size=step_batch_size) and runs without Lightning's automatic clipping and
    accumulation, which manual optimization does not have. model.compile=cuda-graphs runs
    without accumulation: each replay rewrites the gradient buffers the last one filled."""
    step = OmegaConf.select(cfg, "model.step_batch_size")
    batch = OmegaConf.select(cfg, "data.batch_size")
    if isinstance(step, int) and step > 0 and isinstance(batch, int) and batch % step:
        raise ConfigError(
            f"model.step_batch_size={step} does not divide data.batch_size={batch}: use a "
            f"multiple, e.g. data.batch_size={8 * step} model.step_batch_size={step}"
        )
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val") or 0
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1

    def refuse(key: str, value: object, setting: str, instead: str) -> None:
        raise ConfigError(
            f"{key}={value} cannot run with {setting}: remove {key}, or set {instead}"
        )

    if step is not None:
        manual = f"model.step_batch_size={step} (manual optimization)"
        if clip > 0:
            refuse("trainer.gradient_clip_val", clip, manual, "model.step_batch_size=null")
        if accumulate != 1:
            refuse(
                "trainer.accumulate_grad_batches", accumulate, manual, "model.step_batch_size=null"
            )
    if accumulate != 1 and OmegaConf.select(cfg, "model.compile") == "cuda-graphs":
        graphs = "model.compile=cuda-graphs (each replay rewrites the last step's gradients)"
        refuse(
            "trainer.accumulate_grad_batches", accumulate, graphs, "model.compile=reduce-overhead"
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


@hydra_main("train")
def main(cfg: DictConfig) -> float | None:
    """CLI: train; returns `optimized_metric` for sweepers (Optuna maximises it)."""
    # Noise, not news: the sanity check's two batches hold one class (splits are listed class by
    # class), and Lightning 2.6 trips over its own deprecation of torch's LeafSpec.
    warnings.filterwarnings("ignore", message="No (negative|positive) samples in targets")
    warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
    try:
        metrics = train(cfg)
    except SIGTERMException:
        # Lightning exits 0 on SIGTERM; schedulers and shells expect 128 + 15 for "terminated".
        raise SystemExit(143) from None
    key = cfg.get("optimized_metric")
    return metrics["val"].get(key) if key else None


if __name__ == "__main__":
    main()
