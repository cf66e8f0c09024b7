"""Evaluate an exported classifier on a labelled split: metrics, plots and a report.

    python -m fakeface.evaluate classifier=<classifier.ts> data.root=<140k root> [split=test]
        [threshold=0.5|auto] [tta=true] [robustness=true]
    python -m fakeface.evaluate classifier=<run>/classifier.ts data=folder data.root=<folder>

Writes report.md, report.json, predictions.csv, roc.png, reliability.png, confusion.png (and
robustness.png) into the run directory. The positive class is `fake`: ROC-AUC and average
precision rank images by p_fake, and an image is called fake when p_fake >= threshold.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fakeface.cli import hydra_main
from fakeface.data.index import folder_list, sources
from fakeface.deploy.inference import CLEAN, score_files
from fakeface.deploy.modelfile import load_classifier, precision_dtype
from fakeface.errors import ConfigError
from fakeface.evaluation.metrics import (
    HEADLINE,
    POSITIVE,
    auto_threshold,
    binary_metrics,
    uncalibrated,
)
from fakeface.evaluation.perturb import Perturbation, perturbation
from fakeface.evaluation.plots import (
    confusion_figure,
    plot_reliability,
    plot_robustness,
    plot_roc,
    save,
)
from fakeface.evaluation.report import print_summary, render_markdown

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> float | str:
    """Raise ConfigError naming the key for unusable values; return the threshold (float | auto)."""
    if not cfg.classifier:
        raise ConfigError(
            "give the classifier: python -m fakeface.evaluate classifier=<classifier.ts> data.root=..."
        )
    threshold = cfg.threshold
    if threshold != "auto" and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        raise ConfigError(f"threshold={threshold!r}: use a probability in [0, 1] or threshold=auto")
    for key, smallest in (("batch_size", 1), ("ece_bins", 1), ("data.num_workers", 0)):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ConfigError(f"{key}={value!r}: must be a whole number >= {smallest}")
    if cfg.robustness:
        for name in cfg.perturbations:
            try:
                perturbation(str(name))
            except ValueError as err:
                raise ConfigError(f"perturbations: {err}") from None
    return threshold if threshold == "auto" else float(threshold)


def data_config(cfg: DictConfig) -> dict[str, Any]:
    """The data settings, with `split_file` set to the training run's split.csv where it applies.

    With data=folder and no data.split_file, a split.csv beside the classifier (what a training
    run writes next to its classifier.ts) is the split the model was trained with. It is reused
    only when it indexes the folder asked for (data.root, or no data.root given; a run with
    several folders or a data.val_root lists each), and then only that folder's rows are scored,
    so that another folder is never silently replaced by the training run's own images
    (`run_split=false` re-splits always). data.root then names the folder(s) scored.
    """
    data = OmegaConf.to_container(cfg.data, resolve=True)
    root = data.get("root")
    if data.get("layout") == "folder" and not data.get("split_file") and cfg.run_split:
        beside = Path(cfg.classifier).expanduser().parent / "split.csv"
        asked = {_resolved(r) for r in folder_list(root)}
        if beside.is_file() and (not asked or asked <= set(_split_sources(beside))):
            log.info("data=folder: using the training run's split %s", beside)
            data["split_file"] = str(beside)
    if data.get("split_file"):
        split_file = Path(data["split_file"]).expanduser()
        if not split_file.is_file():
            raise ConfigError(f"data.split_file={split_file}: no such file")
        if root is None:
            folders = _split_sources(split_file)
            data["root"] = folders[0] if len(folders) == 1 else folders or None
    return data


def _resolved(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _split_sources(split_file: Path) -> list[str]:
    """The folders a split file's images come from, in order of first appearance."""
    return list(dict.fromkeys(sources(pd.read_csv(split_file))))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score `cfg.split`, choose the threshold, compute the metrics, write the report files."""
    from hydra.utils import instantiate

    threshold = check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    model, info = load_classifier(cfg.classifier, cfg.device)
    if POSITIVE not in info.class_names or len(info.class_names) != 2:
        raise ConfigError(
            f"{cfg.classifier} predicts {list(info.class_names)}; evaluate needs ['fake', <other>]"
        )
    names = (POSITIVE, next(c for c in info.class_names if c != POSITIVE))
    column = info.class_names.index(POSITIVE)
    dtype = precision_dtype(cfg.precision, cfg.device)
    data = data_config(cfg)
    datamodule = instantiate(data, _convert_="all")
    datamodule.prepare_data()  # data=synthetic: generate on first use
    frame = datamodule.index(cfg.split)
    unknown = sorted(set(frame["class_name"]) - set(names))
    if unknown:
        raise ConfigError(
            f"split {cfg.split!r} has class folders {unknown} the model does not know ({list(names)})"
        )
    scoring = {
        "batch_size": cfg.batch_size, "tta": cfg.tta, "dtype": dtype,
        "num_workers": cfg.data.num_workers,
    }  # fmt: skip

    threshold_info: dict[str, Any] = {"mode": "fixed", "value": threshold}
    if threshold == "auto":
        val_split = datamodule.hparams.val_split
        if val_split == cfg.split:
            log.warning("threshold=auto tuned on split %r, the split being evaluated", val_split)
        val = datamodule.index(val_split)
        val_scores = score_files(
            model, info, val["image_path"], progress=f"{val_split} (threshold)", **scoring
        )
        ok = val_scores.readable()
        threshold, val_balanced = auto_threshold(
            val_scores.probs[CLEAN][ok, column], (val["class_name"] == POSITIVE).to_numpy()[ok]
        )
        threshold_info = {
            "mode": "auto", "value": threshold, "val_split": val_split,
            "val_images": int(ok.sum()), "val_balanced_accuracy": val_balanced,
        }  # fmt: skip

    variants: dict[str, Perturbation | None] = {CLEAN: None}
    if cfg.robustness:
        variants |= {str(name): perturbation(str(name)) for name in cfg.perturbations}
    start = time.perf_counter()
    scored = score_files(
        model, info, frame["image_path"], variants=variants, progress=cfg.split, **scoring
    )
    scores = {name: probs[:, column] for name, probs in scored.probs.items()}
    errors = scored.errors
    seconds = time.perf_counter() - start
    is_fake = (frame["class_name"] == POSITIVE).to_numpy()
    ok = ~np.isnan(scores[CLEAN])
    if not ok.any():
        raise ConfigError(f"none of the {len(frame)} images of split {cfg.split!r} is readable")
    results = {
        name: binary_metrics(p[ok], is_fake[ok], threshold, n_bins=cfg.ece_bins, names=names)
        for name, p in scores.items()
    }
    metrics = results[CLEAN]
    # The file's own probabilities are calibrated (divided by its temperature); say what the
    # network's raw ones would have scored, so the report shows ECE before and after.
    raw = uncalibrated(scores[CLEAN][ok], info.temperature)
    calibration = {
        "temperature": info.temperature,
        "fitted_on": info.calibration,
        "ece_uncalibrated": binary_metrics(raw, is_fake[ok], threshold, n_bins=cfg.ece_bins)["ece"],
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = frame[["image_path", "class_name"]].copy()
    predictions["p_fake"] = scores[CLEAN]
    called_fake = scores[CLEAN].astype(np.float64) >= threshold  # as binary_metrics compares
    predictions["predicted"] = np.where(called_fake, names[0], names[1])
    predictions.loc[~ok, "predicted"] = ""
    for name in variants:
        if name != CLEAN:
            predictions[f"p_fake_{name}"] = scores[name]
    predictions["error"] = [errors.get(i, "") for i in range(len(frame))]
    predictions.to_csv(out_dir / "predictions.csv", index=False)

    p_ok, fake_ok = scores[CLEAN][ok], is_fake[ok]
    plot_roc(p_ok, fake_ok, metrics, out_dir / "roc.png")
    plot_reliability(p_ok, fake_ok, metrics, cfg.ece_bins, out_dir / "reliability.png")
    title = f"{cfg.split}: threshold {metrics['threshold']:.3g}"
    save(confusion_figure(metrics["confusion_matrix"], names, title), out_dir / "confusion.png")
    robustness = [
        {"perturbation": name, **{k: r[k] for k in HEADLINE}} for name, r in results.items()
    ]
    if cfg.robustness:
        plot_robustness(robustness, out_dir / "robustness.png")

    report = {
        "model": {
            "path": str(cfg.classifier), "arch": info.arch, "image_size": info.image_size,
            "class_names": list(info.class_names), "source": info.source,
        },
        "data": {
            "root": data["root"], "layout": data.get("layout", "splits"), "split": cfg.split,
            "split_file": data.get("split_file"), "images": len(frame),
        },
        "threshold": threshold_info,
        "tta": bool(cfg.tta),
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "fp32",
        "ece_bins": cfg.ece_bins,
        "images_per_s": len(frame) / seconds if seconds else math.nan,
        "metrics": metrics,
        "calibration": calibration,
        "robustness": robustness if cfg.robustness else [],
        "robustness_metrics": {k: v for k, v in results.items() if k != CLEAN},
        "unreadable": [{"path": frame["image_path"][i], "reason": e} for i, e in sorted(errors.items())],
    }  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.md").write_text(render_markdown(report))
    print_summary(report, out_dir)
    return report


@hydra_main("evaluate")
def main(cfg: DictConfig) -> float:
    """CLI: evaluate, write the report into the run directory."""
    report = evaluate(cfg)
    return report["metrics"]["accuracy"]  # what a Hydra sweeper would read


if __name__ == "__main__":
    main()
